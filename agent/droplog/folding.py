"""From packets to connection records, within a budget (pure: the caller passes time).

A denied connection attempt shows up as several packets: retransmitted SYNs, repeated
datagrams, a second INIT. The first packet of a flow opens a record; packets of the same
flow within `window` seconds fold into it; the record is written when its window closes,
once, with the count. Opening a record costs a token from its namespace's bucket
(`share`: records per second and at once, for each namespace) and one from the node's
(`rate` records per second, `burst` at once), so one namespace flooding denials uses
its own share and cannot use up another's; a flow that finds no token in either is
suppressed and counted by namespace, and summarised by the caller. Open records are thus
at most `burst + rate * window`: memory stays bounded under a flood of distinct flows,
and so do the buckets (at most NAMESPACE_BUCKETS, the oldest refilled ones forgotten).

Flows of a namespace that opted out get no record but are remembered quietly for the
window, up to QUIET_FLOWS of them, so that their repeats fold as well (and are counted
once). Suppressed flows are not: each of their packets counts as suppressed, so that a
summary accounts for every packet the budget kept out."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from agent.droplog.events import PacketEvent

QUIET_FLOWS = 10_000
NAMESPACE_BUCKETS = 10_000


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst  # full at the start
        self.last: float | None = None

    def has(self, now: float) -> bool:
        """Refills to `now`; whether a token is there."""
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        return self.tokens >= 1

    def take(self, now: float) -> bool:
        if not self.has(now):
            return False
        self.tokens -= 1
        return True

    def full(self, now: float) -> bool:
        self.has(now)
        return self.tokens >= self.burst


@dataclass(frozen=True)
class Share:
    """What one namespace may open: `rate` records per second, `burst` at once."""

    rate: float = 20.0
    burst: float = 50.0


@dataclass
class OpenRecord:
    event: PacketEvent
    opened: float
    context: object  # what the caller attached when the record opened (its enrichment)
    repeats: int = 1


class Folder:
    def __init__(
        self, window: float, rate: float, burst: float, share: Share | None = None
    ) -> None:
        self.window = window
        self.suppressed = 0  # flows the budget kept out, since the start
        self.suppressed_by: dict[str, int] = {}  # the same, by namespace ("" for none)
        self._open: dict[tuple, OpenRecord] = {}
        self._quiet: OrderedDict[tuple, float] = OrderedDict()  # flow -> when it began
        self._bucket = TokenBucket(rate, burst)
        self.share = share or Share(rate, burst)  # none given: the node's is everyone's
        self._shares: OrderedDict[str, TokenBucket] = OrderedDict()

    def fold(self, event: PacketEvent) -> bool:
        """Counts `event` into its open record; False when it opens none (the caller
        then decides whether to `open` one)."""
        record = self._open.get(event.flow)
        if record is None:
            return event.flow in self._quiet
        record.repeats += 1
        return True

    def mute(self, event: PacketEvent, now: float) -> None:
        """Folds `event`'s flow for the window without a record (or a token)."""
        self._quiet[event.flow] = now
        self._quiet.move_to_end(event.flow)
        while len(self._quiet) > QUIET_FLOWS:
            self._quiet.popitem(last=False)

    def open(
        self, event: PacketEvent, now: float, context: object = None, namespace: str = ""
    ) -> bool:
        """Opens a record for a new flow if its namespace's share and the node's budget
        allow; else counts it under `namespace`."""
        share = self._share(namespace, now)
        if not (share.has(now) and self._bucket.take(now)):
            self.suppressed += 1
            self.suppressed_by[namespace] = self.suppressed_by.get(namespace, 0) + 1
            return False
        share.take(now)
        self._open[event.flow] = OpenRecord(event, now, context)
        return True

    def _share(self, namespace: str, now: float) -> TokenBucket:
        bucket = self._shares.get(namespace)
        if bucket is None:
            # A full bucket is what a new one would be: forgetting it loses nothing.
            while len(self._shares) >= NAMESPACE_BUCKETS:
                oldest, stale = next(iter(self._shares.items()))
                if not stale.full(now):
                    break
                del self._shares[oldest]
            bucket = self._shares[namespace] = TokenBucket(self.share.rate, self.share.burst)
        self._shares.move_to_end(namespace)
        return bucket

    def due(self, now: float) -> list[OpenRecord]:
        """Records whose window has closed, oldest first."""
        closed = []
        for record in self._open.values():  # insertion order is opening order
            if record.opened + self.window > now:
                break
            closed.append(record)
        for record in closed:
            del self._open[record.event.flow]
        while self._quiet and next(iter(self._quiet.values())) + self.window <= now:
            self._quiet.popitem(last=False)
        return closed

    def next_due(self) -> float | None:
        first = next(iter(self._open.values()), None)
        return None if first is None else first.opened + self.window

    def close_all(self) -> list[OpenRecord]:
        closed = list(self._open.values())
        self._open.clear()
        return closed

    def __len__(self) -> int:
        return len(self._open)
