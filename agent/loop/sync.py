"""A bounded-frequency sync runner: events only request a sync; the runner coalesces
them (a burst of a thousand events becomes a few syncs), retries a failed sync after an
interval, and forces a full resync periodically, which repairs drift.

The one thread hop of an event: an informer's thread calls `request`; the sync thread,
in `run`, wakes and calls `sync` (the agent's: agent/loop/agent.py:Agent.sync)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("picket.sync")


class SyncRunner:
    def __init__(
        self,
        sync: Callable[[bool, float | None], None],
        resync_period: float = 30.0,
        batch_window: float = 0.005,
        retry_interval: float = 1.0,
    ) -> None:
        """`sync(full, first_request_time)` does the work; `first_request_time` is the
        monotonic time of the oldest request this sync answers (for latency)."""
        self._sync = sync
        self.resync_period = resync_period
        self.batch_window = batch_window
        self.retry_interval = retry_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._requested_at: float | None = None
        self.last_success: float | None = None
        self.heartbeat = time.monotonic()  # the loop is alive (for /healthz)
        self.started = False
        self.syncs = 0

    def request(self) -> None:
        """A change is pending (called from an informer's thread)."""
        with self._lock:
            if self._requested_at is None:
                self._requested_at = time.monotonic()
        self._wake.set()  # next: run(), on the sync thread, wakes

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        next_full = time.monotonic()  # the first sync is a full one
        self.heartbeat, self.started = time.monotonic(), True
        while not self._stop.is_set():
            timeout = max(0.0, min(next_full - time.monotonic(), 1.0))
            self._wake.wait(timeout)
            self.heartbeat = time.monotonic()
            if self._stop.is_set():
                break
            full = time.monotonic() >= next_full
            if not full and not self._wake.is_set():
                continue
            time.sleep(self.batch_window)  # let the rest of a burst arrive
            self._wake.clear()
            with self._lock:
                requested, self._requested_at = self._requested_at, None
            try:
                self._sync(full, requested)  # next: Agent.sync (agent/loop/agent.py)
                self.syncs += 1
                self.last_success = time.monotonic()
                if full:
                    next_full = time.monotonic() + self.resync_period
            except Exception:
                log.exception("sync failed; retrying in %.1fs", self.retry_interval)
                time.sleep(self.retry_interval)
                with self._lock:
                    self._requested_at = self._requested_at or requested
                self._wake.set()
            self.heartbeat = time.monotonic()
