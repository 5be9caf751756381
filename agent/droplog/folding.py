"""From packets to connection records, within a budget (pure: the caller passes time).

A denied connection attempt shows up as several packets: retransmitted SYNs, repeated
datagrams, a second INIT. The first packet of a flow opens a record; packets of the same
flow within `window` seconds fold into it; the record is written when its window closes,
once, with the count. Opening a record costs a token from a per-node bucket (`rate`
records per second, `burst` at once); a flow that finds no token is suppressed and
counted, and summarised by the caller. Open records are thus at most
`burst + rate * window`: memory stays bounded under a flood of distinct flows.

Flows of a namespace that opted out get no record but are remembered quietly for the
window, up to QUIET_FLOWS of them, so that their repeats fold as well (and are counted
once). Suppressed flows are not: each of their packets counts as suppressed, so that a
summary accounts for every packet the budget kept out."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from agent.droplog.events import PacketEvent

QUIET_FLOWS = 10_000


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst  # full at the start
        self.last: float | None = None

    def take(self, now: float) -> bool:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class OpenRecord:
    event: PacketEvent
    opened: float
    context: object  # what the caller attached when the record opened (its enrichment)
    repeats: int = 1


class Folder:
    def __init__(self, window: float, rate: float, burst: float) -> None:
        self.window = window
        self.suppressed = 0  # flows the budget kept out, since the start
        self._open: dict[tuple, OpenRecord] = {}
        self._quiet: OrderedDict[tuple, float] = OrderedDict()  # flow -> when it began
        self._bucket = TokenBucket(rate, burst)

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

    def open(self, event: PacketEvent, now: float, context: object = None) -> bool:
        """Opens a record for a new flow if the budget allows; else counts it."""
        if not self._bucket.take(now):
            self.suppressed += 1
            return False
        self._open[event.flow] = OpenRecord(event, now, context)
        return True

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
