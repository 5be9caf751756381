"""Table-driven semantics of the oracle on the 3x3 model (namespaces x, y, z; pods a, b, c).

Each row: extra objects, source, destination, PORT/PROTO, expected verdict. The rows
are grouped by the rule of DESIGN.md's "Semantics that are easy to get wrong" that
they pin down."""

from __future__ import annotations

import pytest

from agent.model.oracle import verdict
from agent.portspec import parse_port_protocol
from tests.support.builders import model_cluster, pod, policy, serve_ports, state_of

DENY_ALL_IN = {"podSelector": {}}
DENY_ALL_OUT = {"podSelector": {}, "policyTypes": ["Egress"]}
ALLOW, DENY = True, False


def ing(peers: list | None = None, ports: list | None = None, sel: dict | None = None) -> dict:
    """An ingress policy spec selecting `sel` (default all) with one rule."""
    rule = {}
    if peers is not None:
        rule["from"] = peers
    if ports is not None:
        rule["ports"] = ports
    return {"podSelector": sel or {}, "ingress": [rule]}


def egr(peers: list | None = None, ports: list | None = None, sel: dict | None = None) -> dict:
    rule = {}
    if peers is not None:
        rule["to"] = peers
    if ports is not None:
        rule["ports"] = ports
    return {"podSelector": sel or {}, "egress": [rule], "policyTypes": ["Egress"]}


def pods_sel(**labels: str) -> dict:
    return {"podSelector": {"matchLabels": labels}}


def ns_sel(**labels: str) -> dict:
    return {"namespaceSelector": {"matchLabels": labels}}


def block(cidr: str, *excepts: str) -> dict:
    return {"ipBlock": {"cidr": cidr, **({"except": list(excepts)} if excepts else {})}}


def y(spec: dict, name: str = "p") -> dict:
    return policy("y", name, spec)


def x(spec: dict, name: str = "p") -> dict:
    return policy("x", name, spec)


# Two destination pods whose port called "http" is a different number.
NAMED_HTTP = [
    pod(
        "y",
        "web1",
        "198.18.1.51",
        {"app": "web"},
        ports=[{"containerPort": 80, "name": "http"}, {"containerPort": 81}],
    ),
    pod(
        "y",
        "web2",
        "198.18.1.52",
        {"app": "web"},
        ports=[{"containerPort": 81, "name": "http"}, {"containerPort": 80}],
    ),
]
HOSTNET = pod(
    "y", "h", "198.18.0.2", {"pod": "h"}, node="node-2", host_network=True, ports=serve_ports(80)
)

