"""Policies -> the rules of one local endpoint: for each direction, "not isolated" or
the clauses that admit traffic, naming the peer sets they use. Both compilers, the full
(compile.py) and the incremental (incremental.py), build endpoints here."""

from __future__ import annotations

from agent.compiler.ir import (
    ALL_PORTS,
    CIDRSet,
    Clause,
    DirectionRules,
    LocalEndpoint,
    NamedPortClause,
    NamedPortSet,
    Origin,
    PeerPortClause,
    PeerSet,
    PortRange,
    SelectorSet,
    TransitEndpoint,
    set_id,
)
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
from agent.model.view import ClusterView


class PeerSets:
    """Peer sets met while compiling, by id: identical definitions share one id."""

    def __init__(self) -> None:
        self.sets: dict[str, PeerSet] = {}

    def add(self, peer_set: PeerSet) -> str:
        sid = set_id(peer_set)
        self.sets.setdefault(sid, peer_set)
        return sid


def endpoint_rules(state: ClusterView, pod: Pod, sets: PeerSets) -> LocalEndpoint:
    """A local endpoint's IR; the peer sets its clauses name are added to `sets`."""
    return LocalEndpoint(
        pod.ref,
        pod.ips,
        direction_rules(state, pod, INGRESS, sets),
        direction_rules(state, pod, EGRESS, sets),
        audited(state.namespaces.get(pod.namespace)),
    )


def transit_rules(
    state: ClusterView, pod: Pod, sets: PeerSets, node_ips: tuple[IPAddress, ...]
) -> TransitEndpoint | None:
    """A transit endpoint's IR (its ingress only: its egress is its own node's to
    judge), or None when nothing isolates its ingress and no node need judge it."""
    ingress = direction_rules(state, pod, INGRESS, sets)
    if ingress is None:
        return None
    audit = audited(state.namespaces.get(pod.namespace))
    return TransitEndpoint(pod.ref, pod.ips, ingress, None, audit, node_ips)


def direction_rules(
    state: ClusterView, pod: Pod, direction: str, sets: PeerSets
) -> DirectionRules | None:
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
    policy: NetworkPolicy, rule: Rule, origin: Origin, pod: Pod, sets: PeerSets
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
