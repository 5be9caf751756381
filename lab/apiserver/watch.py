"""What a filtered watch sees of a store event. As the real server does, an object that
starts matching a watch's selectors arrives as ADDED and one that stops matching as
DELETED, so a client's cache stays exactly the filtered set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lab.apiserver.store import ADDED, DELETED, MODIFIED, Event

Matcher = Callable[[dict[str, Any]], bool]


def translate(
    event: Event, resource: str, namespace: str | None, matches: Matcher
) -> tuple[str, dict[str, Any]] | None:
    """(type, object) to send for `event`, or None when the watch must not see it."""
    if event.resource != resource or (namespace is not None and event.namespace != namespace):
        return None
    now = event.type != DELETED and matches(event.obj)
    before = event.old is not None and matches(event.old)
    if now and before:
        return MODIFIED, event.obj
    if now:
        return ADDED, event.obj
    if before:
        return DELETED, event.obj
    return None


def watch_event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": obj}


def bookmark(
    resource_kind: str, api_version: str, rv: int, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A BOOKMARK carries only a resourceVersion a client may resume from."""
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if annotations:
        meta["annotations"] = annotations
    return {
        "type": "BOOKMARK",
        "object": {"kind": resource_kind, "apiVersion": api_version, "metadata": meta},
    }
