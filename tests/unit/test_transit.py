"""Transit endpoints: which pods of other nodes a node judges the ingress of, for the
connections it DNATs to them (NodePort/LoadBalancer/externalIPs Services with
externalTrafficPolicy Cluster), and how they reach the IR, its diff, the live state's
changes and `picket compile`."""

from __future__ import annotations

import dataclasses
from ipaddress import ip_address

import pytest

from agent.compiler.compile import compile_node
from agent.compiler.describe import describe_ir_json, describe_ir_text
from agent.compiler.diff import IRDiff, diff_ir
from agent.compiler.evaluate import node_admits, transit_by_ip
from agent.compiler.ir import TransitEndpoint
from agent.compiler.narrowing import narrows
from agent.model.live import LiveState
from agent.model.parse import parse_object
from tests.support.builders import (
    endpoint,
    endpoint_slice,
    model_cluster,
    namespace,
    pod,
    policy,
    service,
    state_of,
)
from tests.support.transit import ISOLATE_Y, C, web

EGRESS_ONLY_Y = policy("y", "egress", {"podSelector": {}, "policyTypes": ["Egress"]})


def transit_on(objs: list, node: str = "node-1") -> list[str]:
    return list(compile_node(state_of(objs), node).transit)


@pytest.mark.parametrize(
    ("objs", "want"),
    [
        pytest.param(web(ISOLATE_Y), ["y/c"], id="nodeport-cluster"),
        pytest.param(web(ISOLATE_Y, traffic_policy="Cluster"), ["y/c"], id="nodeport-explicit"),
        pytest.param(web(ISOLATE_Y, traffic_policy="Local"), [], id="nodeport-local"),
        pytest.param(web(ISOLATE_Y, service_type="LoadBalancer"), ["y/c"], id="loadbalancer"),
        pytest.param(web(ISOLATE_Y, service_type="ClusterIP"), [], id="clusterip"),
        pytest.param(
            web(ISOLATE_Y, service_type="ClusterIP", external_ips=["198.19.100.1"]),
            ["y/c"],
            id="clusterip-with-external-ips",
        ),
        pytest.param(web(ISOLATE_Y, service_type="ExternalName"), [], id="externalname"),
        pytest.param(web(), [], id="not-isolated"),
        pytest.param(web(EGRESS_ONLY_Y), [], id="isolated-for-egress-only"),
        pytest.param(
            web(ISOLATE_Y, endpoints=[endpoint("198.18.2.13", ready=False)]), [], id="not-ready"
        ),
        pytest.param(
            web(ISOLATE_Y, endpoints=[endpoint("198.18.2.13", ready=None)]),
            ["y/c"],
            id="ready-null-means-ready",
        ),
        pytest.param(
            web(ISOLATE_Y, endpoints=[endpoint("198.18.2.13", ready=False, serving=True)]),
            ["y/c"],
            id="terminating-but-serving",
        ),
        pytest.param(
            web(ISOLATE_Y, endpoints=[endpoint("198.19.100.9", "y/c")]),
            ["y/c"],
            id="by-target-ref",
        ),
        pytest.param(web(ISOLATE_Y, endpoints=[endpoint("198.18.2.13")]), ["y/c"], id="by-address"),
        pytest.param(
            web(ISOLATE_Y, endpoints=[endpoint("198.18.1.11", "y/a")]),
            [],
            id="backend-on-this-node-is-local",
        ),
        pytest.param(
            web(
                ISOLATE_Y,
                pod("y", "host", "198.18.0.2", node="node-2", host_network=True),
                endpoints=[endpoint("198.18.0.2", "y/host")],
            ),
            [],
            id="host-network-backend",
        ),
        pytest.param(
            web(
                ISOLATE_Y,
                pod("y", "done", "198.18.2.90", node="node-2", phase="Succeeded"),
                endpoints=[endpoint("198.18.2.90", "y/done")],
            ),
            [],
            id="finished-backend",
        ),
        pytest.param(
            [*model_cluster(), ISOLATE_Y, endpoint_slice("y", "orphan", "gone", [C])],
            [],
            id="slice-of-no-service",
        ),
        pytest.param(
            [*model_cluster(), ISOLATE_Y, service("y", "web"), endpoint_slice("y", "s", None, [C])],
            [],
            id="slice-without-service-label",
        ),
        pytest.param(
            [
                *model_cluster(),
                ISOLATE_Y,
                service("x", "web"),
                endpoint_slice("y", "w", "web", [C]),
            ],
            [],
            id="service-of-that-name-in-another-namespace",
        ),
        pytest.param(
            [*web(ISOLATE_Y), endpoint_slice("y", "web-2", "web", None)],
            ["y/c"],
            id="null-endpoints-beside-a-full-slice",
        ),
    ],
)
def test_transit_selection(objs, want):
    assert transit_on(objs) == want


