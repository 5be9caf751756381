"""What every server-side printer uses: the Name and Age columns, kubectl's
human-readable durations, and lenient access to nested fields (a printer never fails on
a missing or null part)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Column = tuple[str, str, int, str]  # name, type, priority (1: -o wide only), description
NAME: Column = ("Name", "string", 0, "Name must be unique within a namespace.")
AGE: Column = ("Age", "string", 0, "The time since the object was created.")


def human_duration(seconds: float) -> str:
    """kubectl's `duration.HumanDuration`: two significant units at most."""
    s = int(seconds)  # truncates toward zero, as Go's int(d.Seconds())
    if s < -1:
        return "<invalid>"  # upstream tolerates a second of clock skew, no more
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"
    return f"{days // 365}y"


def since(timestamp: Any, now: datetime) -> str:
    """The age of an RFC 3339 timestamp, or "<unknown>" when missing or unreadable."""
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp)
    except ValueError:
        return "<unknown>"
    # Timestamps without an offset are UTC, as the API writes them.
    then, now = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (then, now))
    return human_duration((now - then).total_seconds())


def sub(obj: Any, *keys: str) -> dict:
    """The nested object at `keys`, or {} where one is missing or null."""
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj if isinstance(obj, dict) else {}


def age(obj: dict, now: datetime) -> str:
    return since(sub(obj, "metadata").get("creationTimestamp"), now)


def name(obj: dict) -> str:
    return sub(obj, "metadata").get("name", "")
