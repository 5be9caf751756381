"""The oracle on a dual-stack cluster: every address of a pod is that pod, ipBlocks match
their own family only, and the family of the connection decides where that matters."""

from __future__ import annotations

from typing import Any

import pytest

from agent.model.matrix import matrix_pods, oracle_matrix
from agent.model.oracle import verdict
from tests.support.builders import policy, state_of

V4 = {"x/a": "198.18.1.2", "y/b": "198.18.2.3"}
V6 = {"x/a": "2001:2:0:1::2", "y/b": "2001:2:0:2::3"}
NODES = {"node-1": ("198.18.0.1", "2001:2::1"), "node-2": ("198.18.0.2", "2001:2::2")}


def dual_stack_pod(ref: str, node: str) -> dict[str, Any]:
    ns, name = ref.split("/")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"pod": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "agnhost"}]},
        "status": {
            "phase": "Running",
            "hostIP": NODES[node][0],
            "podIP": V4[ref],
            "podIPs": [{"ip": V4[ref]}, {"ip": V6[ref]}],
        },
    }


def cluster(*policies: dict[str, Any]) -> Any:
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": a} for a in addresses]},
        }
        for name, addresses in NODES.items()
    ]
    objs += [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": {"ns": n}}}
        for n in "xy"
    ]
    objs += [dual_stack_pod("x/a", "node-1"), dual_stack_pod("y/b", "node-2")]
    return state_of([*objs, *policies])


def from_block(cidr: str) -> dict[str, Any]:
    return policy(
        "y", "p", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]}
    )


@pytest.mark.parametrize(
    ("cidr", "over_ipv4", "over_ipv6"),
    [
        ("198.18.1.2/32", True, False),
        ("198.18.1.0/24", True, False),
        ("2001:2:0:1::2/128", False, True),
        ("2001:2:0:1::/64", False, True),
        ("0.0.0.0/0", True, False),
        ("::/0", False, True),
    ],
)
def test_an_ipblock_matches_its_own_family_only(cidr, over_ipv4, over_ipv6):
    state = cluster(from_block(cidr))
    assert verdict(state, "x/a", "y/b", "TCP", 80, family=4).allowed is over_ipv4
    assert verdict(state, "x/a", "y/b", "TCP", 80, family=6).allowed is over_ipv6
    # An address given names its family; the pod behind it is the same pod.
    assert verdict(state, V4["x/a"], V4["y/b"], "TCP", 80).allowed is over_ipv4
    assert verdict(state, V6["x/a"], V6["y/b"], "TCP", 80).allowed is over_ipv6
    assert verdict(state, V6["x/a"], "y/b", "TCP", 80).dst.ip.version == 6


def test_selectors_admit_and_deny_alike_on_both_families():
    allow_x = policy(
        "y",
        "p",
        {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}],
        },
    )
    deny = policy("y", "d", {"podSelector": {}})
    for objs, want in (((allow_x,), True), ((deny,), False), ((), True)):
        state = cluster(*objs)
        pods = matrix_pods(state)
        assert oracle_matrix(state, pods, "TCP", 80, 4) == oracle_matrix(state, pods, "TCP", 80, 6)
        assert verdict(state, "x/a", "y/b", "TCP", 80, family=6).allowed is want


def test_a_node_is_its_own_address_of_the_family():
    state = cluster(from_block("2001:2::1/128"))
    found = verdict(state, "2001:2::1", "y/b", "TCP", 80)
    assert found.src.is_node and found.src.node == "node-1" and found.allowed
    assert not verdict(state, "198.18.0.1", "y/b", "TCP", 80).allowed
    # Traffic between a pod and its own node passes on either family.
    deny = cluster(policy("y", "d", {"podSelector": {}}))
    assert verdict(deny, "2001:2::2", "y/b", "TCP", 80).allowed
    assert verdict(deny, "198.18.0.2", "y/b", "TCP", 80).allowed
