"""Conformance: on the 3x3 model over two nodes, every scenario's observed matrix equals
the oracle's matrix computed from the live objects. The scenarios cover every rule of
DESIGN.md's semantics list; same-node and cross-node pairs are both in every matrix.

The lab is dual-stack, and every matrix is observed four times, at once: to the pods'
own addresses and through a ClusterIP per destination pod (the Services `lab matrix
--via-service` makes, dual-stack), on IPv4 and on IPv6, and each must equal the oracle's
for its family, since NetworkPolicy acts below Services and a pod is every address it
has. The Services are made once per lab with every port the scenarios probe (and per
scenario for its extra pods); the `checks` of non-pod endpoints are probed directly
only, on the family of the addresses they name. The ipBlock scenarios come in both
families: /32 and /24 for IPv4, /128 and /64 for IPv6; an ipBlock of one family admits
nothing over the other, which the matrices of the other family show.

The whole suite runs again in an IPv6-only lab (`lab up --ip-families 6`), where the
scenarios of IPv4 addresses have nothing to name and are skipped.

The suite is parametrized by backend; no expectation is backend-specific."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import ip_network
from typing import Any

import pytest

from lab.config import LabNode
from tests.support.enforcement import (
    apply,
    converged,
    is_address,
    lab_families,
    live_state,
    oracle_allows,
    probe_allowed,
)
from tests.support.lab_cli import Kubectl, model_lab
from tests.support.policies import BACKENDS, netpol, ns_peer, pods_peer, sel
from tests.support.via_service import (
    ClusterIPs,
    add_services,
    merged,
    module_services,
    remove_services,
)

NAMESPACES = ["x", "y", "z"]


def extra_pod(ns: str, name: str, node: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"scenario": "extra", "pod": name}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "agnhost", "ports": ports}],
        },
    }


def pod_ip(kubectl: Kubectl, ref: str, family: int = 4) -> str:
    ns, name = ref.split("/")
    status = kubectl.json("get", "pod", "-n", ns, name)["status"]
    return next(p["ip"] for p in status["podIPs"] if (6 if ":" in p["ip"] else 4) == family)


# Where the IPv4 scenarios use a /32 and a /24, the IPv6 ones use a /128 and a /64.
HOST_PREFIX = {4: 32, 6: 128}
SUBNET_PREFIX = {4: 24, 6: 64}


@dataclass
class Scenario:
    name: str
    objects: Callable[[Kubectl], list[dict[str, Any]]]
    targets: list[tuple[int, str]] = field(default_factory=lambda: [(80, "TCP")])
    change: Callable[[Kubectl], None] | None = None  # applied after the first comparison
    undo: Callable[[Kubectl], None] | None = None
    checks: list[tuple[str, str, str]] = field(default_factory=list)  # non-pod endpoints
    check_family: int = 4  # the address family the checks probe on
    family: int | None = None  # a scenario of one family's addresses (its ipBlocks)


def fixed(*objects: dict[str, Any]) -> Callable[[Kubectl], list[dict[str, Any]]]:
    return lambda kubectl: list(objects)


DENY_IN = {"podSelector": {}}
DENY_OUT = {"podSelector": {}, "policyTypes": ["Egress"]}


def _relabel_pod(ref: str, *labels: str) -> Callable[[Kubectl], None]:
    ns, name = ref.split("/")
    return lambda kubectl: kubectl("label", "pod", "-n", ns, name, "--overwrite", *labels)


def _relabel_ns(ns: str, *labels: str) -> Callable[[Kubectl], None]:
    return lambda kubectl: kubectl("label", "namespace", ns, "--overwrite", *labels)


def _ipblock_except(family: int) -> Callable[[Kubectl], list[dict[str, Any]]]:
    def objects(kubectl: Kubectl) -> list[dict[str, Any]]:
        hole = pod_ip(kubectl, "x/a", family)
        # The pod CIDR of x/a's node (placement is the lab's: read it, do not assume it).
        node_pods = str(ip_network(f"{hole}/{SUBNET_PREFIX[family]}", strict=False))
        block = {"cidr": node_pods, "except": [f"{hole}/{HOST_PREFIX[family]}"]}
        return [
            netpol(
                "y",
                "from-its-node-pods-but-x-a",
                {"podSelector": {}, "ingress": [{"from": [{"ipBlock": block}]}]},
            )
        ]

    return objects


def _egress_to_pod_ip(family: int) -> Callable[[Kubectl], list[dict[str, Any]]]:
    def objects(kubectl: Kubectl) -> list[dict[str, Any]]:
        cidr = f"{pod_ip(kubectl, 'y/b', family)}/{HOST_PREFIX[family]}"
        return [
            netpol(
                "x",
                "egress-to-y-b-by-address",
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": cidr}}]}],
                },
            )
        ]

    return objects


def _outside_blocks(outside: str, hole: str, one: str) -> Callable[[Kubectl], list]:
    return fixed(
        netpol(
            "y",
            "from-outside",
            {
                "podSelector": {},
                "ingress": [{"from": [{"ipBlock": {"cidr": outside, "except": [hole]}}]}],
            },
        ),
        netpol(
            "x",
            "to-outside",
            {
                "podSelector": sel(pod="a"),
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": one}}], "ports": [{"port": 443}]}],
            },
        ),
    )


def _from_node(cidr: str) -> Callable[[Kubectl], list]:
    return fixed(
        netpol(
            "z",
            "from-node-2",
            {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]},
        )
    )


NAMED = [
    extra_pod(
        "y",
        "web1",
        "node-1",
        [{"containerPort": 80, "name": "http"}, {"containerPort": 81, "name": "alt"}],
    ),
    extra_pod(
        "y",
        "web2",
        "node-2",
        [{"containerPort": 81, "name": "http"}, {"containerPort": 80, "name": "alt"}],
    ),
]

SCENARIOS = [
    Scenario("deny-all-ingress", fixed(netpol("y", "deny", DENY_IN))),
    Scenario("deny-all-egress", fixed(netpol("x", "deny", DENY_OUT)), [(80, "TCP"), (81, "UDP")]),
    Scenario(
        "deny-all-both-ways",
        fixed(netpol("z", "deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})),
    ),
    Scenario(
        "allow-all-ingress-after-deny",
        fixed(
            netpol("y", "deny", DENY_IN), netpol("y", "allow", {"podSelector": {}, "ingress": [{}]})
        ),
    ),
    Scenario(
        "namespace-selector",
        fixed(netpol("y", "from-x", {"podSelector": {}, "ingress": [{"from": [ns_peer(ns="x")]}]})),
    ),
    Scenario(
        "pod-selector-own-namespace",
        fixed(
            netpol(
                "y",
                "from-a",
                {"podSelector": sel(pod="b"), "ingress": [{"from": [pods_peer(pod="a")]}]},
            )
        ),
    ),
    Scenario(
        "and-peer",
        fixed(
            netpol(
                "y",
                "x-a-only",
                {
                    "podSelector": {},
                    "ingress": [{"from": [{**ns_peer(ns="x"), **pods_peer(pod="a")}]}],
                },
            )
        ),
    ),
    Scenario(
        "or-peers",
        fixed(
            netpol(
                "y",
                "x-or-a",
                {"podSelector": {}, "ingress": [{"from": [ns_peer(ns="x"), pods_peer(pod="a")]}]},
            )
        ),
    ),
    Scenario(
        "namespace-expression-in",
        fixed(
            netpol(
                "z",
                "from-x-y",
                {
                    "podSelector": {},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {
                                        "matchExpressions": [
                                            {"key": "ns", "operator": "In", "values": ["x", "y"]}
                                        ]
                                    }
                                }
                            ]
                        }
                    ],
                },
            )
        ),
    ),
    Scenario(
        "pod-expression-notin-exists",
        fixed(
            netpol(
                "x",
                "not-b",
                {
                    "podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {},
                                    "podSelector": {
                                        "matchExpressions": [
                                            {"key": "pod", "operator": "NotIn", "values": ["b"]}
                                        ]
                                    },
                                }
                            ]
                        }
                    ],
                },
            )
        ),
    ),
    Scenario(
        "does-not-exist",
        fixed(
            netpol(
                "x",
                "unlabelled-only",
                {
                    "podSelector": {},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {},
                                    "podSelector": {
                                        "matchExpressions": [
                                            {"key": "pod", "operator": "DoesNotExist"}
                                        ]
                                    },
                                }
                            ]
                        }
                    ],
                },
            )
        ),
    ),
    Scenario(
        "numeric-port",
        fixed(netpol("y", "only-81", {"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]})),
        [(80, "TCP"), (81, "TCP")],
    ),
    Scenario(
        "named-port-per-pod",
        fixed(
            *NAMED,
            netpol(
                "y", "http-only", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}
            ),
        ),
        [(80, "TCP"), (81, "TCP")],
    ),
    Scenario(
        "egress-named-port-per-destination",
        fixed(
            *NAMED,
            netpol(
                "x",
                "to-http",
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": [{"port": "http"}]}],
                },
            ),
        ),
        [(80, "TCP"), (81, "TCP")],
    ),
    Scenario(
        "end-port-range",
        fixed(
            netpol(
                "z",
                "81-90",
                {"podSelector": {}, "ingress": [{"ports": [{"port": 81, "endPort": 90}]}]},
            )
        ),
        [(80, "TCP"), (81, "TCP")],
    ),
    Scenario(
        "udp",
        fixed(
            netpol(
                "y",
                "udp-81",
                {"podSelector": {}, "ingress": [{"ports": [{"port": 81, "protocol": "UDP"}]}]},
            )
        ),
        [(80, "UDP"), (81, "UDP"), (81, "TCP")],
    ),
    Scenario(
        "sctp",
        fixed(
            netpol(
                "x",
                "sctp-80",
                {
                    "podSelector": {},
                    "ingress": [
                        {"from": [ns_peer(ns="z")], "ports": [{"port": 80, "protocol": "SCTP"}]}
                    ],
                },
            )
        ),
        [(80, "SCTP"), (81, "SCTP"), (80, "TCP")],
    ),
    Scenario("ipblock-except-pod-address", _ipblock_except(4), family=4),
    Scenario("ipblock-except-pod-address-ipv6", _ipblock_except(6), family=6),
    Scenario("ipblock-egress-to-pod-address", _egress_to_pod_ip(4), family=4),
    Scenario("ipblock-egress-to-pod-address-ipv6", _egress_to_pod_ip(6), family=6),
    Scenario(
        "ipblock-external",
        _outside_blocks("198.19.200.0/24", "198.19.200.7/32", "198.19.200.8/32"),
        checks=[
            ("198.19.200.7", "y/b", "80"),
            ("198.19.200.9", "y/b", "80"),
            ("x/a", "198.19.200.8", "443"),
            ("x/a", "198.19.200.9", "443"),
            ("x/a", "198.19.200.8", "80"),
            ("x/b", "198.19.200.9", "443"),
        ],
        family=4,
    ),
    Scenario(
        "ipblock-external-ipv6",
        _outside_blocks("2001:2:0:fe00::/64", "2001:2:0:fe00::7/128", "2001:2:0:fe00::8/128"),
        checks=[
            ("2001:2:0:fe00::7", "y/b", "80"),
            ("2001:2:0:fe00::9", "y/b", "80"),
            ("198.19.200.9", "y/b", "80"),  # an IPv6 block admits no IPv4 address
            ("x/a", "2001:2:0:fe00::8", "443"),
            ("x/a", "2001:2:0:fe00::9", "443"),
            ("x/a", "198.19.200.8", "443"),
            ("x/b", "2001:2:0:fe00::9", "443"),
        ],
        check_family=6,
        family=6,
    ),
    Scenario(
        "egress-only-policy",
        fixed(
            netpol(
                "y",
                "egress-to-z",
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [ns_peer(ns="z")]}],
                },
            )
        ),
    ),
    Scenario(
        "policy-types-defaulted-from-egress-rules",
        fixed(
            netpol(
                "z",
                "egress-rules",
                {"podSelector": sel(pod="c"), "egress": [{"to": [ns_peer(ns="x")]}]},
            )
        ),
    ),
    Scenario(
        "additive-policies",
        fixed(
            netpol("y", "from-x", {"podSelector": {}, "ingress": [{"from": [ns_peer(ns="x")]}]}),
            netpol(
                "y",
                "from-z-c",
                {
                    "podSelector": {},
                    "ingress": [{"from": [{**ns_peer(ns="z"), **pods_peer(pod="c")}]}],
                },
            ),
            netpol(
                "x",
                "out-y",
                {
                    "podSelector": sel(pod="a"),
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [ns_peer(ns="y")]}],
                },
            ),
        ),
    ),
    Scenario(
        "empty-from-and-empty-rule",
        fixed(
            netpol(
                "x",
                "empty-from",
                {"podSelector": sel(pod="a"), "ingress": [{"from": [], "ports": [{"port": 80}]}]},
            ),
            netpol("y", "empty-rule", {"podSelector": sel(pod="c"), "ingress": [{}]}),
        ),
    ),
    Scenario(
        "from-nodes-by-ipblock",
        _from_node("198.18.0.2/32"),
        checks=[
            ("node/node-1", "z/a", "80"),
            ("node/node-2", "z/a", "80"),
            ("node/node-1", "z/b", "80"),
            ("node/node-2", "z/b", "80"),
            ("198.19.200.1", "z/c", "80"),
        ],
        family=4,
    ),
    Scenario(
        "from-nodes-by-ipblock-ipv6",
        _from_node("2001:2::2/128"),
        checks=[
            ("node/node-1", "z/a", "80"),
            ("node/node-2", "z/a", "80"),
            ("node/node-1", "z/b", "80"),
            ("node/node-2", "z/b", "80"),
            ("2001:2:0:fe00::1", "z/c", "80"),
        ],
        check_family=6,
        family=6,
    ),
    Scenario(
        "policy-update",
        fixed(
            netpol("y", "changing", {"podSelector": {}, "ingress": [{"from": [ns_peer(ns="x")]}]})
        ),
        change=lambda kubectl: apply(
            kubectl,
            netpol(
                "y",
                "changing",
                {"podSelector": sel(pod="a"), "ingress": [{"from": [ns_peer(ns="z")]}]},
            ),
        ),
    ),
    Scenario(
        "pod-relabel",
        fixed(
            netpol(
                "y",
                "from-green",
                {
                    "podSelector": {},
                    "ingress": [
                        {"from": [{"namespaceSelector": {}, "podSelector": sel(color="green")}]}
                    ],
                },
            )
        ),
        change=_relabel_pod("x/b", "color=green"),
        undo=_relabel_pod("x/b", "color-"),
    ),
    Scenario(
        "isolated-pod-relabelled-out",
        fixed(netpol("x", "deny-red", {"podSelector": sel(color="red")})),
        change=_relabel_pod("x/c", "color=red"),
        undo=_relabel_pod("x/c", "color-"),
    ),
    Scenario(
        "namespace-relabel",
        fixed(
            netpol(
                "y",
                "from-trusted",
                {"podSelector": {}, "ingress": [{"from": [ns_peer(trusted="yes")]}]},
            )
        ),
        change=_relabel_ns("z", "trusted=yes"),
        undo=_relabel_ns("z", "trusted-"),
    ),
    Scenario(
        "policy-delete",
        fixed(netpol("z", "temporary", DENY_IN)),
        change=lambda kubectl: kubectl("delete", "networkpolicy", "-n", "z", "temporary"),
    ),
]


PROBED_PORTS = sorted({target for s in SCENARIOS for target in s.targets})


# Every backend in a dual-stack lab (IPv4 primary), and in an IPv6-only one.
LABS = [(backend, families) for families in ("4,6", "6") for backend in BACKENDS]


@pytest.fixture(scope="module", params=LABS, ids=[f"{b}-ipv{f.replace(',', '')}" for b, f in LABS])
def enforcing(request: pytest.FixtureRequest) -> Iterator[Kubectl]:
    backend, families = request.param
    with model_lab(backend, families) as kubectl:
        yield kubectl


@pytest.fixture(scope="module")
def services(enforcing: Kubectl) -> Iterator[ClusterIPs]:
    """Family -> pod ref -> ClusterIP of its probe Service, for every pod of the model."""
    with module_services(NAMESPACES, PROBED_PORTS) as cluster_ips:
        yield cluster_ips


def reset(kubectl: Kubectl) -> None:
    """No policy anywhere (the scenarios make policies in the model's namespaces
    only), no extra pod."""
    kubectl("delete", "networkpolicy", "--all", "-A")
    kubectl("delete", "pod", "-A", "-l", "scenario=extra", "--wait=true")


def extra_pods(objects: list[dict[str, Any]]) -> list[str]:
    pods = [o["metadata"] for o in objects if o["kind"] == "Pod"]
    return [f"{meta['namespace']}/{meta['name']}" for meta in pods]


def test_pairs_span_nodes(enforcing):
    nodes = {p.node_name for p in live_state(enforcing).endpoint_pods if p.namespace in "xyz"}
    assert nodes == {"node-1", "node-2"}


def test_every_model_pod_has_a_probe_service(enforcing, services):
    pods = live_state(enforcing).endpoint_pods
    assert sorted(services) == sorted(lab_families())  # a ClusterIP of each family
    for by_pod in services.values():
        assert {p.ref for p in pods if p.namespace in NAMESPACES} == set(by_pod)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(enforcing, services, scenario):
    kubectl = enforcing
    if scenario.family is not None and scenario.family not in lab_families():
        pytest.skip(f"a scenario of IPv{scenario.family} addresses; the lab's pods have none")
    reset(kubectl)
    extra: list[str] = []
    try:
        objects = scenario.objects(kubectl)
        apply(kubectl, *objects)
        extra = extra_pods(objects)
        addresses = services
        if extra:
            kubectl(
                "wait",
                "--for=condition=Ready",
                "pod",
                "-A",
                "-l",
                "scenario=extra",
                "--timeout=30s",
            )
            addresses = merged(services, add_services(extra, PROBED_PORTS))
        for port, protocol in scenario.targets:
            diff = converged(kubectl, NAMESPACES, port, protocol, services=addresses)
            assert diff == [], (port, protocol)
        for source, target, port in scenario.checks:
            number, _, proto = port.partition("/")
            # An address names its own family; pods and nodes take the scenario's.
            family = next(
                (6 if ":" in end else 4 for end in (source, target) if is_address(end)),
                scenario.check_family,
            )
            if family not in lab_families():
                continue  # an IPv4 check in an IPv6-only lab: nothing has the address
            want = oracle_allows(
                kubectl,
                _node_address(source, family),
                target,
                int(number),
                (proto or "TCP").upper(),
                family,
            )
            got = probe_allowed(source, target, port, family)
            assert got == want, (source, target, port, family, want)
        if scenario.change is not None:
            scenario.change(kubectl)
            for port, protocol in scenario.targets:
                diff = converged(kubectl, NAMESPACES, port, protocol, services=addresses)
                assert diff == [], ("after the change", port, protocol)
    finally:
        if extra:
            remove_services(extra)
        if scenario.undo is not None:
            scenario.undo(kubectl)


def _node_address(text: str, family: int) -> str:
    """node/node-N as its underlay address of `family`; anything else as it is."""
    if not text.startswith("node/"):
        return text
    node = LabNode(int(text.removeprefix("node/node-")))
    return str(node.address6 if family == 6 else node.address)


def test_scenario_count_covers_the_suite():
    assert len(SCENARIOS) >= 25
