"""Liveness and readiness, decided from what the sync loop reports (pure: the caller
passes the time)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


def liveness(loop_started: bool, heartbeat: float, now: float, timeout: float) -> Verdict:
    """The sync loop beats at least once a second when idle, and before and after each
    sync: silence for `timeout` means it is stuck (a hung sync, a dead thread). Before
    the loop starts the agent is waiting for its first lists: that is not stuck, and a
    restart would not help, so it counts as alive (readiness says it is not ready)."""
    if not loop_started:
        return Verdict(True, "waiting for the first list of every kind")
    silent = now - heartbeat
    if silent > timeout:
        return Verdict(False, f"sync loop silent for {silent:.0f}s (limit {timeout:g}s)")
    return Verdict(True, "sync loop alive")


def readiness(programmed: bool, exceeded: list[str] | None = None) -> Verdict:
    """Ready once the first full sync has programmed the dataplane, and while the plan
    fits its tables (`exceeded`: the maps or sets it did not fit, whose endpoints are
    denied everything)."""
    if not programmed:
        return Verdict(False, "first sync not done")
    if exceeded:
        return Verdict(False, f"capacity exceeded: {', '.join(exceeded)}")
    return Verdict(True, "dataplane programmed")
