"""Cluster state + node name -> NodeIR. The same semantics as the oracle, stated in
addresses and ports; tests hold the two to each other on random clusters."""

from __future__ import annotations

from agent.compiler.ir import CIDRSet, IdentityKey, NodeIR, TransitEndpoint, identity_key
from agent.compiler.members import set_members
from agent.compiler.rules import PeerSets, endpoint_rules, transit_rules
from agent.model.objects import IPAddress, IPNetwork, Pod
from agent.model.view import ClusterView, local_endpoints


def compile_node(state: ClusterView, node: str) -> NodeIR:
    sets = PeerSets()
    endpoints = {pod.ref: endpoint_rules(state, pod, sets) for pod in local_endpoints(state, node)}
    transit = transit_endpoints(state, node, sets)
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
        transit,
        peer_node_addresses(state, node),
        node_pod_cidrs(state, node),
    )


def transit_candidates(state: ClusterView, node: str) -> list[Pod]:
    """Pods of other nodes that `node` may DNAT outside traffic to, with an address."""
    return [p for p in state.transit_backends if p.node_name != node and p.ips]


def transit_endpoints(state: ClusterView, node: str, sets: PeerSets) -> dict[str, TransitEndpoint]:
    """The transit endpoints of `node`: the candidates isolated for ingress."""
    node_ips: dict[str | None, tuple[IPAddress, ...]] = {}
    found = {}
    for pod in transit_candidates(state, node):
        if pod.node_name not in node_ips:
            node_ips[pod.node_name] = own_node_addresses(state, pod)
        endpoint = transit_rules(state, pod, sets, node_ips[pod.node_name])
        if endpoint is not None:
            found[pod.ref] = endpoint
    return found


def own_node_addresses(state: ClusterView, pod: Pod) -> tuple[IPAddress, ...]:
    """The addresses of a pod's node (none for a pod not bound to one)."""
    return node_addresses(state, pod.node_name) if pod.node_name else ()


def node_addresses(state: ClusterView, node: str) -> tuple[IPAddress, ...]:
    """The node's own addresses: traffic between them and local pods is always allowed."""
    found: list[IPAddress] = []
    if node in state.nodes:
        found += state.nodes[node].addresses
    found += [ip for p in state.pods_on(node) for ip in p.host_ips]
    return tuple(dict.fromkeys(found))


def node_pod_cidrs(state: ClusterView, node: str) -> tuple[IPNetwork, ...]:
    """The node's pod address ranges, from its Node object (none before it has one)."""
    return state.nodes[node].pod_cidrs if node in state.nodes else ()


def peer_node_addresses(state: ClusterView, node: str) -> tuple[IPAddress, ...]:
    """The addresses of every other node (its Node object's), sorted."""
    found = {ip for name, n in state.nodes.items() if name != node for ip in n.addresses}
    return tuple(sorted(found, key=lambda ip: (ip.version, ip)))


def pod_addresses(state: ClusterView) -> dict[IPAddress, IdentityKey]:
    """Every policed pod address, with its identity key."""
    return {
        ip: identity_key(state.namespace_labels(pod.namespace), pod.labels)
        for pod in state.endpoint_pods
        for ip in pod.ips
    }
