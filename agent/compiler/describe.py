"""The IR described for people (text) and for scripts (JSON): what `picket compile` prints."""

from __future__ import annotations

from typing import Any

from agent.compiler.ir import (
    CIDRSet,
    Clause,
    DirectionRules,
    NamedPortClause,
    NodeIR,
    PeerSet,
)


def _clause_text(clause: Clause) -> str:
    if isinstance(clause, NamedPortClause):
        return f"allow (peer, port) in {clause.members}"
    peers = "any peer" if clause.peers is None else "peers " + " ".join(clause.peers)
    ports = "any port" if clause.ports is None else "ports " + " ".join(map(str, clause.ports))
    return f"allow {peers} on {ports}"


def _direction_text(name: str, rules: DirectionRules | None) -> list[str]:
    if rules is None:
        return [f"  {name}: not isolated"]
    lines = [f"  {name}: isolated by {', '.join(rules.policies)}"]
    lines += [f"    {_clause_text(c):60} # {c.origin}" for c in rules.clauses]
    if not rules.clauses:
        lines.append("    (no rule admits anything: all new connections dropped)")
    return lines


def _member_text(ir: NodeIR, sid: str) -> str:
    if isinstance(ir.sets[sid], CIDRSet):
        return "(prefix set)"
    members = sorted(ir.members.get(sid, frozenset()), key=str)
    if not members:
        return "(no members)"
    return " ".join(
        str(m) if not isinstance(m, tuple) else f"{m[0]}:{m[2]}/{m[1]}" for m in members
    )


def _transit_text(ir: NodeIR) -> list[str]:
    """Shown only when there are some, so that a cluster without Services reads as
    before."""
    if not ir.transit:
        return []
    lines = [
        "transit endpoints (pods of other nodes behind NodePort/LoadBalancer Services with"
        " externalTrafficPolicy Cluster: their ingress is judged here, on the client's"
        " address, for connections this node DNATs to them)"
    ]
    for ref, endpoint in ir.transit.items():
        mode = " (audit mode: nothing dropped, denials logged)" if endpoint.audit else ""
        own = ", ".join(map(str, endpoint.node_ips)) or "unknown"
        lines.append(f"transit {ref} {' '.join(map(str, endpoint.ips))} (its node: {own}){mode}")
        lines += _direction_text("ingress", endpoint.ingress)
    return lines


def describe_ir_text(ir: NodeIR) -> str:
    addresses = ", ".join(map(str, ir.node_ips)) or "unknown"
    lines = [f"node {ir.node} (addresses: {addresses}; always allowed to and from its pods)"]
    for ref, endpoint in ir.endpoints.items():
        mode = " (audit mode: nothing dropped, denials logged)" if endpoint.audit else ""
        lines.append(f"endpoint {ref} {' '.join(map(str, endpoint.ips))}{mode}")
        lines += _direction_text("ingress", endpoint.ingress)
        lines += _direction_text("egress", endpoint.egress)
    if not ir.endpoints:
        lines.append("(no local endpoints)")
    lines += _transit_text(ir)
    lines.append("peer sets")
    for sid, peer_set in ir.sets.items():
        lines.append(f"  {sid} {peer_set}: {_member_text(ir, sid)}")
    return "\n".join(lines)


def _set_json(peer_set: PeerSet) -> dict[str, Any]:
    if isinstance(peer_set, CIDRSet):
        return {
            "type": "cidr",
            "cidr": str(peer_set.cidr),
            "except": [str(e) for e in peer_set.excepts],
        }
    kind = "selector" if not hasattr(peer_set, "port_name") else "namedPort"
    return {"type": kind, "description": str(peer_set)}


def _clause_json(clause: Clause) -> dict[str, Any]:
    origin = {
        "policy": clause.origin.policy,
        "rule": f"spec.{clause.origin.direction.lower()}[{clause.origin.index}]",
    }
    if isinstance(clause, NamedPortClause):
        return {"namedPortSet": clause.members, **origin}
    return {
        "peers": None if clause.peers is None else list(clause.peers),
        "ports": None
        if clause.ports is None
        else [{"protocol": r.protocol, "port": r.first, "endPort": r.last} for r in clause.ports],
        **origin,
    }


def _direction_json(rules: DirectionRules | None) -> dict[str, Any] | None:
    if rules is None:
        return None
    return {"policies": list(rules.policies), "clauses": [_clause_json(c) for c in rules.clauses]}


def describe_ir_json(ir: NodeIR) -> dict[str, Any]:
    def members(sid: str) -> list[str]:
        return sorted(
            str(m) if not isinstance(m, tuple) else f"{m[0]}:{m[2]}/{m[1]}"
            for m in ir.members.get(sid, frozenset())
        )

    return {
        "node": ir.node,
        "nodeIPs": [str(ip) for ip in ir.node_ips],
        "endpoints": {
            ref: {
                "ips": [str(ip) for ip in e.ips],
                "audit": e.audit,
                "ingress": _direction_json(e.ingress),
                "egress": _direction_json(e.egress),
            }
            for ref, e in ir.endpoints.items()
        },
        "transit": {
            ref: {
                "ips": [str(ip) for ip in e.ips],
                "nodeIPs": [str(ip) for ip in e.node_ips],
                "audit": e.audit,
                "ingress": _direction_json(e.ingress),
            }
            for ref, e in ir.transit.items()
        },
        "peerSets": {sid: {**_set_json(s), "members": members(sid)} for sid, s in ir.sets.items()},
    }
