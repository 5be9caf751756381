"""Informers: list, then watch from the list's resourceVersion (with bookmarks), for
Namespaces, Pods, NetworkPolicies and Nodes, with the real `kubernetes` client.

On 410 Gone (or any failure) an informer re-lists and reconciles its store, deletions
included; errors back off exponentially with jitter. Each change only *requests* a sync
(`on_change`); the sync runner coalesces a burst of events into a few syncs.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config, watch

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
    name: str  # Namespace, Pod, NetworkPolicy, Node
    list_call: Callable[..., Any]


def kinds(api: client.ApiClient) -> list[Kind]:
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    return [
        Kind("Namespace", core.list_namespace),
        Kind("Node", core.list_node),
        Kind("Pod", core.list_pod_for_all_namespaces),
        Kind("NetworkPolicy", net.list_network_policy_for_all_namespaces),
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
        self.version = 0  # bumped on every change, so consumers can skip unchanged kinds

    def objects(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._objects.values())

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"informer-{self.kind.name}", daemon=True).start()

    def _relist(self) -> str:
        resp = self.kind.list_call(_preload_content=False)
        doc = json.loads(resp.data)
        fresh = {_key(o): o for o in doc.get("items", [])}
        with self._lock:
            self._objects = fresh
            self.version += 1
        self.synced.set()
        self.on_change()
        return doc["metadata"]["resourceVersion"]

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        with self._lock:
            if kind == "DELETED":
                self._objects.pop(_key(obj), None)
            else:
                self._objects[_key(obj)] = obj
            self.version += 1
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
        stream = watch.Watch().stream(
            self.kind.list_call,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT,
        )
        for event in stream:
            obj = event["raw_object"]
            rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                self._apply(event["type"], obj)
        return rv


def backoff(failures: int) -> float:
    """Exponential, capped, with jitter so that a fleet of agents does not stampede."""
    return min(BACKOFF_CAP, BACKOFF_START * 2 ** (failures - 1)) * random.uniform(0.5, 1.5)
