"""The lab API server's storage: objects by resource, one resourceVersion counter, and
a bounded log of change events that watches resume from.

Like etcd behind the real server, old events are compacted: a watch that asks to resume
from before the retained window gets 410 Gone and must re-list. The store is used from
one asyncio thread; listeners are called synchronously on every change.
"""

from __future__ import annotations

import copy
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


@dataclass(frozen=True)
class Event:
    rv: int
    type: str
    resource: str  # Resource.key
    namespace: str
    obj: dict[str, Any]  # after the change (for DELETED: the last state)
    old: dict[str, Any] | None  # before the change (None for ADDED)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    def __init__(self, window: int = 10000, first_rv: int = 1000) -> None:
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._rv = first_rv
        self._window = window
        self._log: deque[Event] = deque()
        # Events at or below this resourceVersion are gone: watches from before it get 410.
        self.compacted_rv = first_rv
        self._listeners: list[Callable[[Event], None]] = []

    @property
    def rv(self) -> int:
        return self._rv

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call `listener` on every change; returns the function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object (do not mutate it; copy first)."""
        return self._objects.get(resource, {}).get((namespace, name))

    def items(self, resource: str, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        """Stored objects in (namespace, name) order; `namespace` None means all."""
        bucket = self._objects.get(resource, {})
        for key in sorted(bucket):
            if namespace is None or key[0] == namespace:
                yield bucket[key]

    def namespaces_in_use(self, resource: str) -> set[str]:
        return {ns for ns, _ in self._objects.get(resource, {})}

    def events_since(self, rv: int) -> list[Event] | None:
        """Events after `rv`, or None when they have been compacted away (410)."""
        if rv < self.compacted_rv:
            return None
        return [e for e in self._log if e.rv > rv]

    def create(self, resource: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta.setdefault("generation", 1)
        return self._commit(ADDED, resource, namespace, meta["name"], obj, None)

    def replace(self, resource: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        old = self._objects[resource][(namespace, name)]
        return self._commit(MODIFIED, resource, namespace, name, obj, old)

    def delete(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        old = self._objects[resource][(namespace, name)]
        gone = copy.deepcopy(old)
        return self._commit(DELETED, resource, namespace, name, gone, old)

    def _commit(
        self,
        kind: str,
        resource: str,
        namespace: str,
        name: str,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
    ) -> dict[str, Any]:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        bucket = self._objects.setdefault(resource, {})
        if kind == DELETED:
            bucket.pop((namespace, name), None)
        else:
            bucket[(namespace, name)] = obj
        event = Event(self._rv, kind, resource, namespace, obj, old)
        self._log.append(event)
        while len(self._log) > self._window:
            self.compacted_rv = self._log.popleft().rv
        for listener in list(self._listeners):
            listener(event)
        return obj
