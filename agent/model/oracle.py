"""The oracle: the single statement of NetworkPolicy semantics in Picket.

`verdict(state, src, dst, protocol, port)` says whether a new connection from `src` to
`dst` is allowed, and why. Backends are tested against it; `picket explain` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address

from agent.model.endpoints import Endpoint, resolve
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


@dataclass(frozen=True)
class RuleCheck:
    """One rule of an isolating policy, and whether it matched peer and port."""

    policy: str
    direction: str
    index: int
    peer_matched: bool
    port_matched: bool

    @property
    def admits(self) -> bool:
        return self.peer_matched and self.port_matched

    @property
    def field(self) -> str:
        return f"spec.{self.direction.lower()}[{self.index}]"


@dataclass(frozen=True)
class DirectionVerdict:
    """The decision of one side: the source pod's egress or the destination's ingress.

    `subject` is the pod whose policies apply, or None when that side is not a pod
    under NetworkPolicy (an external address, a node, a hostNetwork pod)."""

    direction: str
    subject: str | None
    isolated: bool
    policies: tuple[str, ...]
    rules: tuple[RuleCheck, ...]

    @property
    def allowed(self) -> bool:
        return not self.isolated or any(r.admits for r in self.rules)

    @property
    def allowed_by(self) -> tuple[RuleCheck, ...]:
        return tuple(r for r in self.rules if r.admits)


@dataclass(frozen=True)
class Verdict:
    src: Endpoint
    dst: Endpoint
    protocol: str
    port: int | None
    egress: DirectionVerdict
    ingress: DirectionVerdict
    exemption: str | None

    @property
    def allowed(self) -> bool:
        # Both the source's egress and the destination's ingress must allow.
        return self.exemption is not None or (self.egress.allowed and self.ingress.allowed)

    @property
    def target(self) -> str:
        if self.port is None:
            return self.protocol
        return f"{self.port}/{self.protocol}"


def verdict(
    state: ClusterState,
    src: Pod | IPAddress | str,
    dst: Pod | IPAddress | str,
    protocol: str = "TCP",
    port: int | None = None,
    family: int | None = None,
) -> Verdict:
    """Whether a new `protocol` connection from `src` to `dst` on `port` is allowed.

    `src` and `dst` are pods, `namespace/name` strings or IP addresses; an address that
    belongs to a pod or a node is treated as that pod or node. `family` (4 or 6) is the
    connection's address family, which decides the address a pod or node has in it
    (None: the family of an address given, else the pods' primary one): ipBlocks match
    addresses of their own family only, so it matters where an ipBlock decides."""
    protocol = protocol.upper()
    if family is None:
        given = [w for w in (src, dst) if not isinstance(w, (Pod, str))]
        given += [_address(w) for w in (src, dst) if isinstance(w, str)]
        family = next((ip.version for ip in given if ip is not None), None)
    source, destination = resolve(state, src, family), resolve(state, dst, family)
    egress = _direction(state, EGRESS, source, destination, destination, protocol, port)
    ingress = _direction(state, INGRESS, destination, source, destination, protocol, port)
    return Verdict(
        source, destination, protocol, port, egress, ingress, _exemption(source, destination)
    )


def _address(text: str) -> IPAddress | None:
    try:
        return ip_address(text)
    except ValueError:
        return None


def _exemption(src: Endpoint, dst: Endpoint) -> str | None:
    if src.is_pod and dst.is_pod and src.pod == dst.pod:
        return "a pod may always reach itself"
    if src.ip is not None and src.ip == dst.ip:
        return "a pod may always reach itself"
    if (src.is_pod and dst.is_node and src.node == dst.node) or (
        src.is_node and dst.is_pod and src.node == dst.node
    ):
        return "traffic between a pod and its own node is always allowed"
    return None


def _direction(
    state: ClusterState,
    direction: str,
    subject: Endpoint,
    peer: Endpoint,
    destination: Endpoint,
    protocol: str,
    port: int | None,
) -> DirectionVerdict:
    if not subject.is_pod:
        return DirectionVerdict(direction, None, False, (), ())
    pod = subject.pod
    assert pod is not None
    # A pod is isolated for a direction only if a policy selecting it has that type.
    isolating = [
        p
        for p in state.policies_in(pod.namespace)
        if p.isolates(direction) and p.pod_selector.matches(pod.labels)
    ]
    dst_pod = destination.pod if destination.is_pod else None
    checks = tuple(
        RuleCheck(
            policy.ref,
            direction,
            i,
            peer_matches(state, policy, rule, peer),
            ports_match(rule, protocol, port, dst_pod),
        )
        for policy in isolating
        for i, rule in enumerate(policy.rules(direction))
    )
    return DirectionVerdict(
        direction, pod.ref, bool(isolating), tuple(p.ref for p in isolating), checks
    )


def peer_matches(state: ClusterState, policy: NetworkPolicy, rule: Rule, peer: Endpoint) -> bool:
    """Separate peers mean OR; a rule without peers admits every peer."""
    if not rule.peers:
        return True
    return any(_one_peer_matches(state, policy, p, peer) for p in rule.peers)


def _one_peer_matches(
    state: ClusterState, policy: NetworkPolicy, peer: Peer, endpoint: Endpoint
) -> bool:
    if isinstance(peer, IPBlockPeer):
        # ipBlock matches addresses, pod addresses included, minus the excepts.
        return endpoint.ip is not None and peer.contains(endpoint.ip)
    if not endpoint.is_pod:
        return False
    pod = endpoint.pod
    assert pod is not None
    # namespaceSelector and podSelector in one peer mean AND; without a
    # namespaceSelector, the podSelector picks pods of the policy's own namespace.
    if peer.namespace_selector is None:
        if pod.namespace != policy.namespace:
            return False
    elif not peer.namespace_selector.matches(state.namespace_labels(pod.namespace)):
        return False
    return peer.pod_selector is None or peer.pod_selector.matches(pod.labels)


def ports_match(rule: Rule, protocol: str, port: int | None, dst_pod: Pod | None) -> bool:
    """A rule without ports admits every port and protocol. Named ports resolve against
    the destination pod's container ports of the same protocol."""
    if not rule.ports:
        return True
    for spec in rule.ports:
        if spec.protocol != protocol:
            continue
        if spec.port is None:
            return True
        if port is None:
            continue
        if isinstance(spec.port, str):
            if dst_pod is not None and port in dst_pod.named_ports(spec.port, protocol):
                return True
        elif spec.port <= port <= (spec.end_port or spec.port):
            return True
    return False