def test_a_transit_endpoint_is_its_ingress_with_its_node_and_sets():
    admit_x = policy(
        "y",
        "from-x",
        {
            "podSelector": {"matchLabels": {"pod": "c"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}],
        },
    )
    audited = namespace("y", ns="y")
    audited["metadata"]["annotations"] = {"picket.io/enforcement": "audit"}
    ir = compile_node(state_of(web(admit_x)), "node-1")
    endpoint_c = ir.transit["y/c"]
    assert isinstance(endpoint_c, TransitEndpoint)
    assert endpoint_c.ips == (ip_address("198.18.2.13"),)
    assert endpoint_c.egress is None and not endpoint_c.audit
    assert endpoint_c.node_ips == (ip_address("198.18.0.2"),)
    assert endpoint_c.ingress is not None and endpoint_c.ingress.policies == ("y/from-x",)
    (sid,) = endpoint_c.ingress.clauses[0].peers
    x_pods = {ip_address(a) for a in ("198.18.1.1", "198.18.1.2", "198.18.2.3")}
    assert ir.sets[sid] is not None and ir.members[sid] == x_pods
    assert transit_by_ip(ir) == {ip_address("198.18.2.13"): "y/c"}
    assert "y/c" not in ir.endpoints  # another node's pod is not a local endpoint
    assert compile_node(state_of(web(admit_x, audited)), "node-1").transit["y/c"].audit


def test_dnat_judges_the_transit_ingress():
    ir = compile_node(state_of(web(ISOLATE_Y)), "node-1")
    outside, c = ip_address("198.19.200.7"), ip_address("198.18.2.13")
    x_a = ip_address("198.18.1.1")  # a pod of node-1 through its own node's NodePort
    assert not node_admits(ir, outside, c, "TCP", 80, dnat=True)
    assert not node_admits(ir, x_a, c, "TCP", 80, dnat=True)
    assert node_admits(ir, ip_address("198.18.0.2"), c, "TCP", 80, dnat=True)  # c's node
    assert node_admits(ir, outside, c, "TCP", 80)  # routed through, not DNATed here
    assert node_admits(ir, outside, c, "TCP", 80, dnat=True, transit={})


def test_the_diff_carries_transit_changes():
    before = compile_node(state_of(web(ISOLATE_Y)), "node-1")
    none = compile_node(state_of(web()), "node-1")
    tighter = policy("y", "more", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]})
    after = compile_node(state_of(web(ISOLATE_Y, tighter)), "node-1")
    added = diff_ir(none, before)
    assert set(added.transit_added) == {"y/c"} and not added.empty and narrows(added)
    changed = diff_ir(before, after)
    assert set(changed.transit_changed) == {"y/c"} and narrows(changed)
    removed = diff_ir(before, none)
    assert removed.transit_removed == ("y/c",) and not removed.empty
    # Judged here no more only widens (y/a's own change above narrows, it is local).
    assert not narrows(IRDiff(transit_removed=("y/c",)))
    assert not IRDiff(transit_removed=("y/c",)).empty
    assert diff_ir(before, before).empty


def test_live_state_records_service_changes():
    live = LiveState.from_state(state_of(web(ISOLATE_Y)))
    assert not live.take_changes().services
    live.put(parse_object(service("y", "web", traffic_policy="Local")))
    assert live.take_changes().services
    assert live.transit_backends == ()
    live.put(parse_object(service("y", "web", traffic_policy="Local")))
    assert live.take_changes().empty  # the same object again changes nothing
    live.remove("EndpointSlice", "y/web-1")
    changes = live.take_changes()
    assert changes.services and not changes.empty
    assert live.slices_of("y/web") == ()


def test_picket_compile_shows_transit_endpoints():
    ir = compile_node(state_of(web(ISOLATE_Y)), "node-1")
    text = describe_ir_text(ir)
    assert "transit endpoints (pods of other nodes behind NodePort" in text
    assert "transit y/c 198.18.2.13 (its node: 198.18.0.2)" in text
    assert "  ingress: isolated by y/isolate" in text
    doc = describe_ir_json(ir)
    assert doc["transit"]["y/c"]["nodeIPs"] == ["198.18.0.2"]
    assert doc["transit"]["y/c"]["ingress"]["policies"] == ["y/isolate"]
    plain = compile_node(state_of([*model_cluster(), ISOLATE_Y]), "node-1")
    assert "transit" not in describe_ir_text(plain)
    assert describe_ir_json(plain)["transit"] == {}
    assert dataclasses.replace(ir, transit={}) == plain
