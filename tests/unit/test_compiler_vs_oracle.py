"""The compiler against the oracle: on random clusters, the IRs of all nodes,
evaluated from addresses and ports alone, decide every connection as the oracle does;
and a node that DNATs a connection to a NodePort backend (on any node) decides it as
the oracle decides the same connection to the backend pod."""

from __future__ import annotations

from ipaddress import ip_address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.compiler.compile import compile_node
from agent.compiler.evaluate import cluster_allows, node_admits
from agent.model.oracle import verdict
from tests.support.builders import (
    NODE_IPS,
    endpoint,
    endpoint_slice,
    model_cluster,
    policy,
    service,
    state_of,
)
from tests.support.strategies import clusters, pod_dict, service_clusters

OUTSIDE = ["198.19.200.7", "198.19.200.8", "198.18.0.1", "198.18.0.2"]
TARGETS = [("TCP", 80), ("TCP", 81), ("UDP", 81), ("TCP", 1080), ("TCP", 1081), ("SCTP", 80)]


def compare_all(state) -> None:
    irs = {n: compile_node(state, n) for n in ("node-1", "node-2")}
    pod_ips = [str(p.ips[0]) for p in state.endpoint_pods]
    for src in pod_ips + OUTSIDE:
        for dst in pod_ips + OUTSIDE:
            if src in OUTSIDE and dst in OUTSIDE:
                continue
            for protocol, port in TARGETS:
                want = verdict(state, src, dst, protocol, port).allowed
                got = cluster_allows(irs, ip_address(src), ip_address(dst), protocol, port)
                assert got == want, f"{src} -> {dst} {port}/{protocol}: IR {got}, oracle {want}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_ir_decides_like_the_oracle(objs):
    compare_all(state_of(objs))


def test_named_ports_resolving_per_destination():
    objs = [
        *model_cluster(),
        pod_dict("y", "web1", "198.18.1.51", {}, "node-1", http_port=80),
        pod_dict("y", "web2", "198.18.2.52", {}, "node-2", http_port=81),
        policy(
            "x",
            "egress-named",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {"ports": [{"port": "serve-81-udp", "protocol": "UDP"}, {"port": "http"}]}
                ],
            },
        ),
        policy(
            "y",
            "ingress-named",
            {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}, {"port": "web"}]}]},
        ),
    ]
    compare_all(state_of(objs))


def compare_dnat(state) -> None:
    """Every node as the one an outside client (or one of its own pods) reached: for
    each backend of a Service balanced across nodes, what the node decides for the
    connection it DNATs there equals the oracle's verdict for client -> backend."""
    for node in ("node-1", "node-2"):
        ir = compile_node(state, node)
        own_pods = [str(p.ips[0]) for p in state.endpoint_pods if p.node_name == node]
        # The node's own address is not a client here: its traffic does not pass FORWARD.
        clients = [c for c in OUTSIDE if c != NODE_IPS[node]] + own_pods
        for backend in state.transit_backends:
            server = backend.ips[0]
            for client in clients:
                for protocol, port in TARGETS:
                    want = verdict(state, client, server, protocol, port).allowed
                    got = node_admits(ir, ip_address(client), server, protocol, port, dnat=True)
                    assert got == want, (
                        f"{node} DNATs {client} -> {backend.ref} {port}/{protocol}: "
                        f"IR {got}, oracle {want}"
                    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(service_clusters())
def test_a_dnating_node_decides_like_the_oracle(objs):
    compare_dnat(state_of(objs))


def test_nodeport_backend_on_another_node_by_ipblock():
    """The issue's case: outside -> NodePort on node-1 -> backend y/c on node-2; an
    ipBlock whose except holds the outside host denies it, the node of y/c is exempt,
    another outside address passes."""
    objs = [
        *model_cluster(),
        service("y", "web", "NodePort", selector={"pod": "c"}),
        endpoint_slice("y", "web-1", "web", [endpoint("198.18.2.13", "y/c")]),
        policy(
            "y",
            "from-outside",
            {
                "podSelector": {"matchLabels": {"pod": "c"}},
                "ingress": [
                    {
                        "from": [
                            {"ipBlock": {"cidr": "198.19.200.0/24", "except": ["198.19.200.7/32"]}}
                        ]
                    }
                ],
            },
        ),
    ]
    state = state_of(objs)
    assert [p.ref for p in state.transit_backends] == ["y/c"]
    compare_dnat(state)
    ir = compile_node(state, "node-1")
    server = ip_address("198.18.2.13")
    assert not node_admits(ir, ip_address("198.19.200.7"), server, "TCP", 80, dnat=True)
    assert node_admits(ir, ip_address("198.19.200.8"), server, "TCP", 80, dnat=True)
    assert node_admits(ir, ip_address("198.18.0.2"), server, "TCP", 80, dnat=True)
    # Not DNATed here: routed through, the backend's own node judges it.
    assert node_admits(ir, ip_address("198.19.200.7"), server, "TCP", 80)


@given(st.just(None))
def test_examples_hold_through_the_ir(_):
    from pathlib import Path

    from agent.manifests import load_state

    for folder in sorted((Path(__file__).parents[2] / "examples").iterdir()):
        if folder.is_dir():
            state, _ = load_state([str(folder)])
            irs = {n: compile_node(state, n) for n in ("node-1", "node-2")}
            for src in state.endpoint_pods:
                for dst in state.endpoint_pods:
                    for protocol, port in [
                        ("TCP", 5432),
                        ("TCP", 8080),
                        ("UDP", 53),
                        ("TCP", 53),
                        ("TCP", 3128),
                        ("TCP", 30100),
                    ]:
                        want = verdict(state, src, dst, protocol, port).allowed
                        assert cluster_allows(irs, src.ips[0], dst.ips[0], protocol, port) == want