CASES = [
    # --- isolation: only policies with the direction in policyTypes isolate
    ("no-policy-allows", [], "x/a", "y/b", "80/TCP", ALLOW),
    ("deny-all-ingress-denies", [y(DENY_ALL_IN)], "x/a", "y/b", "80/TCP", DENY),
    ("deny-all-ingress-same-ns-denied", [y(DENY_ALL_IN)], "y/a", "y/b", "80/TCP", DENY),
    ("deny-all-ingress-leaves-egress", [y(DENY_ALL_IN)], "y/a", "x/b", "80/TCP", ALLOW),
    ("deny-all-ingress-other-ns-unaffected", [y(DENY_ALL_IN)], "x/a", "z/b", "80/TCP", ALLOW),
    ("deny-all-egress-denies", [x(DENY_ALL_OUT)], "x/a", "y/b", "80/TCP", DENY),
    ("deny-all-egress-leaves-ingress", [x(DENY_ALL_OUT)], "y/a", "x/a", "80/TCP", ALLOW),
    (
        "selector-picks-one-pod",
        [y({"podSelector": {"matchLabels": {"pod": "a"}}})],
        "x/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "selector-picks-one-pod-isolated",
        [y({"podSelector": {"matchLabels": {"pod": "a"}}})],
        "x/a",
        "y/a",
        "80/TCP",
        DENY,
    ),
    # --- policyTypes defaulting
    (
        "omitted-types-with-egress-isolates-ingress",
        [x({"podSelector": {}, "egress": [{}]})],
        "z/a",
        "x/a",
        "80/TCP",
        DENY,
    ),
    (
        "omitted-types-with-egress-rule-allows-egress",
        [x({"podSelector": {}, "egress": [{"ports": [{"port": 80}]}]})],
        "x/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "omitted-types-with-egress-isolates-egress",
        [x({"podSelector": {}, "egress": [{"ports": [{"port": 80}]}]})],
        "x/a",
        "y/b",
        "81/TCP",
        DENY,
    ),
    (
        "omitted-types-without-egress-leaves-egress",
        [x({"podSelector": {}, "ingress": []})],
        "x/a",
        "y/b",
        "81/TCP",
        ALLOW,
    ),
    (
        "empty-types-list-defaults-too",
        [y({"podSelector": {}, "policyTypes": []})],
        "x/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "egress-only-type-ignores-ingress-rules",
        [
            y(
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "ingress": [{"from": [ns_sel(ns="q")]}],
                }
            )
        ],
        "x/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "ingress-type-only-leaves-egress-open",
        [x({"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{"to": [ns_sel(ns="q")]}]})],
        "x/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    ("egress-only-policy-denies-egress", [x(egr([ns_sel(ns="z")]))], "x/a", "y/b", "80/TCP", DENY),
    ("egress-only-policy-allows-listed", [x(egr([ns_sel(ns="y")]))], "x/a", "y/b", "80/TCP", ALLOW),
    # --- empty rules and peers: a missing or empty from/to means all sources
    (
        "empty-rule-allows-all",
        [y({"podSelector": {}, "ingress": [{}]})],
        "x/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "empty-ingress-list-denies",
        [y({"podSelector": {}, "ingress": []})],
        "x/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    ("empty-from-list-allows-all", [y(ing([], [{"port": 80}]))], "z/c", "y/b", "80/TCP", ALLOW),
    ("missing-ports-means-all-ports", [y(ing([ns_sel(ns="x")]))], "x/a", "y/b", "81/UDP", ALLOW),
    (
        "empty-ports-list-means-all-ports",
        [y(ing([ns_sel(ns="x")], []))],
        "x/a",
        "y/b",
        "81/SCTP",
        ALLOW,
    ),
    # --- peers: podSelector alone = own namespace; AND within a peer; OR across peers
    (
        "pod-selector-alone-own-namespace",
        [y(ing([pods_sel(pod="a")]))],
        "y/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "pod-selector-alone-not-other-namespace",
        [y(ing([pods_sel(pod="a")]))],
        "x/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "pod-selector-empty-whole-own-namespace",
        [y(ing([{"podSelector": {}}]))],
        "y/c",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "pod-selector-empty-not-other-namespace",
        [y(ing([{"podSelector": {}}]))],
        "x/c",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "namespace-selector-alone-all-its-pods",
        [y(ing([ns_sel(ns="x")]))],
        "x/c",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    ("namespace-selector-alone-other-ns", [y(ing([ns_sel(ns="x")]))], "z/a", "y/b", "80/TCP", DENY),
    (
        "namespace-selector-excludes-own-ns",
        [y(ing([ns_sel(ns="x")]))],
        "y/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "and-peer-both-match",
        [y(ing([{**ns_sel(ns="x"), **pods_sel(pod="a")}]))],
        "x/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "and-peer-pod-mismatch",
        [y(ing([{**ns_sel(ns="x"), **pods_sel(pod="a")}]))],
        "x/b",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "and-peer-namespace-mismatch",
        [y(ing([{**ns_sel(ns="x"), **pods_sel(pod="a")}]))],
        "z/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "or-peers-namespace-side",
        [y(ing([ns_sel(ns="x"), pods_sel(pod="a")]))],
        "x/b",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "or-peers-pod-side-own-ns",
        [y(ing([ns_sel(ns="x"), pods_sel(pod="a")]))],
        "y/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "or-peers-pod-side-other-ns",
        [y(ing([ns_sel(ns="x"), pods_sel(pod="a")]))],
        "z/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "all-namespaces-and-pod",
        [y(ing([{"namespaceSelector": {}, **pods_sel(pod="a")}]))],
        "z/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "all-namespaces-and-pod-mismatch",
        [y(ing([{"namespaceSelector": {}, **pods_sel(pod="a")}]))],
        "z/b",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "namespace-name-label-defaulted",
        [y(ing([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}]))],
        "z/c",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    # --- matchExpressions
    (
        "expr-in",
        [
            y(
                ing(
                    [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {"key": "ns", "operator": "In", "values": ["x", "z"]}
                                ]
                            }
                        }
                    ]
                )
            )
        ],
        "z/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "expr-in-excludes-own-ns",
        [
            y(
                ing(
                    [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {"key": "ns", "operator": "In", "values": ["x", "z"]}
                                ]
                            }
                        }
                    ]
                )
            )
        ],
        "y/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "expr-notin-allows-others",
        [
            y(
                ing(
                    [
                        {
                            "podSelector": {
                                "matchExpressions": [
                                    {"key": "pod", "operator": "NotIn", "values": ["a"]}
                                ]
                            }
                        }
                    ]
                )
            )
        ],
        "y/c",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "expr-notin-denies-listed",
        [
            y(
                ing(
                    [
                        {
                            "podSelector": {
                                "matchExpressions": [
                                    {"key": "pod", "operator": "NotIn", "values": ["a"]}
                                ]
                            }
                        }
                    ]
                )
            )
        ],
        "y/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "expr-exists",
        [y(ing([{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]}}]))],
        "y/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "expr-does-not-exist",
        [
            y(
                ing(
                    [
                        {
                            "podSelector": {
                                "matchExpressions": [{"key": "pod", "operator": "DoesNotExist"}]
                            }
                        }
                    ]
                )
            )
        ],
        "y/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "labels-and-expressions-are-anded",
        [
            y(
                ing(
                    [
                        {
                            "podSelector": {
                                "matchLabels": {"pod": "a"},
                                "matchExpressions": [
                                    {"key": "pod", "operator": "In", "values": ["c"]}
                                ],
                            }
                        }
                    ]
                )
            )
        ],
        "y/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "policy-selector-expression",
        [
            y(
                {
                    "podSelector": {
                        "matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]
                    }
                }
            )
        ],
        "x/a",
        "y/a",
        "80/TCP",
        ALLOW,
    ),
    # --- ports: default TCP, numeric, ranges, protocol-only, named
    ("port-match", [y(ing(None, [{"port": 80}]))], "x/a", "y/b", "80/TCP", ALLOW),
    ("port-mismatch", [y(ing(None, [{"port": 80}]))], "x/a", "y/b", "81/TCP", DENY),
    ("port-default-protocol-is-tcp", [y(ing(None, [{"port": 80}]))], "x/a", "y/b", "80/UDP", DENY),
    ("port-udp", [y(ing(None, [{"port": 80, "protocol": "UDP"}]))], "x/a", "y/b", "80/UDP", ALLOW),
    (
        "port-udp-not-tcp",
        [y(ing(None, [{"port": 80, "protocol": "UDP"}]))],
        "x/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "port-sctp",
        [y(ing(None, [{"port": 81, "protocol": "SCTP"}]))],
        "x/a",
        "y/b",
        "81/SCTP",
        ALLOW,
    ),
    (
        "protocol-only-any-port",
        [y(ing(None, [{"protocol": "UDP"}]))],
        "x/a",
        "y/b",
        "81/UDP",
        ALLOW,
    ),
    (
        "protocol-only-other-protocol",
        [y(ing(None, [{"protocol": "UDP"}]))],
        "x/a",
        "y/b",
        "81/TCP",
        DENY,
    ),
    ("end-port-top", [y(ing(None, [{"port": 80, "endPort": 81}]))], "x/a", "y/b", "81/TCP", ALLOW),
    ("end-port-above", [y(ing(None, [{"port": 80, "endPort": 81}]))], "x/a", "y/b", "82/TCP", DENY),
    ("end-port-below", [y(ing(None, [{"port": 80, "endPort": 81}]))], "x/a", "y/b", "79/TCP", DENY),
    (
        "end-port-equal-port",
        [y(ing(None, [{"port": 81, "endPort": 81}]))],
        "x/a",
        "y/b",
        "81/TCP",
        ALLOW,
    ),
    (
        "two-port-entries-or",
        [y(ing(None, [{"port": 79}, {"port": 81, "protocol": "UDP"}]))],
        "x/a",
        "y/b",
        "81/UDP",
        ALLOW,
    ),
    ("named-port", [y(ing(None, [{"port": "serve-80-tcp"}]))], "x/a", "y/b", "80/TCP", ALLOW),
    (
        "named-port-other-number",
        [y(ing(None, [{"port": "serve-80-tcp"}]))],
        "x/a",
        "y/b",
        "81/TCP",
        DENY,
    ),
    (
        "named-port-is-per-protocol",
        [y(ing(None, [{"port": "serve-80-udp"}]))],
        "x/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "named-port-udp",
        [y(ing(None, [{"port": "serve-80-udp", "protocol": "UDP"}]))],
        "x/a",
        "y/b",
        "80/UDP",
        ALLOW,
    ),
    (
        "named-port-resolves-on-web1",
        [*NAMED_HTTP, y(ing(None, [{"port": "http"}]))],
        "x/a",
        "y/web1",
        "80/TCP",
        ALLOW,
    ),
    (
        "named-port-resolves-on-web2",
        [*NAMED_HTTP, y(ing(None, [{"port": "http"}]))],
        "x/a",
        "y/web2",
        "81/TCP",
        ALLOW,
    ),
    (
        "named-port-not-other-pods-number",
        [*NAMED_HTTP, y(ing(None, [{"port": "http"}]))],
        "x/a",
        "y/web2",
        "80/TCP",
        DENY,
    ),
    ("named-port-missing-on-pod", [y(ing(None, [{"port": "http"}]))], "x/a", "y/b", "80/TCP", DENY),
    (
        "egress-named-port-uses-destination",
        [*NAMED_HTTP, x(egr(None, [{"port": "http"}]))],
        "x/a",
        "y/web2",
        "81/TCP",
        ALLOW,
    ),
    (
        "egress-named-port-not-source-ports",
        [*NAMED_HTTP, x(egr(None, [{"port": "http"}]))],
        "x/a",
        "y/web2",
        "80/TCP",
        DENY,
    ),
    (
        "egress-named-port-to-external",
        [x(egr(None, [{"port": "serve-80-tcp"}]))],
        "x/a",
        "198.19.200.1",
        "80/TCP",
        DENY,
    ),
    # --- ipBlock: addresses, pod addresses included, minus except
    (
        "ipblock-external-in",
        [y(ing([block("198.19.200.0/24")]))],
        "198.19.200.7",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "ipblock-external-out",
        [y(ing([block("198.19.200.0/24")]))],
        "198.19.201.7",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "ipblock-except-hole",
        [y(ing([block("198.19.200.0/24", "198.19.200.7/32")]))],
        "198.19.200.7",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "ipblock-except-neighbour",
        [y(ing([block("198.19.200.0/24", "198.19.200.7/32")]))],
        "198.19.200.8",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    ("ipblock-matches-pod-ip", [y(ing([block("198.18.1.1/32")]))], "x/a", "y/b", "80/TCP", ALLOW),
    (
        "ipblock-pod-in-except",
        [y(ing([block("198.18.1.0/24", "198.18.1.0/28")]))],
        "x/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "ipblock-host-bits-set",
        [y(ing([block("198.19.200.99/24")]))],
        "198.19.200.1",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "ipblock-egress-world-not-pods",
        [x(egr([block("0.0.0.0/0", "198.18.0.0/15")]))],
        "x/a",
        "198.19.220.1",
        "443/TCP",
        DENY,
    ),
    (
        "ipblock-egress-except-covers-pods",
        [x(egr([block("0.0.0.0/0", "198.18.0.0/16")]))],
        "x/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "ipblock-egress-external-allowed",
        [x(egr([block("0.0.0.0/0", "198.18.0.0/16")]))],
        "x/a",
        "198.19.220.1",
        "443/TCP",
        ALLOW,
    ),
    (
        "ipblock-with-port",
        [x(egr([block("198.19.0.0/16")], [{"port": 443}]))],
        "x/a",
        "198.19.220.1",
        "80/TCP",
        DENY,
    ),
    # --- additive policies; both egress and ingress must allow
    (
        "additive-first-policy",
        [y(ing([ns_sel(ns="x")]), "p1"), y(ing([ns_sel(ns="z")]), "p2")],
        "x/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "additive-second-policy",
        [y(ing([ns_sel(ns="x")]), "p1"), y(ing([ns_sel(ns="z")]), "p2")],
        "z/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "additive-deny-all-plus-allow",
        [y(DENY_ALL_IN, "deny"), y(ing([ns_sel(ns="x")]), "allow")],
        "x/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "additive-neither",
        [y(DENY_ALL_IN, "deny"), y(ing([ns_sel(ns="x")]), "allow")],
        "z/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "egress-allows-ingress-denies",
        [x(egr([ns_sel(ns="y")])), y(DENY_ALL_IN)],
        "x/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "ingress-allows-egress-denies",
        [x(DENY_ALL_OUT), y(ing([ns_sel(ns="x")]))],
        "x/a",
        "y/b",
        "80/TCP",
        DENY,
    ),
    (
        "both-directions-allow",
        [x(egr([ns_sel(ns="y")])), y(ing([ns_sel(ns="x")]))],
        "x/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "other-namespace-policy-irrelevant",
        [policy("z", "p", DENY_ALL_IN)],
        "x/a",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    # --- exemptions: self, own node; hostNetwork pods are not selected
    (
        "pod-to-itself",
        [y(DENY_ALL_IN), policy("y", "out", DENY_ALL_OUT)],
        "y/b",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    ("pod-to-itself-by-ip", [y(DENY_ALL_IN)], "y/b", "198.18.1.12", "80/TCP", ALLOW),
    ("pod-to-own-node", [x(DENY_ALL_OUT)], "x/a", "198.18.0.1", "10250/TCP", ALLOW),
    ("own-node-to-pod", [y(DENY_ALL_IN)], "198.18.0.1", "y/b", "80/TCP", ALLOW),
    ("pod-to-other-node", [x(DENY_ALL_OUT)], "x/a", "198.18.0.2", "10250/TCP", DENY),
    ("other-node-to-pod", [y(DENY_ALL_IN)], "198.18.0.2", "y/b", "80/TCP", DENY),
    ("hostnetwork-pod-not-isolated", [HOSTNET, y(DENY_ALL_IN)], "x/a", "y/h", "80/TCP", ALLOW),
    (
        "hostnetwork-pod-not-a-selector-peer",
        [HOSTNET, y(ing([pods_sel(pod="h")]))],
        "y/h",
        "y/b",
        "80/TCP",
        DENY,
    ),
    ("hostnetwork-pod-own-node-exempt", [HOSTNET, y(DENY_ALL_IN)], "y/h", "y/c", "80/TCP", ALLOW),
    (
        "hostnetwork-pod-matches-node-ipblock",
        [HOSTNET, y(ing([block("198.18.0.2/32")]))],
        "y/h",
        "y/b",
        "80/TCP",
        ALLOW,
    ),
    (
        "finished-pod-not-matched-by-ip",
        [
            pod("z", "done", "198.18.1.99", {"pod": "a"}, phase="Succeeded"),
            y(ing([ns_sel(ns="z")])),
        ],
        "198.18.1.99",
        "y/b",
        "80/TCP",
        DENY,
    ),
]


@pytest.mark.parametrize(
    ("extra", "src", "dst", "port", "expected"), [pytest.param(*c[1:], id=c[0]) for c in CASES]
)
def test_oracle_semantics(extra, src, dst, port, expected):
    state = state_of(model_cluster() + extra)
    number, protocol = parse_port_protocol(port)
    assert verdict(state, src, dst, protocol, number).allowed is expected


def test_case_count_and_unique_ids():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 60
