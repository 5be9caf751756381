"""Server-side printing: the Table kubectl get decodes, per resource."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from lab.apiserver.tables import human_duration, since, to_table

NOW = datetime(2026, 11, 22, 10, 3, 2, tzinfo=UTC)
CREATED = "2026-11-22T10:00:00Z"  # 3m2s before NOW


def meta(name: str, **extra: object) -> dict:
    return {"name": name, "creationTimestamp": CREATED, **extra}


def names(table: dict) -> list[str]:
    return [c["name"] for c in table["columnDefinitions"]]


def wide(table: dict) -> list[str]:
    return [c["name"] for c in table["columnDefinitions"] if c["priority"] == 1]


def cells(resource: str, obj: dict) -> list:
    table = to_table(resource, [obj], now=NOW)
    assert len(table["rows"][0]["cells"]) == len(table["columnDefinitions"])
    return table["rows"][0]["cells"]


def pod(status: dict | None = None, spec: dict | None = None, **metadata: object) -> dict:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": meta("web", namespace="x", **metadata),
        "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "node-1", **(spec or {})},
        "status": status if status is not None else {},
    }


RUNNING = {"ready": True, "restartCount": 0, "state": {"running": {}}}


def test_pod_columns() -> None:
    table = to_table("pods", [], now=NOW)
    assert names(table) == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
        "IP",
        "Node",
        "Nominated Node",
        "Readiness Gates",
    ]
    assert wide(table) == ["IP", "Node", "Nominated Node", "Readiness Gates"]
    assert table["rows"] == []


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(
            pod({"phase": "Running", "podIP": "198.18.1.11", "containerStatuses": [RUNNING]}),
            ["web", "1/1", "Running", "0", "3m2s", "198.18.1.11", "node-1", "<none>", "<none>"],
            id="running",
        ),
        pytest.param(
            pod({"phase": "Pending"}, spec={"nodeName": ""}),
            ["web", "0/1", "Pending", "0", "3m2s", "<none>", "<none>", "<none>", "<none>"],
            id="pending-no-statuses",
        ),
        pytest.param(
            pod({"phase": "Running", "containerStatuses": [RUNNING]}, deletionTimestamp=CREATED),
            ["web", "1/1", "Terminating", "0", "3m2s", "<none>", "node-1", "<none>", "<none>"],
            id="terminating",
        ),
        pytest.param(
            pod({"phase": "Succeeded"}, deletionTimestamp=CREATED),
            ["web", "0/1", "Succeeded", "0", "3m2s", "<none>", "node-1", "<none>", "<none>"],
            id="finished-pod-being-deleted",
        ),
        pytest.param(
            pod(
                {
                    "phase": "Running",
                    "podIPs": [{"ip": "198.18.1.12"}, {"ip": "fd00::12"}],
                    "nominatedNodeName": "node-2",
                    "containerStatuses": [
                        {
                            "ready": False,
                            "restartCount": 4,
                            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                            "lastState": {"terminated": {"finishedAt": "2026-11-22T10:02:00Z"}},
                        },
                        RUNNING,
                    ],
                },
                spec={"containers": [{"name": "a"}, {"name": "b"}]},
            ),
            [
                "web",
                "1/2",
                "CrashLoopBackOff",
                "4 (62s ago)",
                "3m2s",
                "198.18.1.12",
                "node-1",
                "node-2",
                "<none>",
            ],
            id="crash-loop",
        ),
        pytest.param(
            pod({"phase": "Failed", "containerStatuses": [{"state": {"terminated": {}}}]}),
            ["web", "0/1", "ExitCode:0", "0", "3m2s", "<none>", "node-1", "<none>", "<none>"],
            id="terminated-without-reason",
        ),
        pytest.param(
            pod(
                {"phase": "Running", "conditions": [{"type": "gate-a", "status": "True"}]},
                spec={"readinessGates": [{"conditionType": "gate-a"}, {"conditionType": "b"}]},
            ),
            ["web", "0/1", "Running", "0", "3m2s", "<none>", "node-1", "<none>", "1/2"],
            id="readiness-gates",
        ),
    ],
)
def test_pod_cells(obj: dict, expected: list) -> None:
    assert cells("pods", obj) == expected


def test_finished_pod_row_is_marked_completed() -> None:
    row = to_table("pods", [pod({"phase": "Succeeded"})], now=NOW)["rows"][0]
    assert row["conditions"][0]["type"] == "Completed"
    assert "conditions" not in to_table("pods", [pod({"phase": "Running"})], now=NOW)["rows"][0]


def test_namespaces() -> None:
    ns = {"metadata": meta("x"), "status": {"phase": "Active"}}
    table = to_table("namespaces", [ns], now=NOW)
    assert names(table) == ["Name", "Status", "Age"]
    assert table["rows"][0]["cells"] == ["x", "Active", "3m2s"]


def node(conditions: list, labels: dict | None = None, **spec: object) -> dict:
    return {
        "metadata": meta("node-1", labels=labels or {}),
        "spec": spec,
        "status": {
            "conditions": conditions,
            "addresses": [
                {"type": "Hostname", "address": "node-1"},
                {"type": "InternalIP", "address": "198.19.0.1"},
            ],
            "nodeInfo": {"kubeletVersion": "v1.31.0", "osImage": "Picket lab"},
        },
    }


READY = {"type": "Ready", "status": "True"}


@pytest.mark.parametrize(
    ("obj", "status", "roles"),
    [
        pytest.param(node([READY]), "Ready", "<none>", id="ready"),
        pytest.param(node([{"type": "Ready", "status": "False"}]), "NotReady", "<none>", id="not"),
        pytest.param(node([{"type": "MemoryPressure", "status": "False"}]), "Unknown", "<none>"),
        pytest.param(node([READY], unschedulable=True), "Ready,SchedulingDisabled", "<none>"),
        pytest.param(
            node(
                [READY],
                {
                    "node-role.kubernetes.io/worker": "",
                    "node-role.kubernetes.io/control-plane": "",
                    "kubernetes.io/role": "edge",
                },
            ),
            "Ready",
            "control-plane,edge,worker",
            id="roles",
        ),
    ],
)
def test_nodes(obj: dict, status: str, roles: str) -> None:
    table = to_table("nodes", [obj], now=NOW)
    assert names(table) == [
        "Name",
        "Status",
        "Roles",
        "Age",
        "Version",
        "Internal-IP",
        "External-IP",
        "OS-Image",
        "Kernel-Version",
        "Container-Runtime",
    ]
    assert wide(table) == names(table)[5:]
    assert table["rows"][0]["cells"] == [
        "node-1",
        status,
        roles,
        "3m2s",
        "v1.31.0",
        "198.19.0.1",
        "<none>",
        "Picket lab",
        "<unknown>",
        "<unknown>",
    ]


@pytest.mark.parametrize(
    ("pod_selector", "text"),
    [
        pytest.param({"matchLabels": {"app": "db"}}, "app=db", id="labels"),
        pytest.param({}, "<none>", id="empty"),
        pytest.param(None, "<none>", id="absent"),
        pytest.param(
            {
                "matchLabels": {"tier": "b"},
                "matchExpressions": [
                    {"key": "app", "operator": "In", "values": ["web", "db"]},
                    {"key": "env", "operator": "DoesNotExist"},
                ],
            },
            "app in (db,web),!env,tier=b",
            id="expressions",
        ),
        pytest.param({"matchLabels": "nope"}, "<error>", id="invalid"),
    ],
)
def test_networkpolicies(pod_selector: dict | None, text: str) -> None:
    spec = {} if pod_selector is None else {"podSelector": pod_selector}
    policy = {"metadata": meta("p", namespace="x"), "spec": spec}
    table = to_table("networkpolicies", [policy], now=NOW)
    assert names(table) == ["Name", "Pod-Selector", "Age"]
    assert table["rows"][0]["cells"] == ["p", text, "3m2s"]


def test_deployments() -> None:
    deploy = {
        "metadata": meta("web", namespace="x"),
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "spec": {"containers": [{"name": "a", "image": "ia"}, {"name": "b", "image": "ib"}]}
            },
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    table = to_table("deployments", [deploy], now=NOW)
    assert names(table) == [
        "Name",
        "Ready",
        "Up-to-date",
        "Available",
        "Age",
        "Containers",
        "Images",
        "Selector",
    ]
    assert wide(table) == ["Containers", "Images", "Selector"]
    assert table["rows"][0]["cells"] == ["web", "2/3", 3, 2, "3m2s", "a,b", "ia,ib", "app=web"]


def service(**spec: object) -> dict:
    return {"metadata": meta("web", namespace="x"), "spec": spec}


def test_service_columns() -> None:
    table = to_table("services", [service(type="ClusterIP", clusterIPs=["198.19.241.1"])])
    assert names(table) == [
        "Name",
        "Type",
        "Cluster-IP",
        "External-IP",
        "Port(s)",
        "Age",
        "Selector",
    ]
    assert wide(table) == ["Selector"]


@pytest.mark.parametrize(
    ("spec", "status", "want"),
    [
        (
            {
                "type": "ClusterIP",
                "clusterIPs": ["198.19.241.1"],
                "selector": {"b": "2", "a": "1"},
                "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
            },
            {},
            ["web", "ClusterIP", "198.19.241.1", "<none>", "80/TCP,53/UDP", "3m2s", "a=1,b=2"],
        ),
        (
            {
                "type": "NodePort",
                "clusterIPs": ["198.19.241.2"],
                "externalIPs": ["198.19.200.9"],
                "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}],
            },
            {},
            ["web", "NodePort", "198.19.241.2", "198.19.200.9", "80:30080/TCP", "3m2s", "<none>"],
        ),
        (
            {"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]},
            {},
            ["web", "ClusterIP", "None", "<none>", "<none>", "3m2s", "<none>"],
        ),
        (
            {"type": "ExternalName", "externalName": "db.example.com"},
            {},
            ["web", "ExternalName", "<none>", "db.example.com", "<none>", "3m2s", "<none>"],
        ),
        (
            {"type": "LoadBalancer", "clusterIPs": ["198.19.241.3"]},
            {},
            ["web", "LoadBalancer", "198.19.241.3", "<pending>", "<none>", "3m2s", "<none>"],
        ),
        (
            {"type": "LoadBalancer", "clusterIPs": ["198.19.241.3"]},
            {"loadBalancer": {"ingress": [{"ip": "198.19.200.1"}, {"hostname": "lb.example"}]}},
            [
                "web",
                "LoadBalancer",
                "198.19.241.3",
                "198.19.200.1,lb.example",
                "<none>",
                "3m2s",
                "<none>",
            ],
        ),
    ],
)
def test_service_cells(spec: dict, status: dict, want: list) -> None:
    assert cells("services", {**service(**spec), "status": status}) == want


def endpointslice(ports: list | None, endpoints: list | None) -> dict:
    return {
        "metadata": meta("web-abcde", namespace="x"),
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }


def test_endpointslice_columns() -> None:
    table = to_table("endpointslices", [endpointslice(None, None)], now=NOW)
    assert names(table) == ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    assert table["rows"][0]["cells"] == ["web-abcde", "IPv4", "<unset>", "<unset>", "3m2s"]


def test_endpointslice_cells_show_three_then_how_many_more() -> None:
    ports = [{"port": 80}, {"name": "dns"}, {}, {"port": 9}]
    endpoints = [{"addresses": [f"198.18.1.{i}"]} for i in range(1, 6)]
    assert cells("endpointslices", endpointslice(ports, endpoints))[2:4] == [
        "80,dns,* + 1 more...",
        "198.18.1.1,198.18.1.2,198.18.1.3 + 2 more...",
    ]


def test_new_deployment_defaults() -> None:
    deploy = {"metadata": meta("web"), "spec": {"selector": {"matchLabels": {"app": "web"}}}}
    assert cells("deployments", deploy)[:4] == ["web", "0/1", 0, 0]


def test_other_resources() -> None:
    table = to_table("configmaps", [{"metadata": meta("cm")}, {"metadata": {"name": "x"}}], now=NOW)
    assert names(table) == ["Name", "Age"]
    assert [r["cells"] for r in table["rows"]] == [["cm", "3m2s"], ["x", "<unknown>"]]


OBJ = {
    "kind": "Namespace",
    "apiVersion": "v1",
    "metadata": meta("x", resourceVersion="7", labels={"a": "b"}),
    "spec": {"finalizers": ["kubernetes"]},
    "status": {"phase": "Active"},
}


def test_include_object_metadata_is_the_default() -> None:
    row = to_table("namespaces", [OBJ], now=NOW)["rows"][0]
    assert row["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": OBJ["metadata"],
    }
    assert row["object"]["metadata"] is not OBJ["metadata"]  # a copy: callers may mutate


def test_include_object_modes() -> None:
    assert "object" not in to_table("namespaces", [OBJ], "None", now=NOW)["rows"][0]
    assert to_table("namespaces", [OBJ], "Object", now=NOW)["rows"][0]["object"] == OBJ
    with pytest.raises(ValueError, match="includeObject"):
        to_table("namespaces", [OBJ], "Everything", now=NOW)


def test_table_keys_are_what_kubectl_decodes() -> None:
    table = to_table(
        "pods",
        [pod({"phase": "Running"})],
        now=NOW,
        list_meta={"resourceVersion": "42", "continue": "tok", "selfLink": "/x"},
    )
    assert set(table) == {"kind", "apiVersion", "metadata", "columnDefinitions", "rows"}
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert table["metadata"] == {"resourceVersion": "42", "continue": "tok"}
    for column in table["columnDefinitions"]:
        assert set(column) == {"name", "type", "format", "description", "priority"}
        assert column["format"] == ("name" if column["name"] == "Name" else "")
    assert set(table["rows"][0]) == {"cells", "object"}
    assert json.loads(json.dumps(table)) == table  # plain JSON throughout
    assert to_table("pods", [], now=NOW)["metadata"] == {}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (182, "3m2s"),
        (599, "9m59s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60 * 5 + 7, "3h5m"),
        (8 * 3600, "8h"),
        (47 * 3600 + 3599, "47h"),
        (2 * 86400, "2d"),
        (2 * 86400 + 3 * 3600, "2d3h"),
        (8 * 86400 + 3 * 3600, "8d"),
        (730 * 86400, "2y"),
        (731 * 86400, "2y1d"),
        (8 * 365 * 86400 + 86400, "8y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("timestamp", "text"),
    [
        (CREATED, "3m2s"),
        ("2026-11-22T10:00:00.5Z", "3m1s"),
        ("2026-11-22T11:00:00+01:00", "3m2s"),
        (None, "<unknown>"),
        ("", "<unknown>"),
        ("yesterday", "<unknown>"),
    ],
)
def test_since(timestamp: str | None, text: str) -> None:
    assert since(timestamp, NOW) == text


def test_age_uses_the_clock_by_default() -> None:
    recent = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
    age = to_table("configmaps", [{"metadata": {"name": "a", "creationTimestamp": recent}}])
    assert age["rows"][0]["cells"][1] in {"30s", "31s", "32s"}


@pytest.mark.parametrize(
    "resource",
    ["pods", "nodes", "namespaces", "networkpolicies", "deployments", "services", "endpointslices"],
)
def test_null_or_missing_parts_do_not_crash(resource: str) -> None:
    for obj in ({}, {"metadata": None, "spec": None, "status": None}):
        row = to_table(resource, [obj], now=NOW)["rows"][0]
        assert row["cells"][0] == ""
        assert row["object"]["metadata"] == {}
