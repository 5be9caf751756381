"""List, then watch, all pods with the real client, in a thread; events go to the
kubelet's event loop. On 410 Gone (or any failure) it re-lists and tells the loop
what disappeared in between, so no deletion is missed."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

from kubernetes import client

from agent.loop.watch import watch_events

log = logging.getLogger("picket.lab.kubelet")
SYNCED = "SYNCED"  # a pseudo-event: the state of a full list has been delivered


class PodWatcher:
    def __init__(
        self,
        api: client.CoreV1Api,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[tuple[str, dict[str, Any]]],
    ) -> None:
        self.api = api
        self.loop = loop
        self.queue = queue
        self.known: dict[str, dict[str, Any]] = {}

    def start(self) -> None:
        threading.Thread(target=self._run, name="pod-watcher", daemon=True).start()

    def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        uid = obj["metadata"]["uid"]
        if kind == "DELETED":
            self.known.pop(uid, None)
        else:
            self.known[uid] = obj
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, obj))

    def _list(self) -> str:
        resp = self.api.list_pod_for_all_namespaces(_preload_content=False)
        doc = json.loads(resp.data)
        current = {o["metadata"]["uid"]: o for o in doc.get("items", [])}
        for uid, obj in list(self.known.items()):
            if uid not in current:
                self._emit("DELETED", obj)
        for obj in current.values():
            self._emit("MODIFIED" if obj["metadata"]["uid"] in self.known else "ADDED", obj)
        # Everything the list returned is queued: the kubelet may now collect orphans.
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (SYNCED, {}))
        return doc["metadata"]["resourceVersion"]

    def _run(self) -> None:
        rv: str | None = None
        backoff = 0.2
        while True:
            try:
                if rv is None:
                    rv = self._list()
                for kind, obj in watch_events(self.api.list_pod_for_all_namespaces, rv):
                    rv = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._emit(kind, obj)
                backoff = 0.2
            except client.ApiException as exc:
                if exc.status != 410:
                    log.warning("pod watch failed: %s", exc)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5)
                rv = None
            except Exception as exc:  # connection trouble: back off, re-list
                log.warning("pod watch failed: %s", exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5)
                rv = None
