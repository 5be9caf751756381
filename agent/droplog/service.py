"""The drop log's thread: capture -> fold per connection -> budget -> describe ->
write, plus a summary of what the budget held back or the capture lost.

It is handed what it reads: its capture (agent/droplog/capture.py), a `CacheReader`
(the agent satisfies it, without knowing of the drop log), and for packets with a forged
source a lookup of the interface they came from (`InterfaceOwner`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Address
from typing import Protocol, TypeVar

from agent.compiler.ir import NodeIR
from agent.droplog.capture import Capture
from agent.droplog.enrich import (
    POD,
    Description,
    describe,
    describe_spoofed,
    record_fields,
    summary_fields,
)
from agent.droplog.events import POLICY, SPOOFED, PacketEvent
from agent.droplog.folding import Folder, OpenRecord, Share
from agent.droplog.journal import RecordWriter
from agent.model.live import LiveState

log = logging.getLogger("picket.droplog")
T = TypeVar("T")


class CacheReader(Protocol):
    """The agent's cache as the drop log reads it, from its own thread."""

    def read_cache(self, read: Callable[[LiveState | None, NodeIR | None], T]) -> T:
        """`read(live state, node IR)` under the lock that guards them; its result."""
        ...


# ifindex -> (interface name, the addresses routed to it): which pod an interface is.
InterfaceOwner = Callable[[int], tuple[str, tuple[IPv4Address, ...]]]


def _sender_namespace(description: Description) -> str:
    """Whose share of the budget a record costs: the namespace that sent the packet (the
    pod behind the interface of a forged source, the source pod), or, from outside any
    pod, the destination's. So a namespace flooding denied connections, wherever to,
    uses up only its own share."""
    if description.sender is not None:
        return description.sender.namespace or ""
    if description.src.kind == POD:
        return description.src.namespace or ""
    return description.dst.namespace or ""


def _unknown_interface(_ifindex: int) -> tuple[str, tuple[IPv4Address, ...]]:
    return "", ()


@dataclass(frozen=True)
class DropLogSettings:
    rate: float = 100.0  # records per second, per node
    burst: float = 200.0
    window: float = 5.0  # seconds a record folds repeats of its connection
    summary_period: float = 10.0  # at most one summary this often
    # Each namespace's share of the node's budget: one flooding cannot use up another's
    namespace_rate: float = 20.0
    namespace_burst: float = 50.0


@dataclass
class DropLogStats:
    packets: int = 0  # denied packets captured
    records: int = 0  # connection records written
    opted_out: int = 0  # connections of namespaces with picket.io/drop-log: "off"
    suppressed: int = 0  # connections the budget kept out
    lost: int = 0  # packet events the capture lost


class DropLog:
    def __init__(
        self,
        node: str,
        capture: Capture,
        cache: CacheReader,
        writer: RecordWriter,
        settings: DropLogSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        interface_owner: InterfaceOwner = _unknown_interface,
    ) -> None:
        self.node = node
        self.interface_owner = interface_owner
        self.capture = capture
        self.cache = cache
        self.writer = writer
        self.settings = s = settings or DropLogSettings()
        self.folder = Folder(s.window, s.rate, s.burst, Share(s.namespace_rate, s.namespace_burst))
        self.stats = DropLogStats()
        # (direction, namespace whose policy denied, family) -> connections, for the
        # metrics; counted before the budget and the opt-out, which only decide what
        # is written
        self.connections: dict[tuple[str, str, int], int] = {}
        self.heartbeat = clock()
        self._clock = clock
        self._summarised = (0, 0)  # (suppressed, lost) at the last summary
        self._summarised_by: dict[str, int] = {}  # suppressed by namespace, then
        self._last_summary = clock()

    def handle(self, events: list[PacketEvent], now: float) -> None:
        self.stats.packets += len(events)
        for event in events:
            if self.folder.fold(event):
                continue
            description = self._describe(event)
            local = description.dst if event.direction == "ingress" else description.src
            if event.verdict == "drop" and event.reason == POLICY:
                key = (event.direction, local.namespace or "", event.src_ip.version)
                self.connections[key] = self.connections.get(key, 0) + 1
            if not description.logged:
                self.stats.opted_out += 1
                self.folder.mute(event, now)
                continue
            self.folder.open(event, now, description, _sender_namespace(description))
        self.stats.suppressed = self.folder.suppressed

    def _describe(self, event: PacketEvent) -> Description:
        if event.reason != SPOOFED:
            return self.cache.read_cache(partial(describe, event))
        # Once per pod and window (the fold key is the interface): a netlink dump is
        # affordable here, and names the pod by what the node routes to it.
        name, owned = self.interface_owner(event.interface)
        return self.cache.read_cache(lambda live, _ir: describe_spoofed(event, live, name, owned))

    def flush(self, now: float, final: bool = False) -> None:
        closed = self.folder.close_all() if final else self.folder.due(now)
        for record in closed:
            self._write(record)
        if final or now - self._last_summary >= self.settings.summary_period:
            self.stats.lost = self.capture.lost()  # a counter read: only this often
            suppressed = self.stats.suppressed - self._summarised[0]
            lost = self.stats.lost - self._summarised[1]
            if suppressed or lost:
                by = {
                    ns: n - self._summarised_by.get(ns, 0)
                    for ns, n in self.folder.suppressed_by.items()
                    if n > self._summarised_by.get(ns, 0)
                }
                period = now - self._last_summary
                s = self.settings
                budget = (
                    f"budget {s.rate:g}/s, burst {s.burst:g}; "
                    f"{s.namespace_rate:g}/s, burst {s.namespace_burst:g} per namespace"
                )
                self.writer.write(summary_fields(suppressed, lost, period, budget, self.node, by))
            self._summarised = (self.stats.suppressed, self.stats.lost)
            self._summarised_by = dict(self.folder.suppressed_by)
            self._last_summary = now

    def _write(self, record: OpenRecord) -> None:
        assert isinstance(record.context, Description)
        self.writer.write(record_fields(record.event, record.context, record.repeats, self.node))
        self.stats.records += 1

    def run(self, stop: threading.Event) -> None:
        log.info(
            "drop log to %s: %g records/s, burst %g, %g s per connection",
            self.writer.target,
            self.settings.rate,
            self.settings.burst,
            self.settings.window,
        )
        while not stop.is_set():
            try:
                events = self.capture.read(0.2)
                now = self._clock()
                self.heartbeat = now
                self.handle(events, now)
                self.flush(now)
            except Exception:  # the drop log must never take the agent down
                log.exception("drop log iteration failed")
                time.sleep(0.5)
        self.flush(self._clock(), final=True)
        self.capture.close()
