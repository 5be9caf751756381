"""From packets to connection records, within a budget (pure: the caller passes time).

A denied connection attempt shows up as several packets: retransmitted SYNs, repeated
datagrams, a second INIT. The first packet of a flow opens a record; packets of the same
flow within `window` seconds fold into it; the record is written when its window closes,
once, with the count. Opening a record costs a token from a per-node bucket (`rate`
records per second, `burst` at once); a flow that finds no token is suppressed and
counted, and summarised by the caller. Open records are thus at most
`burst + rate * window`: memory stays bounded under a flood of distinct flows."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.droplog.events import PacketEvent


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float = -1.0  # full on first use
    last: float | None = None

    def take(self, now: float) -> bool:
        if self.last is None:
            self.tokens = self.burst
        else:
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


@dataclass
class Folder:
    window: float
    rate: float
    burst: float
    suppressed: int = 0  # flows the budget kept out, since the start
    _open: dict[tuple, OpenRecord] = field(default_factory=dict)
    _bucket: TokenBucket | None = None

    def __post_init__(self) -> None:
        self._bucket = TokenBucket(self.rate, self.burst)

    def fold(self, event: PacketEvent, now: float) -> bool:
        """Counts `event` into its open record; False when it opens none (the caller
        then decides whether to `open` one)."""
        record = self._open.get(event.flow)
        if record is None:
            return False
        record.repeats += 1
        return True

    def open(self, event: PacketEvent, now: float, context: object = None) -> bool:
        """Opens a record for a new flow if the budget allows; else counts it."""
        assert self._bucket is not None
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
