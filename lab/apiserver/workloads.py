"""What the lab's workload controllers (Deployments, DaemonSets) share: reconciling an
owner soon after the change that concerns it, once per burst of changes, and the pods
it owns, which go when it goes."""

from __future__ import annotations

import asyncio
from typing import Any

from lab.apiserver.handlers import PODS, Api
from lab.apiserver.store import Event

Key = tuple[str, str]  # the owner's (namespace, name)


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def controller_of(pod: dict[str, Any], kind: str) -> str | None:
    """The name of the `kind` that controls `pod`, if one does."""
    refs = pod["metadata"].get("ownerReferences") or []
    found = [r for r in refs if r.get("kind") == kind and r.get("controller", True)]
    return found[0]["name"] if found else None


class OwnerController:
    """Subclasses say which owners an event concerns (`_on_event`) and bring one owner's
    pods to what it wants (`reconcile`)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._pending: set[Key] = set()

    def start(self) -> None:
        self.api.store.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        raise NotImplementedError

    def reconcile(self, key: Key) -> None:
        raise NotImplementedError

    def soon(self, key: Key) -> None:
        """After the change that triggered us has been fully committed."""
        if key not in self._pending:
            self._pending.add(key)
            asyncio.get_running_loop().call_soon(self._run, key)

    def _run(self, key: Key) -> None:
        self._pending.discard(key)
        self.reconcile(key)

    def collect_soon(self, namespace: str, uid: str) -> None:
        """Garbage collection: the pods a deleted owner owned go with it."""
        asyncio.get_running_loop().call_soon(self._collect, namespace, uid)

    def _collect(self, namespace: str, uid: str) -> None:
        for pod in list(self.api.store.items(PODS.key, namespace)):
            if owned_by(pod, uid):
                self.api.store.delete(PODS.key, namespace, pod["metadata"]["name"])

    def owned_pods(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        return [p for p in self.api.store.items(PODS.key, namespace) if owned_by(p, uid)]
