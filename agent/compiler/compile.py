"""Cluster state + node name -> NodeIR. The same semantics as the oracle, stated in
addresses and ports; tests hold the two to each other on random clusters."""

from __future__ import annotations

from agent.compiler.ir import CIDRSet, IdentityKey, NodeIR, identity_key
from agent.compiler.members import set_members
from agent.compiler.rules import PeerSets, endpoint_rules
from agent.model.objects import IPAddress
from agent.model.view import ClusterView, local_endpoints


def compile_node(state: ClusterView, node: str) -> NodeIR:
    sets = PeerSets()
    endpoints = {pod.ref: endpoint_rules(state, pod, sets) for pod in local_endpoints(state, node)}
    members = {
        sid: set_members(state, s) for sid, s in sets.sets.items() if not isinstance(s, CIDRSet)
    }
    return NodeIR(
        node,
        node_addresses(state, node),
        endpoints,
        dict(sorted(sets.sets.items())),
        members,
        pod_addresses(state),
    )


def node_addresses(state: ClusterView, node: str) -> tuple[IPAddress, ...]:
    """The node's own addresses: traffic between them and local pods is always allowed."""
    found: list[IPAddress] = []
    if node in state.nodes:
        found += state.nodes[node].addresses
    found += [p.host_ip for p in state.pods_on(node) if p.host_ip]
    return tuple(dict.fromkeys(found))


def pod_addresses(state: ClusterView) -> dict[IPAddress, IdentityKey]:
    """Every policed pod address, with its identity key."""
    return {
        ip: identity_key(state.namespace_labels(pod.namespace), pod.labels)
        for pod in state.endpoint_pods
        for ip in pod.ips
    }
