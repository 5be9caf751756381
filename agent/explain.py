"""Plain words for the oracle's verdicts, and the truth table as text."""

from __future__ import annotations

from typing import Any

from agent.model.endpoints import Endpoint
from agent.model.oracle import DirectionVerdict, Verdict

ALLOWED_MARK, DENIED_MARK, SELF_MARK = ".", "X", "-"


def _side(v: Verdict, d: DirectionVerdict) -> tuple[Endpoint, Endpoint]:
    """(the endpoint whose policy applies, the peer it is checked against)."""
    return (v.src, v.dst) if d.direction == "Egress" else (v.dst, v.src)


def direction_reason(v: Verdict, d: DirectionVerdict) -> str:
    subject, peer = _side(v, d)
    word = d.direction.lower()
    if d.subject is None:
        return f"{subject} is not a pod under NetworkPolicy: no {word} policy applies"
    if not d.isolated:
        return (
            f"{d.subject} is not isolated for {word} "
            f"(no policy selecting it has {d.direction} in policyTypes)"
        )
    policies = ", ".join(d.policies)
    head = f"{d.subject} is isolated for {word} by {policies}"
    if d.allowed:
        admitted = " and ".join(f"{r.policy} {r.field}" for r in d.allowed_by)
        return f"{head}; {admitted} admits {peer} on {v.target}"
    return f"{head}; no {word} rule of [{policies}] admits {peer} on {v.target}"


def near_misses(v: Verdict, d: DirectionVerdict) -> list[str]:
    """Rules that matched the peer or the port but not both: where users look first."""
    _, peer = _side(v, d)
    side = "to" if d.direction == "Egress" else "from"
    out = []
    for r in d.rules:
        if r.peer_matched and not r.port_matched:
            out.append(f"{r.policy} {r.field} admits {peer} but not on {v.target}")
        elif r.port_matched and not r.peer_matched:
            out.append(f"{r.policy} {r.field} admits {v.target} but not {side} {peer}")
    return out if not d.allowed else []


def headline(v: Verdict) -> str:
    if v.exemption is not None:
        return f"allowed: {v.exemption} ({v.src} -> {v.dst})"
    if v.allowed:
        return f"allowed: {v.src} -> {v.dst} on {v.target}"
    denying = [direction_reason(v, d) for d in (v.egress, v.ingress) if not d.allowed]
    return "denied: " + "; and ".join(denying)


def render_text(v: Verdict) -> str:
    lines = [headline(v)]
    for d in (v.egress, v.ingress):
        lines.append(f"  {d.direction.lower() + ':':8} {direction_reason(v, d)}")
        lines += [f"    near miss: {m}" for m in near_misses(v, d)]
    return "\n".join(lines)


def _direction_dict(v: Verdict, d: DirectionVerdict) -> dict[str, Any]:
    return {
        "subject": d.subject,
        "isolated": d.isolated,
        "allowed": d.allowed,
        "policies": list(d.policies),
        "allowedBy": [{"policy": r.policy, "rule": r.field} for r in d.allowed_by],
        "rules": [
            {
                "policy": r.policy,
                "rule": r.field,
                "peerMatched": r.peer_matched,
                "portMatched": r.port_matched,
            }
            for r in d.rules
        ],
        "reason": direction_reason(v, d),
    }


def render_json(v: Verdict) -> dict[str, Any]:
    return {
        "allowed": v.allowed,
        "from": str(v.src),
        "to": str(v.dst),
        "protocol": v.protocol,
        "port": v.port,
        "exemption": v.exemption,
        "summary": headline(v),
        "egress": _direction_dict(v, v.egress),
        "ingress": _direction_dict(v, v.ingress),
    }


def render_matrix(
    results: dict[str, dict[str, bool]], marks: dict[str, dict[str, str]] | None = None
) -> str:
    """Rows are sources, columns destinations: '.' connects, 'X' is denied, '-' self
    (or the given `marks`)."""
    names = list(results)
    corner = "from\\to"
    first = max([len(corner), *(len(n) for n in names)])
    widths = [max(len(n), 1) for n in names]
    lines = [
        " ".join([corner.ljust(first), *(n.ljust(w) for n, w in zip(names, widths, strict=True))])
    ]
    for src in names:
        cells = []
        for dst, w in zip(names, widths, strict=True):
            if dst == src:
                mark = SELF_MARK
            elif marks is not None:
                mark = marks[src].get(dst, "?")
            else:
                mark = ALLOWED_MARK if results[src].get(dst) else DENIED_MARK
            cells.append(mark.ljust(w))
        lines.append(" ".join([src.ljust(first), *cells]).rstrip())
    return "\n".join(line.rstrip() for line in lines)
