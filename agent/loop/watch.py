"""Informers: list, then watch from the list's resourceVersion (with bookmarks), for
Namespaces, Nodes, Pods, NetworkPolicies, Services and EndpointSlices, with the real
`kubernetes` client.

On 410 Gone (or any failure) an informer re-lists and reconciles its store, deletions
included; errors back off exponentially with jitter. Each change only *requests* a sync
(`on_change`); the sync runner coalesces a burst of events into a few syncs.

The trail of one event: `Informer._watch` -> `_apply` (the change is now pending) ->
`on_change` = `SyncRunner.request` (agent/loop/sync.py), and later, on the sync thread,
`Agent._take_pending` (agent/loop/agent.py) calls `Informer.take_pending`.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config

log = logging.getLogger("picket.watch")
WATCH_TIMEOUT = 300  # seconds; the server ends the watch, we resume from the last version
BACKOFF_START, BACKOFF_CAP = 0.2, 30.0


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """From a kubeconfig file, or in-cluster (the DaemonSet's service account)."""
    if kubeconfig:
        return config.new_client_from_config(kubeconfig)
    config.load_incluster_config()
    return client.ApiClient()


@dataclass(frozen=True)
class Kind:
    name: str  # the model's kind: Namespace, Pod, NetworkPolicy, Service...
    list_call: Callable[..., Any]


def kinds(api: client.ApiClient) -> list[Kind]:
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    discovery = client.DiscoveryV1Api(api)
    return [
        Kind("Namespace", core.list_namespace),
        Kind("Node", core.list_node),
        Kind("Pod", core.list_pod_for_all_namespaces),
        Kind("NetworkPolicy", net.list_network_policy_for_all_namespaces),
        # Which pods outside clients reach through any node (transit endpoints).
        Kind("Service", core.list_service_for_all_namespaces),
        Kind("EndpointSlice", discovery.list_endpoint_slice_for_all_namespaces),
    ]


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class Informer:
    """One kind's objects, as raw dicts by namespace/name, kept current by a thread."""

    def __init__(
        self,
        kind: Kind,
        on_change: Callable[[], None],
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.kind = kind
        self.on_change = on_change
        self.on_restart = on_restart or (lambda kind: None)
        self.synced = threading.Event()
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, Any]] = {}
        # Changes not yet handed to the agent: key -> object (None: deleted), so a sync
        # compiles only what changed. take_pending() hands them over.
        self._pending: dict[str, dict[str, Any] | None] = {}

    def objects(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._objects.values())

    def take_pending(self) -> dict[str, dict[str, Any] | None]:
        """Hands over the changes pending since the last call: key -> object, or None
        when deleted (called by Agent._take_pending, agent/loop/agent.py)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            return pending

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"informer-{self.kind.name}", daemon=True).start()

    def _relist(self) -> str:
        resp = self.kind.list_call(_preload_content=False)
        doc = json.loads(resp.data)
        fresh = {_key(o): o for o in doc.get("items", [])}
        with self._lock:
            # A re-list reconciles: what vanished meanwhile is a deletion.
            for key in self._objects.keys() - fresh.keys():
                self._pending[key] = None
            for key, obj in fresh.items():
                if self._objects.get(key) != obj:
                    self._pending[key] = obj
            self._objects = fresh
        self.synced.set()
        self.on_change()  # next: SyncRunner.request (agent/loop/sync.py)
        return doc["metadata"]["resourceVersion"]

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        """One watch event into the store and the pending changes; requests a sync."""
        key = _key(obj)
        with self._lock:
            if kind == "DELETED":
                self._objects.pop(key, None)
                self._pending[key] = None
            else:
                self._objects[key] = obj
                self._pending[key] = obj
        # next: SyncRunner.request (agent/loop/sync.py) wakes the sync thread, which
        # takes the pending changes in Agent._take_pending (agent/loop/agent.py)
        self.on_change()

    def _run(self) -> None:
        rv: str | None = None
        failures = 0
        while True:
            try:
                if rv is None:
                    rv = self._relist()
                rv = self._watch(rv)
                failures = 0
            except client.ApiException as exc:
                if exc.status == 410:
                    log.info("%s watch expired (410): re-listing", self.kind.name)
                else:
                    log.warning("%s watch failed: %s %s", self.kind.name, exc.status, exc.reason)
                    failures += 1
                rv = None
                self.on_restart(self.kind.name)
            except Exception as exc:  # the API is away: back off, then re-list
                log.warning("%s watch failed: %s", self.kind.name, exc)
                failures += 1
                rv = None
                self.on_restart(self.kind.name)
            if failures:
                time.sleep(backoff(failures))

    def _watch(self, rv: str) -> str:
        for kind, obj in watch_events(self.kind.list_call, rv):
            rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._apply(kind, obj)  # next: _apply, just above
        return rv


class WatchExpired(client.ApiException):
    """The server no longer has the resourceVersion we asked to resume from (410)."""

    def __init__(self, message: str) -> None:
        super().__init__(status=410, reason=f"Expired: {message}")


def watch_events(
    list_call: Callable[..., Any], rv: str, timeout: int = WATCH_TIMEOUT
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(type, raw object) from one watch request, BOOKMARKs included; an ERROR event
    raises (WatchExpired for 410). Lines are decoded as plain JSON: the client's model
    classes cost milliseconds per object, which is programming latency."""
    resp = list_call(
        watch=True,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=timeout,
        _preload_content=False,
    )
    try:
        for line in _lines(resp):
            event = json.loads(line)
            obj = event.get("object") or {}
            if event.get("type") == "ERROR":
                if obj.get("code") == 410:
                    raise WatchExpired(str(obj.get("message", "")))
                raise client.ApiException(
                    status=obj.get("code", 500), reason=str(obj.get("message", ""))
                )
            yield event.get("type", ""), obj
    finally:
        resp.close()
        resp.release_conn()


def _lines(resp: Any) -> Iterator[str]:
    """Complete lines of a chunked watch response, as they arrive."""
    pending = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield line.decode()
    if pending.strip():
        yield pending.decode()


def backoff(failures: int) -> float:
    """Exponential, capped, with jitter so that a fleet of agents does not stampede."""
    return min(BACKOFF_CAP, BACKOFF_START * 2 ** (failures - 1)) * random.uniform(0.5, 1.5)
