"""One view of cluster state: the snapshot and the live state both are a ClusterView and
read alike; one endpoint predicate; one peer rule (SelectorSet.selects) behind the
compilers' and the eBPF planner's membership questions."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest
from hypothesis import given, settings

from agent.compiler.ir import CIDRSet, NamedPortSet, SelectorSet, identity_key, selects_identity
from agent.compiler.members import pod_members, set_members
from agent.model.live import LiveState
from agent.model.objects import Pod
from agent.model.parse import parse_object
from agent.model.selectors import LabelSelector
from agent.model.state import ClusterState
from agent.model.view import ClusterView, is_endpoint, is_local_endpoint, local_endpoints
from tests.support.builders import model_cluster, pod, state_of
from tests.support.strategies import NAMESPACES, clusters, service_clusters

# What random clusters lack and the predicate must tell apart.
ODD_PODS = [
    pod("y", "host", "198.18.0.1", host_network=True),
    pod("y", "done", "198.18.1.90", phase="Failed"),
    pod("y", "pending", None),
    pod("elsewhere", "a", "198.18.2.91", {"pod": "a"}, node="node-2"),
    pod("z", "twin", "198.18.1.11", {"pod": "twin"}),  # an address another pod holds
]


def both(objs: list[dict]) -> tuple[ClusterState, LiveState]:
    state = ClusterState.from_objects(parse_object(o) for o in objs)
    return state, LiveState.from_state(state)


def reads(view: ClusterView) -> dict:
    names = (*NAMESPACES, "elsewhere", "absent")
    ips = [ip_address(f"198.18.{s}.{n}") for s in (0, 1, 2) for n in range(1, 100)]
    return {
        "namespace_names": view.namespace_names,
        "endpoint_pods": view.endpoint_pods,
        "in": {ns: view.endpoint_pods_in(ns) for ns in names},
        "labels": {ns: view.namespace_labels(ns) for ns in names},
        "policies": {ns: view.policies_in(ns) for ns in names},
        "on": {n: view.pods_on(n) for n in ("node-1", "node-2", "node-3")},
        "by_ip": {ip: view.endpoint_pod_with_ip(ip) for ip in ips},
        "local": {n: local_endpoints(view, n) for n in ("node-1", "node-2")},
        "services": dict(view.services),
        "slices": dict(view.endpoint_slices),
        "transit_backends": view.transit_backends,
    }


def test_both_state_shapes_are_the_view():
    state, live = both(model_cluster())
    assert isinstance(state, ClusterView)
    assert isinstance(live, ClusterView)


@given(clusters())
@settings(max_examples=60, deadline=None)
def test_snapshot_and_live_state_read_alike(objs):
    state, live = both([*objs, *ODD_PODS])
    assert reads(state) == reads(live)


@given(service_clusters())
@settings(max_examples=60, deadline=None)
def test_snapshot_and_live_state_read_services_alike(objs):
    state, live = both([*objs, *ODD_PODS])
    assert reads(state) == reads(live)


@pytest.mark.parametrize(
    ("name", "endpoint", "local_on_node_1"),
    [
        ("x/a", True, True),
        ("y/host", False, False),  # hostNetwork: node traffic
        ("y/done", False, False),  # finished
        ("y/pending", True, False),  # no address yet: nothing to match on
        ("elsewhere/a", True, False),  # another node's
    ],
)
def test_endpoint_predicates(name, endpoint, local_on_node_1):
    found: Pod = state_of([*model_cluster(), *ODD_PODS]).pods[name]
    assert is_endpoint(found) is endpoint
    assert is_local_endpoint(found, "node-1") is local_on_node_1


TEAM_A = LabelSelector((("team", "a"),))
POD_A = LabelSelector((("pod", "a"),))


@pytest.mark.parametrize(
    ("peer", "namespace", "namespace_labels", "pod_labels", "chosen"),
    [
        (SelectorSet(None, "x", POD_A), "x", {}, {"pod": "a"}, True),
        (SelectorSet(None, "x", POD_A), "y", {}, {"pod": "a"}, False),  # own namespace only
        (SelectorSet(None, "x", None), "x", {}, {"pod": "b"}, True),  # every pod there
        (SelectorSet(TEAM_A, None, POD_A), "y", {"team": "a"}, {"pod": "a"}, True),
        (SelectorSet(TEAM_A, None, POD_A), "y", {"team": "b"}, {"pod": "a"}, False),
        (SelectorSet(TEAM_A, None, POD_A), "y", {"team": "a"}, {"pod": "b"}, False),  # AND
        (SelectorSet(TEAM_A, None, None), "z", {"team": "a"}, {}, True),
    ],
)
def test_the_peer_rule(peer, namespace, namespace_labels, pod_labels, chosen):
    assert peer.selects(namespace, namespace_labels, pod_labels) is chosen
    named = {**namespace_labels, "kubernetes.io/metadata.name": namespace}
    assert selects_identity(peer, identity_key(named, pod_labels)) is chosen


@given(clusters())
@settings(max_examples=60, deadline=None)
def test_set_members_are_the_sum_of_pod_members(objs):
    state = state_of([*objs, *ODD_PODS])
    web, db = LabelSelector((("app", "web"),)), LabelSelector((("tier", "db"),))
    peers = [
        SelectorSet(None, "x", web),
        SelectorSet(None, "elsewhere", None),
        SelectorSet(db, None, None),
        SelectorSet(LabelSelector(), None, web),
        SelectorSet(web, None, db),
    ]
    cidr = CIDRSet(ip_network("198.18.1.0/24"), (ip_network("198.18.1.8/29"),))
    peers += [NamedPortSet(p, "web", "TCP") for p in (*peers, cidr, None)]
    for peer in peers:
        summed = {m for p in state.pods.values() for m in pod_members(state, peer, p)}
        assert set_members(state, peer) == summed
    assert set_members(state, cidr) == frozenset()  # its prefixes define it
