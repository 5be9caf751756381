"""Who is in a peer set right now: the part of the IR that changes when pods come,
go or are relabelled, while clauses stay put. The full compile reads a set's members
from the namespace index (`set_members`); the incremental one adds and takes away what
each changed pod contributes (`pod_members`). Both ask SelectorSet whom a peer chooses
and `_contribution` what a chosen pod adds."""

from __future__ import annotations

from collections.abc import Hashable

from agent.compiler.ir import CIDRSet, NamedPortSet, PeerSet, SelectorSet
from agent.model.objects import Pod
from agent.model.view import ClusterView, is_endpoint


def set_members(state: ClusterView, peer_set: PeerSet) -> frozenset:
    """Addresses of a selector set; (address, protocol, port) of a named-port set.
    CIDR sets have no member list: their prefixes define them."""
    if isinstance(peer_set, CIDRSet):
        return frozenset()
    peer = _selector(peer_set)
    members: set[Hashable] = set()
    for namespace in _namespaces(state, peer):
        # The peer rule in its two halves: each namespace judged once, then its pods.
        if peer is not None and not peer.selects_namespace(
            namespace, state.namespace_labels(namespace)
        ):
            continue
        for pod in state.endpoint_pods_in(namespace):
            if peer is None or peer.selects_pod_labels(pod.labels):
                members.update(_contribution(peer_set, pod))
    return frozenset(members)


def pod_members(state: ClusterView, peer_set: PeerSet, pod: Pod | None) -> list[Hashable]:
    """What one pod adds to a set's members, as set_members counts it."""
    if pod is None or isinstance(peer_set, CIDRSet) or not is_endpoint(pod):
        return []
    peer = _selector(peer_set)
    labels = state.namespace_labels(pod.namespace)
    if peer is not None and not peer.selects(pod.namespace, labels, pod.labels):
        return []
    return _contribution(peer_set, pod)


def _selector(peer_set: SelectorSet | NamedPortSet) -> SelectorSet | None:
    """The selectors that choose a set's pods; None: every pod may contribute."""
    peer = peer_set.peer if isinstance(peer_set, NamedPortSet) else peer_set
    return peer if isinstance(peer, SelectorSet) else None


def _namespaces(state: ClusterView, peer: SelectorSet | None) -> tuple[str, ...]:
    """The namespaces whose pods can be chosen: an index narrowing only (which of them
    the peer chooses is SelectorSet's to say)."""
    if peer is None or peer.namespace_selector is not None:
        return state.namespace_names
    return (peer.namespace,) if peer.namespace is not None else ()


def _contribution(peer_set: SelectorSet | NamedPortSet, pod: Pod) -> list[Hashable]:
    """What a pod the set's peer chooses adds: its addresses to a selector set;
    (address, protocol, port) for each of its ports of that name to a named-port set."""
    if isinstance(peer_set, SelectorSet):
        return list(pod.ips)
    peer = peer_set.peer
    ports = pod.named_ports(peer_set.port_name, peer_set.protocol)
    return [
        (ip, peer_set.protocol, port)
        for ip in pod.ips
        # An ipBlock peer admits only the pod addresses inside the block.
        if not (isinstance(peer, CIDRSet) and not peer.contains(ip))
        for port in ports
    ]
