"""Datapath counters as totals that only grow (pure).

The kernel's counters restart under us: iptables zeroes a chain's rule counters when the
chain is replaced, and an eBPF counter entry goes with its endpoint. Prometheus counters
must only grow, so each source's last reading is kept and only its growth is added to
the totals of its labels; a source the backend is about to reset is read one last time
and then forgotten, so its next reading counts from zero.

Every count is kept per address family (`family`, the IP version: 4 or 6), which each
backend counts apart: iptables' rules and ip6tables' own, the family in each of the eBPF
programs' counter keys."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

# (direction, reason, namespace, family) -> packets; namespace "" when no pod's policy
# is to blame
DropKey = tuple[str, str, str, int]
Labels = tuple[str | int, ...]


@dataclass(frozen=True)
class DatapathCounters:
    """What a backend counted since the agent started."""

    dropped: dict[DropKey, int] = field(default_factory=dict)
    # audit mode: (direction, namespace, family) -> packets
    would_drop: dict[tuple[str, str, int], int] = field(default_factory=dict)
    # (direction, family) -> packets; None: not counted cheaply
    allowed: dict[tuple[str, int], int] | None = None


AUDIT_REASON = "would_drop_policy"


def split_audit(
    totals: dict[Labels, int], allowed: dict[tuple[str, int], int] | None = None
) -> DatapathCounters:
    """(direction, reason, namespace, family) totals -> drops, and audit mode's
    would-be drops."""
    dropped: dict[DropKey, int] = {}
    would: dict[tuple[str, str, int], int] = {}
    for (direction, reason, namespace, family), packets in totals.items():
        if reason == AUDIT_REASON:
            would[(direction, namespace, family)] = packets
        else:
            dropped[(direction, reason, namespace, family)] = packets
    return DatapathCounters(dropped, would, allowed)


class MonotonicTotals:
    def __init__(self) -> None:
        self._last: dict[Hashable, int] = {}
        self._totals: dict[Labels, int] = {}

    def observe(self, source: Hashable, labels: Labels, value: int) -> None:
        """`value` is what `source` (a rule, a map entry) reads now."""
        last = self._last.get(source, 0)
        grown = value - last if value >= last else value  # it restarted unseen
        self._last[source] = value
        if grown or labels not in self._totals:
            self._totals[labels] = self._totals.get(labels, 0) + grown

    def forget(self, sources: Iterable[Hashable] | None = None) -> None:
        """These sources (all, by default) restart from zero."""
        if sources is None:
            self._last.clear()
            return
        for source in sources:
            self._last.pop(source, None)

    def totals(self) -> dict[Labels, int]:
        return dict(self._totals)
