"""A userspace mirror of the datapath: decide from addresses and ports alone, as a
backend must, using only the IR. Tests hold it to the oracle; backends are held to it."""

from __future__ import annotations

from collections.abc import Mapping

from agent.compiler.ir import (
    CIDRSet,
    Clause,
    DirectionRules,
    LocalEndpoint,
    NamedPortClause,
    NodeIR,
    TransitEndpoint,
)
from agent.model.objects import IPAddress


def clause_admits(
    ir: NodeIR, clause: Clause, peer: IPAddress, protocol: str, port: int | None
) -> bool:
    if isinstance(clause, NamedPortClause):
        return port is not None and (peer, protocol, port) in ir.members[clause.members]
    if clause.ports is not None and not any(r.contains(protocol, port) for r in clause.ports):
        return False
    return clause.peers is None or any(_in_set(ir, sid, peer) for sid in clause.peers)


def _in_set(ir: NodeIR, sid: str, ip: IPAddress) -> bool:
    peer_set = ir.sets[sid]
    if isinstance(peer_set, CIDRSet):
        return peer_set.contains(ip)
    return ip in ir.members[sid]


def direction_admits(
    ir: NodeIR, rules: DirectionRules | None, peer: IPAddress, protocol: str, port: int | None
) -> bool:
    """Not isolated admits everything; else some clause must admit."""
    if rules is None:
        return True
    return any(clause_admits(ir, c, peer, protocol, port) for c in rules.clauses)


def endpoint_passes(
    ir: NodeIR,
    endpoint: LocalEndpoint,
    direction: str,
    peer: IPAddress,
    protocol: str,
    port: int | None,
) -> bool:
    """What the dataplane does with a new connection at this endpoint's check: audit
    mode passes what the rules deny (and logs it)."""
    if endpoint.audit:
        return True
    rules = endpoint.ingress if direction == "Ingress" else endpoint.egress
    return direction_admits(ir, rules, peer, protocol, port)


def _owner(irs: Mapping[str, NodeIR], ip: IPAddress) -> tuple[NodeIR, str] | None:
    for ir in irs.values():
        for ref, endpoint in ir.endpoints.items():
            if ip in endpoint.ips:
                return ir, ref
    return None


def cluster_allows(
    irs: Mapping[str, NodeIR], src: IPAddress, dst: IPAddress, protocol: str, port: int | None
) -> bool:
    """What the dataplanes of all nodes together do with a new connection."""
    if src == dst:
        return True  # a pod may always reach itself
    src_owner, dst_owner = _owner(irs, src), _owner(irs, dst)
    # Traffic between a pod and its own node is always allowed.
    if src_owner and dst in src_owner[0].node_ips:
        return True
    if dst_owner and src in dst_owner[0].node_ips:
        return True
    if src_owner:
        ir, ref = src_owner
        if not endpoint_passes(ir, ir.endpoints[ref], "Egress", dst, protocol, port):
            return False
    if dst_owner:
        ir, ref = dst_owner
        if not endpoint_passes(ir, ir.endpoints[ref], "Ingress", src, protocol, port):
            return False
    return True


def endpoints_by_ip(ir: NodeIR) -> dict[IPAddress, str]:
    return {ip: ref for ref, endpoint in ir.endpoints.items() for ip in endpoint.ips}


def transit_by_ip(ir: NodeIR) -> dict[IPAddress, str]:
    """The transit endpoints' addresses, as endpoints_by_ip gives the local ones'."""
    return {ip: ref for ref, endpoint in ir.transit.items() for ip in endpoint.ips}


def transit_passes(
    ir: NodeIR, endpoint: TransitEndpoint, client: IPAddress, protocol: str, port: int | None
) -> bool:
    """A connection this node DNATed to a pod of another node: judged as that pod's own
    node would judge it if it saw the client's address (a pod and its own node always
    pass)."""
    if client in endpoint.node_ips:
        return True
    return endpoint_passes(ir, endpoint, "Ingress", client, protocol, port)


def node_admits(
    ir: NodeIR,
    src: IPAddress,
    dst: IPAddress,
    protocol: str,
    port: int | None,
    node_addresses: frozenset[IPAddress] = frozenset(),
    local: Mapping[IPAddress, str] | None = None,
    dnat: bool = False,
    transit: Mapping[IPAddress, str] | None = None,
    judged_upstream: bool = False,
) -> bool:
    """What one node's dataplane does with a new connection: the egress of a local
    source and the ingress of a local destination; and, when this node DNATed it (`dnat`:
    it was sent to another address than `dst`'s, a Service's), the ingress of a transit
    destination. `node_addresses` are every address the node itself holds (traffic to
    and from them is the node's, always allowed); `local` and `transit` are
    endpoints_by_ip and transit_by_ip, for callers that judge many connections.
    `judged_upstream`: the connection carries the transit mark (transit_mark.py), so
    another node DNATed it and judged the local destination's ingress on the client's
    own address; it counts only from another node's address."""
    if src == dst or src in node_addresses or dst in node_addresses:
        return True
    if src in ir.node_ips or dst in ir.node_ips:
        return True
    local = endpoints_by_ip(ir) if local is None else local
    src_ref, dst_ref = local.get(src), local.get(dst)
    if src_ref is not None and not endpoint_passes(
        ir, ir.endpoints[src_ref], "Egress", dst, protocol, port
    ):
        return False
    if dst_ref is not None:
        if judged_upstream and src in ir.peer_node_ips:
            return True
        return endpoint_passes(ir, ir.endpoints[dst_ref], "Ingress", src, protocol, port)
    if not dnat:
        return True  # routed through: the destination's own node judges it
    transit = transit_by_ip(ir) if transit is None else transit
    transit_ref = transit.get(dst)
    return transit_ref is None or transit_passes(ir, ir.transit[transit_ref], src, protocol, port)
