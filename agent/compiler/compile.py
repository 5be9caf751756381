"""Cluster state + node name -> NodeIR. The same semantics as the oracle, stated in
addresses and ports; tests hold the two to each other on random clusters."""

from __future__ import annotations

from agent.compiler.ir import (
    ALL_PORTS,
    CIDRSet,
    Clause,
    DirectionRules,
    IdentityKey,
    LocalEndpoint,
    NamedPortClause,
    NamedPortSet,
    NodeIR,
    Origin,
    PeerPortClause,
    PeerSet,
    PortRange,
    SelectorSet,
    identity_key,
    set_id,
)
from agent.compiler.members import set_members
from agent.model.annotations import audited
from agent.model.objects import (
    EGRESS,
    INGRESS,
    IPAddress,
    IPBlockPeer,
    NetworkPolicy,
    Peer,
    Pod,
    Rule,
)
from agent.model.state import ClusterState


def local_endpoints(state: ClusterState, node: str) -> list[Pod]:
    """The node's pods under policy: not hostNetwork, not finished, with an address."""
    return [p for p in state.pods_on(node) if not p.host_network and not p.is_terminal and p.ips]


def node_addresses(state: ClusterState, node: str) -> tuple[IPAddress, ...]:
    """The node's own addresses: traffic between them and local pods is always allowed."""
    found: list[IPAddress] = []
    if node in state.nodes:
        found += state.nodes[node].addresses
    found += [p.host_ip for p in state.pods_on(node) if p.host_ip]
    return tuple(dict.fromkeys(found))


class _Sets:
    """Peer sets met while compiling, by id: identical definitions share one id."""

    def __init__(self) -> None:
        self.sets: dict[str, PeerSet] = {}

    def add(self, peer_set: PeerSet) -> str:
        sid = set_id(peer_set)
        self.sets.setdefault(sid, peer_set)
        return sid


def compile_node(state: ClusterState, node: str) -> NodeIR:
    sets = _Sets()
    endpoints = {
        pod.ref: LocalEndpoint(
            pod.ref,
            pod.ips,
            _direction(state, pod, INGRESS, sets),
            _direction(state, pod, EGRESS, sets),
            audited(state.namespaces.get(pod.namespace)),
        )
        for pod in local_endpoints(state, node)
    }
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


def pod_addresses(state: ClusterState) -> dict[IPAddress, IdentityKey]:
    """Every policed pod address, with its identity key."""
    return {
        ip: identity_key(state.namespace_labels(pod.namespace), pod.labels)
        for pod in state.endpoint_pods
        for ip in pod.ips
    }


def _direction(state: ClusterState, pod: Pod, direction: str, sets: _Sets) -> DirectionRules | None:
    # A pod is isolated for a direction only if a policy selecting it has that type.
    isolating = [
        p
        for p in state.policies_in(pod.namespace)
        if p.isolates(direction) and p.pod_selector.matches(pod.labels)
    ]
    if not isolating:
        return None
    clauses: list[Clause] = []
    for policy in isolating:
        for i, rule in enumerate(policy.rules(direction)):
            clauses += _rule_clauses(policy, rule, Origin(policy.ref, direction, i), pod, sets)
    return DirectionRules(tuple(p.ref for p in isolating), tuple(clauses))


def _peer_set(policy: NetworkPolicy, peer: Peer) -> SelectorSet | CIDRSet:
    if isinstance(peer, IPBlockPeer):
        return CIDRSet(peer.cidr, tuple(sorted(peer.excepts, key=str)))
    # Without a namespaceSelector, the podSelector picks pods of the policy's namespace.
    namespace = policy.namespace if peer.namespace_selector is None else None
    return SelectorSet(peer.namespace_selector, namespace, peer.pod_selector)


def _rule_clauses(
    policy: NetworkPolicy, rule: Rule, origin: Origin, pod: Pod, sets: _Sets
) -> list[Clause]:
    # A rule without peers admits every peer; without ports, every port and protocol.
    peers = [_peer_set(policy, p) for p in rule.peers]

    def peer_ids() -> tuple[str, ...] | None:
        # Registered only when a clause uses them: an unused set is not programmed.
        return tuple(sorted({sets.add(p) for p in peers})) if peers else None

    if not rule.ports:
        return [PeerPortClause(peer_ids(), None, origin)]
    ranges: set[PortRange] = set()
    clauses: list[Clause] = []
    for spec in rule.ports:
        if spec.port is None:
            ranges.add(PortRange(spec.protocol, *ALL_PORTS))
        elif isinstance(spec.port, int):
            ranges.add(PortRange(spec.protocol, spec.port, spec.end_port or spec.port))
        elif origin.direction == INGRESS:
            # Named ports resolve against the destination pod: here, the local pod.
            ranges |= {
                PortRange(spec.protocol, n, n) for n in pod.named_ports(spec.port, spec.protocol)
            }
        else:
            # Egress: the destination is the peer, so the port depends on the peer.
            for peer in peers or [None]:
                named = NamedPortSet(peer, spec.port, spec.protocol)
                clauses.append(NamedPortClause(sets.add(named), origin))
    if ranges:
        clauses.insert(0, PeerPortClause(peer_ids(), tuple(sorted(ranges)), origin))
    return clauses
