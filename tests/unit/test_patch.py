"""The lab API server's PATCH semantics: RFC 7386, RFC 6902 and Kubernetes strategic merge."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.apiserver.patch import (
    MERGE,
    PATCH_STRATEGIES,
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def pod(spec: dict | None = None, **metadata) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x", "namespace": "default", **metadata},
        "spec": spec if spec is not None else {"containers": [{"name": "web", "image": "nginx"}]},
    }


def deployment(pod_spec: dict, **spec) -> dict:
    template = {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template, **spec},
    }


def containers(*names: str, **fields) -> list[dict]:
    return [{"name": name, "image": f"{name}:1", **fields} for name in names]


def directive_keys(value: object) -> list[str]:
    """Every object key starting with "$", anywhere in value."""
    if isinstance(value, dict):
        own = [k for k in value if k.startswith("$")]
        return own + [k for v in value.values() for k in directive_keys(v)]
    if isinstance(value, list):
        return [k for v in value for k in directive_keys(v)]
    return []


# --- RFC 7386 merge patch -------------------------------------------------------------------

# RFC 7386 appendix A (the cases whose target and patch are both objects), then a few more.
MERGE_CASES = [
    pytest.param({"a": "b"}, {"a": "c"}, {"a": "c"}, id="rfc-replace-value"),
    pytest.param({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}, id="rfc-add-key"),
    pytest.param({"a": "b"}, {"a": None}, {}, id="rfc-null-deletes"),
    pytest.param({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}, id="rfc-null-deletes-one"),
    pytest.param({"a": ["b"]}, {"a": "c"}, {"a": "c"}, id="rfc-list-to-string"),
    pytest.param({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}, id="rfc-string-to-list"),
    pytest.param(
        {"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}, id="rfc-nested"
    ),
    pytest.param({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}, id="rfc-lists-replace"),
    pytest.param({"e": None}, {"a": 1}, {"e": None, "a": 1}, id="rfc-target-null-kept"),
    pytest.param({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}, id="rfc-new-nested-null"),
    pytest.param(
        pod(),
        {"metadata": {"labels": {"a": "b"}}},
        pod(labels={"a": "b"}),
        id="kubectl-label-as-merge-patch",
    ),
    pytest.param(
        pod(spec={"containers": containers("a", "b")}),
        {"spec": {"containers": containers("c")}},
        pod(spec={"containers": containers("c")}),
        id="lists-never-merge",
    ),
    pytest.param({"a": {"b": 1}}, {"a": 5}, {"a": 5}, id="object-to-scalar"),
    pytest.param({"a": 1}, {}, {"a": 1}, id="empty-patch"),
]


@pytest.mark.parametrize(("target", "patch", "expected"), MERGE_CASES)
def test_merge_patch(target, patch, expected):
    before = copy.deepcopy((target, patch))
    assert merge_patch(target, patch) == expected
    assert (target, patch) == before


@pytest.mark.parametrize(
    ("target", "patch", "message"),
    [
        pytest.param({"a": 1}, ["c"], "merge patch must be a JSON object", id="list-patch"),
        pytest.param({"a": 1}, None, "not null", id="null-patch"),
        pytest.param([1], {"a": 1}, "object to patch", id="list-target"),
    ],
)
def test_merge_patch_rejects_non_objects(target, patch, message):
    with pytest.raises(PatchError, match=message):
        merge_patch(target, patch)


def test_merge_patch_result_shares_nothing_with_inputs():
    target, patch = {"keep": {"deep": [1]}}, {"new": {"list": [2]}}
    result = merge_patch(target, patch)
    result["keep"]["deep"].append(9)
    result["new"]["list"].append(9)
    assert target == {"keep": {"deep": [1]}}
    assert patch == {"new": {"list": [2]}}


# --- RFC 6902 JSON patch --------------------------------------------------------------------

JSON_PATCH_CASES = [
    pytest.param(
        {"metadata": {"labels": {"a": "b"}}},
        [{"op": "add", "path": "/metadata/labels/c", "value": "d"}],
        {"metadata": {"labels": {"a": "b", "c": "d"}}},
        id="add",
    ),
    pytest.param(
        {"metadata": {"labels": {"a": "b"}}},
        [{"op": "remove", "path": "/metadata/labels/a"}],
        {"metadata": {"labels": {}}},
        id="remove",
    ),
    pytest.param(
        {"spec": {"replicas": 1}},
        [
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
        ],
        {"spec": {"replicas": 3}},
        id="test-then-replace",
    ),
    pytest.param(
        {"spec": {"containers": [{"name": "a"}]}},
        [{"op": "add", "path": "/spec/containers/-", "value": {"name": "b"}}],
        {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}},
        id="append-to-list",
    ),
    pytest.param(
        {"metadata": {"labels": {"a/b": "x"}}},
        [{"op": "move", "from": "/metadata/labels/a~1b", "path": "/metadata/labels/c"}],
        {"metadata": {"labels": {"c": "x"}}},
        id="move-escaped-key",
    ),
    pytest.param(
        {"a": {"b": 1}},
        [{"op": "copy", "from": "/a", "path": "/c"}],
        {"a": {"b": 1}, "c": {"b": 1}},
        id="copy",
    ),
    pytest.param({"a": 1}, [], {"a": 1}, id="no-operations"),
]


@pytest.mark.parametrize(("target", "operations", "expected"), JSON_PATCH_CASES)
def test_json_patch(target, operations, expected):
    before = copy.deepcopy((target, operations))
    assert json_patch(target, operations) == expected
    assert (target, operations) == before


@pytest.mark.parametrize(
    ("operations", "message"),
    [
        pytest.param(
            [{"op": "test", "path": "/a", "value": 2}], "test operation failed", id="test-fails"
        ),
        pytest.param([{"op": "bogus", "path": "/a"}], "Unknown operation", id="unknown-op"),
        pytest.param([{"op": "add", "path": "/b"}], "'value'", id="add-without-value"),
        pytest.param([{"op": "remove", "path": "/zz"}], "non-existent", id="remove-missing"),
        pytest.param([{"op": "add", "path": "b", "value": 1}], "start with /", id="bad-pointer"),
        pytest.param([{"path": "/a"}], "'op'", id="no-op"),
        pytest.param(["add"], "must be an object", id="operation-not-object"),
        pytest.param({"op": "add"}, "array of operations", id="not-a-list"),
        pytest.param(
            [{"op": "replace", "path": "", "value": 5}], "into a number", id="root-not-object"
        ),
    ],
)
def test_json_patch_errors(operations, message):
    with pytest.raises(PatchError, match=message):
        json_patch({"a": 1}, operations)


def test_json_patch_result_shares_nothing_with_operations():
    operations = [{"op": "add", "path": "/b", "value": {"list": [1]}}]
    result = json_patch({}, operations)
    result["b"]["list"].append(2)
    assert operations[0]["value"] == {"list": [1]}


# --- strategic merge patch ------------------------------------------------------------------

APPLY_ORIGINAL_PORTS = [{"containerPort": 80, "protocol": "TCP"}]

STRATEGIC_CASES = [
    # kubectl label / annotate
    pytest.param(
        "Pod",
        pod(labels={"app": "web"}),
        {"metadata": {"labels": {"a": "b"}}},
        pod(labels={"app": "web", "a": "b"}),
        id="kubectl-label-a=b",
    ),
    pytest.param(
        "Pod",
        pod(),
        {"metadata": {"labels": {"a": "b"}}},
        pod(labels={"a": "b"}),
        id="kubectl-label-first-label",
    ),
    pytest.param(
        "Pod",
        pod(labels={"app": "web", "a": "b"}),
        {"metadata": {"labels": {"a": None}}},
        pod(labels={"app": "web"}),
        id="kubectl-label-a-",
    ),
    pytest.param(
        "Pod",
        pod(labels={"app": "web"}),
        {"metadata": {"labels": {"a": None}}},
        pod(labels={"app": "web"}),
        id="kubectl-label-a-absent",
    ),
    pytest.param(
        "Pod",
        pod(annotations={"note": "old"}),
        {"metadata": {"annotations": {"note": "new", "owner": "me"}}},
        pod(annotations={"note": "new", "owner": "me"}),
        id="kubectl-annotate-overwrite",
    ),
    # kubectl apply: image changes and a port is added (the three-way patch kubectl sends)
    pytest.param(
        "Pod",
        pod(
            spec={
                "containers": [
                    {"name": "web", "image": "nginx:1.25", "ports": APPLY_ORIGINAL_PORTS}
                ],
                "restartPolicy": "Always",
            }
        ),
        {
            "metadata": {"annotations": {LAST_APPLIED: "{...}"}},
            "spec": {
                "$setElementOrder/containers": [{"name": "web"}],
                "containers": [
                    {
                        "$setElementOrder/ports": [{"containerPort": 80}, {"containerPort": 443}],
                        "image": "nginx:1.26",
                        "name": "web",
                        "ports": [{"containerPort": 443}],
                    }
                ],
            },
        },
        pod(
            spec={
                "containers": [
                    {
                        "name": "web",
                        "image": "nginx:1.26",
                        "ports": [*APPLY_ORIGINAL_PORTS, {"containerPort": 443}],
                    }
                ],
                "restartPolicy": "Always",
            },
            annotations={LAST_APPLIED: "{...}"},
        ),
        id="kubectl-apply-image-and-port",
    ),
    pytest.param(
        "Deployment",
        deployment(
            {
                "containers": [
                    {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}
                ]
            }
        ),
        {
            "spec": {
                "template": {
                    "spec": {
                        "$setElementOrder/containers": [{"name": "web"}],
                        "containers": [
                            {
                                "$setElementOrder/ports": [
                                    {"containerPort": 80},
                                    {"containerPort": 443},
                                ],
                                "image": "nginx:1.26",
                                "name": "web",
                                "ports": [{"containerPort": 443}],
                            }
                        ],
                    }
                }
            }
        },
        deployment(
            {
                "containers": [
                    {
                        "name": "web",
                        "image": "nginx:1.26",
                        "ports": [{"containerPort": 80}, {"containerPort": 443}],
                    }
                ]
            }
        ),
        id="kubectl-apply-deployment-image-and-port",
    ),
    pytest.param(
        "Pod",
        pod(spec={"containers": containers("a", "b")}),
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "a"}],
                "containers": [{"$patch": "delete", "name": "b"}],
            }
        },
        pod(spec={"containers": containers("a")}),
        id="kubectl-apply-removes-container",
    ),
    pytest.param(
        "Pod",
        pod(spec={"containers": containers("a", "b")}),
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}],
                "containers": [{"name": "c", "image": "c:1"}],
            }
        },
        pod(spec={"containers": containers("c", "a", "b")}),
        id="set-element-order-places-new-item",
    ),
    pytest.param(
        "Pod",
        pod(spec={"containers": containers("a", "b")}),
        {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}},
        pod(spec={"containers": containers("b", "a")}),
        id="set-element-order-alone-reorders",
    ),
    pytest.param(
        "Pod",
        pod(spec={"containers": containers("b", "c", "sidecar")}),
        {"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "b"}]}},
        pod(spec={"containers": containers("c", "b", "sidecar")}),
        id="set-element-order-unmentioned-item-after",
    ),
    pytest.param(
        "Pod",
        pod(spec={"containers": containers("istio", "b", "c")}),
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "c"}],
                "containers": [{"name": "c", "image": "c:2"}],
            }
        },
        pod(spec={"containers": [*containers("istio", "b"), {"name": "c", "image": "c:2"}]}),
        id="set-element-order-unmentioned-item-keeps-stored-place",
    ),
    pytest.param(
        "Deployment",
        deployment({"containers": containers("patch-demo-ctr")}),
        {"spec": {"template": {"spec": {"containers": containers("patch-demo-ctr-2")}}}},
        deployment({"containers": containers("patch-demo-ctr-2", "patch-demo-ctr")}),
        id="kubectl-patch-doc-adds-container-first",
    ),
    pytest.param(
        "Deployment",
        deployment(
            {
                "containers": containers("web"),
                "tolerations": [{"effect": "NoSchedule", "key": "dedicated", "value": "a"}],
            }
        ),
        {
            "spec": {
                "template": {
                    "spec": {
                        "tolerations": [{"effect": "NoSchedule", "key": "disktype", "value": "b"}]
                    }
                }
            }
        },
        deployment(
            {
                "containers": containers("web"),
                "tolerations": [{"effect": "NoSchedule", "key": "disktype", "value": "b"}],
            }
        ),
        id="kubectl-patch-doc-tolerations-replaced",
    ),
    # keyed lists
    pytest.param(
        "Pod",
        pod(
            spec={
                "containers": containers(
                    "web", env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
                )
            }
        ),
        {"spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "3"}]}]}},
        pod(
            spec={
                "containers": containers(
                    "web", env=[{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]
                )
            }
        ),
        id="env-merges-by-name",
    ),
    pytest.param(
        "Pod",
        pod(
            spec={
                "containers": containers(
                    "web", env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
                )
            }
        ),
        {"spec": {"containers": [{"name": "web", "env": [{"name": "A", "$patch": "delete"}]}]}},
        pod(spec={"containers": containers("web", env=[{"name": "B", "value": "2"}])}),
        id="patch-delete-list-item",
    ),
    pytest.param(
        "Pod",
        pod(spec={"containers": containers("a", "b")}),
        {"spec": {"containers": [{"name": "c", "image": "c:9"}, {"$patch": "replace"}]}},
        pod(spec={"containers": [{"name": "c", "image": "c:9"}]}),
        id="patch-replace-keyed-list",
    ),
    pytest.param(
        "Pod",
        pod(
            spec={"containers": containers("web", volumeMounts=[{"mountPath": "/d", "name": "d"}])}
        ),
        {
            "spec": {
                "containers": [
                    {"name": "web", "volumeMounts": [{"mountPath": "/d", "readOnly": True}]}
                ]
            }
        },
        pod(
            spec={
                "containers": containers(
                    "web", volumeMounts=[{"mountPath": "/d", "name": "d", "readOnly": True}]
                )
            }
        ),
        id="volume-mounts-merge-by-mount-path",
    ),
    pytest.param(
        "Pod",
        pod(spec={"containers": containers("web"), "initContainers": containers("init")}),
        {"spec": {"initContainers": [{"name": "init", "image": "init:2"}]}},
        pod(
            spec={
                "containers": containers("web"),
                "initContainers": [{"name": "init", "image": "init:2"}],
            }
        ),
        id="init-containers-merge-by-name",
    ),
    pytest.param(
        "Pod",
        pod(
            spec={
                "containers": containers("web"),
                "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a"]}],
            }
        ),
        {"spec": {"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}]}},
        pod(
            spec={
                "containers": containers("web"),
                "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}],
            }
        ),
        id="host-aliases-merge-by-ip-hostnames-atomic",
    ),
    pytest.param(
        "Pod",
        pod(spec={"containers": containers("web", ports=[{"containerPort": 80}])}),
        {
            "spec": {
                "containers": [{"name": "web", "ports": [{"containerPort": 80.0, "name": "http"}]}]
            }
        },
        pod(spec={"containers": containers("web", ports=[{"containerPort": 80, "name": "http"}])}),
        id="merge-key-numbers-compare-by-value",
    ),
    pytest.param(
        "Pod",
        pod(spec={"containers": containers("web")}),
        {
            "spec": {
                "ephemeralContainers": [
                    {"name": "debugger", "image": "busybox", "$patch": "delete"},
                    {"name": "dbg", "image": "busybox"},
                ]
            }
        },
        pod(
            spec={
                "containers": containers("web"),
                "ephemeralContainers": [{"name": "dbg", "image": "busybox"}],
            }
        ),
        id="new-keyed-list-drops-directive-items",
    ),
    pytest.param(
        "Pod",
        pod(ownerReferences=[{"uid": "1", "name": "rs", "kind": "ReplicaSet"}]),
        {"metadata": {"ownerReferences": [{"uid": "1", "controller": True}]}},
        pod(ownerReferences=[{"uid": "1", "name": "rs", "kind": "ReplicaSet", "controller": True}]),
        id="owner-references-merge-by-uid",
    ),
    # primitive lists
    pytest.param(
        "Pod",
        pod(finalizers=["a", "b"]),
        {"metadata": {"finalizers": ["b", "c"]}},
        pod(finalizers=["a", "b", "c"]),
        id="finalizers-union",
    ),
    pytest.param(
        "Pod",
        pod(finalizers=["a", "b", "c"]),
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zz"]}},
        pod(finalizers=["a", "c"]),
        id="delete-from-primitive-list-finalizers",
    ),
    pytest.param(
        "Pod",
        pod(),
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}},
        pod(),
        id="delete-from-absent-primitive-list",
    ),
    pytest.param(
        "Pod",
        pod(finalizers=["a", "b"]),
        {
            "metadata": {
                "$setElementOrder/finalizers": ["c", "b"],
                "finalizers": ["c"],
                "$deleteFromPrimitiveList/finalizers": ["a"],
            }
        },
        pod(finalizers=["c", "b"]),
        id="kubectl-apply-finalizers-a-b-to-c-b",
    ),
    pytest.param(
        "Node",
        {"kind": "Node", "spec": {"podCIDRs": ["10.0.0.0/24"]}},
        {"spec": {"podCIDRs": ["fd00::/64"]}},
        # Upstream puts patch values the original lacks ahead of the original's values.
        {"kind": "Node", "spec": {"podCIDRs": ["fd00::/64", "10.0.0.0/24"]}},
        id="node-pod-cidrs-union",
    ),
    # status lists
    pytest.param(
        "Pod",
        pod()
        | {
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "False"},
                    {"type": "PodScheduled", "status": "True"},
                ]
            }
        },
        {
            "status": {
                "$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Ready"}],
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
        pod()
        | {
            "status": {
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True"},
                ]
            }
        },
        id="kubelet-status-conditions-by-type",
    ),
    pytest.param(
        "Pod",
        pod() | {"status": {"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}]}},
        {
            "status": {
                "$setElementOrder/podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
                "podIPs": [{"ip": "fd00::5"}],
            }
        },
        pod()
        | {"status": {"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]}},
        id="pod-ips-merge-by-ip",
    ),
    pytest.param(
        "Pod",
        pod()
        | {
            "status": {
                "containerStatuses": [{"name": "a", "ready": False}, {"name": "b", "ready": False}]
            }
        },
        {"status": {"containerStatuses": [{"name": "a", "ready": True}]}},
        pod() | {"status": {"containerStatuses": [{"name": "a", "ready": True}]}},
        id="container-statuses-atomic",
    ),
    pytest.param(
        "Deployment",
        deployment({"containers": containers("web")})
        | {"status": {"conditions": [{"type": "Available", "status": "False"}]}},
        {"status": {"conditions": [{"type": "Available", "status": "True"}]}},
        deployment({"containers": containers("web")})
        | {"status": {"conditions": [{"type": "Available", "status": "True"}]}},
        id="deployment-conditions-by-type",
    ),
    pytest.param(
        "Node",
        {
            "kind": "Node",
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "10.0.0.1"},
                    {"type": "Hostname", "address": "n1"},
                ]
            },
        },
        {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}},
        {
            "kind": "Node",
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "10.0.0.2"},
                    {"type": "Hostname", "address": "n1"},
                ]
            },
        },
        id="node-addresses-by-type",
    ),
    pytest.param(
        "Node",
        {
            "kind": "Node",
            "spec": {
                "taints": [
                    {"key": "a", "effect": "NoSchedule"},
                    {"key": "b", "effect": "NoSchedule"},
                ]
            },
        },
        {"spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]}},
        {"kind": "Node", "spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]}},
        id="node-taints-atomic-so-kubectl-taint-can-remove",
    ),
    # NetworkPolicy lists are atomic
    pytest.param(
        "NetworkPolicy",
        {
            "kind": "NetworkPolicy",
            "spec": {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "a"}}}],
                        "ports": [{"port": 80}],
                    },
                    {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
                ],
            },
        },
        {"spec": {"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]}},
        {
            "kind": "NetworkPolicy",
            "spec": {
                "podSelector": {},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}],
            },
        },
        id="networkpolicy-ingress-replaced-wholesale",
    ),
    pytest.param(
        "NetworkPolicy",
        {
            "kind": "NetworkPolicy",
            "spec": {
                "policyTypes": ["Ingress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
            },
        },
        {
            "spec": {
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}],
            }
        },
        {
            "kind": "NetworkPolicy",
            "spec": {
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}],
            },
        },
        id="networkpolicy-policy-types-and-egress-replaced",
    ),
    # map directives
    pytest.param(
        "Deployment",
        deployment(
            {"containers": containers("web")},
            strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
        ),
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
        deployment({"containers": containers("web")}, strategy={"type": "Recreate"}),
        id="retain-keys-deployment-strategy",
    ),
    pytest.param(
        "Pod",
        pod(spec={"containers": containers("web"), "volumes": [{"name": "data", "emptyDir": {}}]}),
        {
            "spec": {
                "volumes": [
                    {
                        "name": "data",
                        "$retainKeys": ["hostPath", "name"],
                        "hostPath": {"path": "/x"},
                    }
                ]
            }
        },
        pod(
            spec={
                "containers": containers("web"),
                "volumes": [{"name": "data", "hostPath": {"path": "/x"}}],
            }
        ),
        id="retain-keys-volume-source",
    ),
    pytest.param(
        "Pod",
        pod(labels={"a": "1", "b": "2"}),
        {"metadata": {"labels": {"$patch": "replace", "c": "3", "d": None}}},
        pod(labels={"c": "3"}),
        id="patch-replace-map",
    ),
    pytest.param(
        "Pod",
        pod(annotations={"a": "1"}),
        {"metadata": {"annotations": {"$patch": "delete"}}},
        pod(),
        id="patch-delete-map",
    ),
    pytest.param(
        "Pod",
        pod(),
        {"spec": {"nodeSelector": {"$patch": "replace", "disk": "ssd"}}},
        pod(
            spec={
                "containers": [{"name": "web", "image": "nginx"}],
                "nodeSelector": {"disk": "ssd"},
            }
        ),
        id="patch-replace-on-absent-map",
    ),
    pytest.param("Pod", pod(), {"$patch": "delete"}, {}, id="patch-delete-whole-object"),
    # plain fields
    pytest.param(
        "Pod",
        pod(),
        {"spec": {"nodeSelector": {"disk": "ssd", "zone": None}}},
        pod(
            spec={
                "containers": [{"name": "web", "image": "nginx"}],
                "nodeSelector": {"disk": "ssd"},
            }
        ),
        id="new-map-drops-nulls",
    ),
    pytest.param(
        "Pod",
        pod(spec={"containers": containers("web"), "dnsConfig": "weird"}),
        {"spec": {"dnsConfig": {"options": [{"name": "ndots", "value": "2"}]}}},
        pod(
            spec={
                "containers": containers("web"),
                "dnsConfig": {"options": [{"name": "ndots", "value": "2"}]},
            }
        ),
        id="type-change-replaces",
    ),
    pytest.param(
        "Widget",
        {"kind": "Widget", "metadata": {"finalizers": ["a"]}, "spec": {"items": [{"name": "a"}]}},
        {"metadata": {"finalizers": ["b"]}, "spec": {"items": [{"name": "b"}]}},
        {
            "kind": "Widget",
            "metadata": {"finalizers": ["b", "a"]},
            "spec": {"items": [{"name": "b"}]},
        },
        id="unknown-kind-metadata-merges-rest-atomic",
    ),
    pytest.param("Pod", pod(), {}, pod(), id="empty-patch"),
]


@pytest.mark.parametrize(("kind", "original", "patch", "expected"), STRATEGIC_CASES)
def test_strategic_merge_patch(kind, original, patch, expected):
    before = copy.deepcopy((original, patch))
    result = strategic_merge_patch(original, patch, kind)
    assert result == expected
    assert directive_keys(result) == []
    assert (original, patch) == before


STRATEGIC_ERRORS = [
    pytest.param([{"a": 1}], "must be a JSON object", id="patch-not-object"),
    pytest.param("x", "must be a JSON object", id="patch-string"),
    pytest.param(
        {"spec": {"containers": [{"image": "x"}]}}, "no merge key 'name'", id="item-without-key"
    ),
    pytest.param({"spec": {"containers": ["web"]}}, "must be objects", id="item-not-object"),
    pytest.param(
        {"spec": {"containers": [{"$patch": "delete"}]}},
        "no merge key 'name'",
        id="delete-without-key",
    ),
    pytest.param(
        {"spec": {"containers": [{"name": "web", "$patch": "merge"}]}},
        "unknown \\$patch directive 'merge'",
        id="list-item-merge-directive",
    ),
    pytest.param(
        {"metadata": {"labels": {"$patch": "explode"}}},
        "unknown \\$patch directive 'explode'",
        id="map-unknown-directive",
    ),
    pytest.param(
        {"spec": {"$retainKeys": "type"}}, "array of field names", id="retain-keys-not-list"
    ),
    pytest.param(
        {"spec": {"$retainKeys": ["containers"], "nodeName": "n1"}},
        "'nodeName', which \\$retainKeys omits",
        id="retain-keys-omits-patched-field",
    ),
    pytest.param(
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b"}, {"name": "a"}],
            }
        },
        "does not follow \\$setElementOrder",
        id="set-element-order-mismatch",
    ),
    pytest.param(
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "a"}],
                "containers": [{"name": "b"}],
            }
        },
        "does not follow \\$setElementOrder",
        id="set-element-order-missing-item",
    ),
    pytest.param(
        {"spec": {"$setElementOrder/containers": {"name": "a"}}},
        "must be an array",
        id="set-element-order-not-list",
    ),
    pytest.param(
        {"spec": {"$setElementOrder/containers": [{"image": "a"}]}},
        "no merge key 'name'",
        id="set-element-order-entry-without-key",
    ),
    pytest.param(
        {"spec": {"$setElementOrder/": []}}, "names no field", id="set-element-order-no-field"
    ),
    pytest.param(
        {"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}},
        "must be an array",
        id="delete-from-primitive-list-not-list",
    ),
    pytest.param(
        {"metadata": {"finalizers": [{"a": 1}]}}, "expected a value", id="object-in-primitive-list"
    ),
    pytest.param({"spec": {"$foo": 1}}, "unknown patch directive '\\$foo'", id="unknown-directive"),
    pytest.param(
        {"spec": {"containers": [{"name": {"a": 1}}]}},
        "expected a value",
        id="merge-key-not-scalar",
    ),
]


@pytest.mark.parametrize(("patch", "message"), STRATEGIC_ERRORS)
def test_strategic_merge_patch_errors(patch, message):
    original = pod(spec={"containers": containers("a", "b")})
    before = copy.deepcopy(original)
    with pytest.raises(PatchError, match=message):
        strategic_merge_patch(original, patch, "Pod")
    assert original == before


def test_strategic_merge_patch_rejects_non_object_original():
    with pytest.raises(PatchError, match="object to patch"):
        strategic_merge_patch([], {}, "Pod")


def test_strategic_result_shares_nothing_with_inputs():
    original = pod(spec={"containers": containers("web")})
    patch = {"spec": {"containers": [{"name": "web", "args": ["a"]}], "volumes": [{"name": "v"}]}}
    result = strategic_merge_patch(original, patch, "Pod")
    result["spec"]["containers"][0]["args"].append("b")
    result["spec"]["volumes"].append({"name": "w"})
    result["metadata"]["name"] = "changed"
    assert patch["spec"]["containers"][0]["args"] == ["a"]
    assert patch["spec"]["volumes"] == [{"name": "v"}]
    assert original["metadata"]["name"] == "x"


# --- the merge-key table --------------------------------------------------------------------

REQUIRED_STRATEGIES = [
    ("Pod", "spec.containers", "name"),
    ("Pod", "spec.initContainers", "name"),
    ("Pod", "spec.ephemeralContainers", "name"),
    ("Pod", "spec.containers.ports", "containerPort"),
    ("Pod", "spec.initContainers.ports", "containerPort"),
    ("Pod", "spec.containers.env", "name"),
    ("Pod", "spec.initContainers.env", "name"),
    ("Pod", "spec.containers.volumeMounts", "mountPath"),
    ("Pod", "spec.volumes", "name"),
    ("Pod", "spec.imagePullSecrets", "name"),
    ("Pod", "spec.hostAliases", "ip"),
    ("Pod", "status.conditions", "type"),
    ("Pod", "status.podIPs", "ip"),
    ("Pod", "metadata.finalizers", MERGE),
    ("Pod", "metadata.ownerReferences", "uid"),
    ("Deployment", "spec.template.spec.containers", "name"),
    ("Deployment", "spec.template.spec.initContainers", "name"),
    ("Deployment", "spec.template.spec.containers.ports", "containerPort"),
    ("Deployment", "spec.template.spec.containers.env", "name"),
    ("Deployment", "spec.template.spec.containers.volumeMounts", "mountPath"),
    ("Deployment", "spec.template.spec.volumes", "name"),
    ("Deployment", "spec.template.spec.imagePullSecrets", "name"),
    ("Deployment", "spec.template.spec.hostAliases", "ip"),
    ("Deployment", "status.conditions", "type"),
    ("Node", "status.addresses", "type"),
    ("Node", "status.conditions", "type"),
    ("Node", "spec.podCIDRs", MERGE),
]
ATOMIC_UPSTREAM = [
    ("Pod", "status.containerStatuses"),
    ("Pod", "spec.tolerations"),
    ("Node", "spec.taints"),
    *[
        ("NetworkPolicy", f"spec.{path}")
        for path in (
            "ingress",
            "egress",
            "policyTypes",
            "ingress.from",
            "egress.to",
            "ingress.ports",
            "egress.ports",
        )
    ],
]


@pytest.mark.parametrize(("kind", "path", "strategy"), REQUIRED_STRATEGIES)
def test_patch_strategies_table(kind, path, strategy):
    assert PATCH_STRATEGIES[kind][tuple(path.split("."))] == strategy


@pytest.mark.parametrize(("kind", "path"), ATOMIC_UPSTREAM)
def test_atomic_lists_are_not_in_the_table(kind, path):
    assert tuple(path.split(".")) not in PATCH_STRATEGIES[kind]


@pytest.mark.parametrize("kind", sorted(PATCH_STRATEGIES))
def test_every_kind_merges_object_meta_lists(kind):
    assert PATCH_STRATEGIES[kind][("metadata", "finalizers")] == MERGE
    assert PATCH_STRATEGIES[kind][("metadata", "ownerReferences")] == "uid"


# --- properties -----------------------------------------------------------------------------

FIELDS = ["metadata", "spec", "status", "labels", "finalizers", "containers", "name", "ports"]
FIELDS += ["containerPort", "env", "value", "conditions", "type", "image", "ingress", "a", "b"]
DIRECTIVES = ["$patch", "$retainKeys", "$setElementOrder/containers", "$setElementOrder/ports"]
DIRECTIVES += ["$deleteFromPrimitiveList/finalizers", "$setElementOrder/finalizers"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["a", "b", "web", ""])
)
plain_keys = st.sampled_from(FIELDS) | st.text(max_size=3).filter(lambda k: not k.startswith("$"))


def json_values(keys: st.SearchStrategy[str]) -> st.SearchStrategy:
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=12,
    )


objects = st.dictionaries(plain_keys, json_values(plain_keys), max_size=4)
patch_keys = plain_keys | st.sampled_from(DIRECTIVES)
patch_values = st.recursive(
    scalars | st.sampled_from(["replace", "delete", "merge"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(patch_keys, inner, max_size=4),
    max_leaves=14,
)
patches = st.dictionaries(patch_keys, patch_values, max_size=4)
kinds = st.sampled_from(["Pod", "Deployment", "Node", "NetworkPolicy", "Widget"])


@given(objects)
def test_merge_patch_with_empty_patch_is_identity(target):
    assert merge_patch(target, {}) == target


@given(objects, objects)
def test_merge_patch_is_idempotent(target, patch):
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


@given(objects, kinds)
def test_strategic_empty_patch_is_identity(original, kind):
    assert strategic_merge_patch(original, {}, kind) == original


@settings(max_examples=300)
@given(objects, patches, kinds)
def test_strategic_never_stores_a_directive(original, patch, kind):
    before = copy.deepcopy((original, patch))
    try:
        result = strategic_merge_patch(original, patch, kind)
    except PatchError:
        pass  # a malformed patch is fine; any other exception is a bug
    else:
        assert directive_keys(result) == []
    assert (original, patch) == before


maps_only = st.recursive(
    scalars, lambda inner: st.dictionaries(plain_keys, inner, max_size=4), max_leaves=10
)


@given(objects, st.dictionaries(plain_keys, maps_only, max_size=4), kinds)
def test_strategic_equals_merge_patch_without_lists(original, patch, kind):
    # With no lists and no directives, a strategic merge patch is an RFC 7386 merge patch.
    assert strategic_merge_patch(original, patch, kind) == merge_patch(original, patch)
