"""Who is in a peer set right now: the part of the IR that changes when pods come,
go or are relabelled, while clauses stay put."""

from __future__ import annotations

from agent.compiler.ir import CIDRSet, NamedPortSet, PeerSet, SelectorSet
from agent.model.objects import Pod
from agent.model.state import ClusterState


def selector_pods(state: ClusterState, peer: SelectorSet) -> list[Pod]:
    """namespaceSelector AND podSelector; a null pod selector means every pod."""
    if peer.namespace_selector is None:
        namespaces = [peer.namespace] if peer.namespace is not None else []
    else:
        namespaces = [
            ns
            for ns in state.namespace_names
            if peer.namespace_selector.matches(state.namespace_labels(ns))
        ]
    return [
        pod
        for ns in namespaces
        for pod in state.endpoint_pods_in(ns)
        if peer.pod_selector is None or peer.pod_selector.matches(pod.labels)
    ]


def set_members(state: ClusterState, peer_set: PeerSet) -> frozenset:
    """Addresses of a selector set; (address, protocol, port) of a named-port set.
    CIDR sets have no member list: their prefixes define them."""
    if isinstance(peer_set, SelectorSet):
        return frozenset(ip for pod in selector_pods(state, peer_set) for ip in pod.ips)
    if isinstance(peer_set, NamedPortSet):
        return _named_members(state, peer_set)
    return frozenset()


def _named_members(state: ClusterState, named: NamedPortSet) -> frozenset:
    peer = named.peer
    pods = (
        selector_pods(state, peer) if isinstance(peer, SelectorSet) else list(state.endpoint_pods)
    )
    members = set()
    for pod in pods:
        ports = pod.named_ports(named.port_name, named.protocol)
        for ip in pod.ips:
            # An ipBlock peer admits only the pod addresses inside the block.
            if isinstance(peer, CIDRSet) and not peer.contains(ip):
                continue
            members.update((ip, named.protocol, port) for port in ports)
    return frozenset(members)
