"""When a plan does not fit the dataplane's tables (pure): which endpoints fail closed,
and the IR that denies them everything.

A table that cannot hold a plan must not freeze enforcement (the kernel keeping stale
entries, a later change of another tenant never programmed) nor open anything. So each
plan is checked against the tables' capacities before the kernel is written; when it
does not fit, the endpoints whose entries do not fit are programmed as denying every
connection both ways (their policies still name them), and everything else is
programmed exactly. Which endpoints: those with the fewest entries are kept first, so
the tenant whose policy outgrew the table is the one denied, not a bystander with a
small policy. The backends report each table that overflowed (`Overflow`): /readyz
turns 503, `picket_dataplane_capacity_exceeded` names the table, and the log names the
policies and the endpoints."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from agent.compiler.ir import DirectionRules, LocalEndpoint, NodeIR, sets_used


@dataclass(frozen=True)
class Overflow:
    """A table the plan did not fit: what it holds, what the plan wanted, and the
    endpoints (namespace/name) denied everything for it, with their policies."""

    table: str
    capacity: int
    wanted: int
    endpoints: tuple[str, ...]
    policies: tuple[str, ...]
    # Peer addresses left out of an address table: no selector matches them (their
    # ipBlock verdicts are the covering prefix's, as before), so only less is admitted.
    left_out: tuple[str, ...] = ()

    def message(self) -> str:
        if self.left_out:
            shown = ", ".join(self.left_out[:10]) + (", ..." if len(self.left_out) > 10 else "")
            return (
                f"{self.table}: the plan needs {self.wanted} entries, the table holds "
                f"{self.capacity}; {len(self.left_out)} pod addresses left out (no "
                f"selector admits them until it fits): {shown}"
            )
        return (
            f"{self.table}: the plan needs {self.wanted} entries, the table holds "
            f"{self.capacity}; denying all traffic of {len(self.endpoints)} endpoints "
            f"until it fits: {', '.join(self.endpoints) or '-'} (policies "
            f"{', '.join(self.policies) or '-'})"
        )


class Overflows:
    """What a backend's last plan did not fit, for the metrics' and /readyz's threads;
    logged when it changes (not at every full sync)."""

    def __init__(self, log: logging.Logger, tables: str) -> None:
        self._log, self._tables = log, tables  # tables: "maps", "sets"
        self._lock = threading.Lock()
        self._latest: list[Overflow] = []

    def report(self, overflows: list[Overflow]) -> None:
        if overflows != self._latest:
            for overflow in overflows:
                self._log.error("capacity exceeded: %s", overflow.message())
            if self._latest and not overflows:
                self._log.info(
                    "the plan fits the %s again: every endpoint is enforced exactly", self._tables
                )
        with self._lock:
            self._latest = overflows

    def latest(self) -> list[Overflow]:
        with self._lock:
            return list(self._latest)


def overflowing(sizes: Mapping[str, int], capacity: int) -> tuple[str, ...]:
    """The endpoints that do not fit when `capacity` entries are filled with the smallest
    endpoints first (`sizes`: entries per endpoint; ties by name), sorted."""
    used, out = 0, []
    for ref, size in sorted(sizes.items(), key=lambda item: (item[1], item[0])):
        if used + size <= capacity:
            used += size
        else:
            out.append(ref)
    return tuple(sorted(out))


def policies_of(ir: NodeIR, refs: Iterable[str]) -> tuple[str, ...]:
    """The policies isolating the endpoints (local or transit) `refs`, sorted."""
    found: set[str] = set()
    for ref in refs:
        endpoint = ir.endpoints.get(ref) or ir.transit.get(ref)
        if endpoint is not None:
            found.update(_policies(endpoint))
    return tuple(sorted(found))


def _policies(endpoint: LocalEndpoint) -> set[str]:
    return {p for rules in (endpoint.ingress, endpoint.egress) if rules for p in rules.policies}


def closed(ir: NodeIR, refs: Iterable[str]) -> NodeIR:
    """`ir` with the endpoints `refs` (local or transit) denying every connection: each
    of their directions isolated with no clause, named after all their policies."""
    refs = set(refs)
    if not refs:
        return ir

    def deny(endpoint: LocalEndpoint, directions: tuple[str, ...]) -> LocalEndpoint:
        names = tuple(sorted(_policies(endpoint))) or ("(capacity exceeded)",)
        nothing = DirectionRules(names, ())
        return replace(endpoint, **{d: nothing for d in directions})

    endpoints = {
        ref: deny(e, ("ingress", "egress")) if ref in refs else e for ref, e in ir.endpoints.items()
    }
    transit = {  # only their ingress is judged here
        ref: deny(e, ("ingress",)) if ref in refs else e for ref, e in ir.transit.items()
    }
    capped = replace(ir, endpoints=endpoints, transit=transit)
    used = set(sets_users(capped))  # a set only the denied endpoints used goes
    return replace(
        capped,
        sets={sid: s for sid, s in ir.sets.items() if sid in used},
        members={sid: m for sid, m in ir.members.items() if sid in used},
    )


def without_addresses(ir: NodeIR, room: int) -> tuple[NodeIR, tuple[str, ...]]:
    """`ir` with at most `room` pod addresses (NodeIR.addresses, what an identity-based
    datapath keys on), and those left out, sorted. The local and transit endpoints'
    own addresses are kept first, then the others in address order."""
    if len(ir.addresses) <= room:
        return ir, ()
    own = {ip for e in [*ir.endpoints.values(), *ir.transit.values()] for ip in e.ips}
    order = sorted(ir.addresses, key=lambda ip: (ip not in own, ip.version, ip))
    kept = order[: max(room, 0)]
    left = tuple(str(ip) for ip in sorted(order[len(kept) :], key=lambda ip: (ip.version, ip)))
    return replace(ir, addresses={ip: ir.addresses[ip] for ip in kept}), left


def without_endpoints(ir: NodeIR, room: int) -> tuple[NodeIR, tuple[str, ...]]:
    """`ir` with at most `room` local endpoints (by name), and those left out: they get
    no entry, so the datapath drops their traffic as a pod not programmed yet."""
    if len(ir.endpoints) <= room:
        return ir, ()
    names = sorted(ir.endpoints)
    kept, left = names[: max(room, 0)], tuple(names[max(room, 0) :])
    return replace(ir, endpoints={ref: ir.endpoints[ref] for ref in kept}), left


def sets_users(ir: NodeIR) -> dict[str, set[str]]:
    """Set id -> the endpoints (local and transit) whose clauses name it."""
    users: dict[str, set[str]] = {}
    for ref, endpoint in [*ir.endpoints.items(), *ir.transit.items()]:
        for sid in sets_used(endpoint):
            users.setdefault(sid, set()).add(ref)
    return users
