"""What the dataplane holds, read on a timer rather than per scrape: drop counters
(`iptables-save -c`, or a walk of the eBPF drop counts), map sizes, the conntrack count,
rule count, jump repairs. A scrape formats the last reading and runs no command, so any
number of scrapes costs the node what one reading every `interval` costs, and none of
them waits on (or holds) the xtables lock that programming needs."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from agent.dataplane.backend import Backend
from agent.dataplane.counters import DatapathCounters

log = logging.getLogger("picket.metrics")

DEFAULT_INTERVAL = 5.0  # seconds: counters are this stale at most, between two readings


@dataclass(frozen=True)
class Reading:
    counters: DatapathCounters
    map_entries: dict[str, int]
    conntrack_entries: int | None
    rules: dict[int, int]  # family -> rules, where each family has its own (iptables)
    jumps_restored: int
    at: float  # Unix time it began: what it shows happened before then


class DataplaneReader:
    """Reads the backend every `interval` seconds in its own thread; `latest` is the
    last reading (None before the first, or when every reading so far failed)."""

    def __init__(self, backend: Backend, interval: float = DEFAULT_INTERVAL) -> None:
        self.backend, self.interval = backend, interval
        self.latest: Reading | None = None

    def refresh(self) -> None:
        b = self.backend
        at = time.time()
        self.latest = Reading(
            b.datapath_counters(),
            b.map_entries(),
            b.conntrack_entries(),
            b.rules_by_family(),
            b.jumps_restored,
            at,
        )

    def run(self, stop: threading.Event) -> None:
        while True:
            try:
                self.refresh()
            except Exception as exc:  # a kernel read failed: keep the last, try again
                log.warning("metrics: reading the dataplane failed: %s", exc)
            if stop.wait(self.interval):
                return

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="readings", daemon=True)
        thread.start()
        return thread
