"""The lab's EndpointSlice controller: keeps each Service's EndpointSlices equal to what
endpointslice_plan.py says, following the changes of Services, Pods, Nodes and of the
slices it manages, and deletes the slices a deleted Service owned (the garbage
collector's part). Like the deployment controller it lives in the API server process
and acts through the same verbs as any client; a Service without a selector is never
looked at, so slices a user or an operator writes for it stand."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from lab.apiserver import status as st
from lab.apiserver.endpointslice_content import (
    CONTROLLER_NAME,
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    ZONE_LABEL,
    selects,
    served,
)
from lab.apiserver.endpointslice_plan import SlicePlan, plan_slices
from lab.apiserver.handlers import PODS, Api
from lab.apiserver.resources import BY_PATH
from lab.apiserver.routing import Target
from lab.apiserver.service_registry import SERVICES
from lab.apiserver.store import DELETED, Event

SLICES = BY_PATH[("discovery.k8s.io", "v1", "endpointslices")]
NODES = BY_PATH[("", "v1", "nodes")]
ServiceKey = tuple[str, str]
log = logging.getLogger("picket.lab.endpointslices")


def _soon(work: Callable[[], None]) -> None:
    asyncio.get_running_loop().call_soon(work)


def _labels(obj: dict[str, Any] | None) -> dict[str, Any]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


class EndpointSliceController:
    def __init__(self, api: Api, defer: Callable[[Callable[[], None]], None] = _soon) -> None:
        self.api = api
        # Work runs after the change that triggered it has been committed (and with
        # several changes pending, once): by default on the event loop's next turn.
        self.defer = defer
        self._pending: set[ServiceKey] = set()

    def start(self) -> None:
        self.api.store.subscribe(self._on_event)
        for service in list(self.api.store.items(SERVICES.key)):
            self._request((service["metadata"]["namespace"], service["metadata"]["name"]))

    def _on_event(self, event: Event) -> None:
        if event.resource == SERVICES.key and event.type == DELETED:
            uid = event.obj["metadata"].get("uid")
            self.defer(lambda: self._collect(event.namespace, uid))
            return
        for key in self._services_for(event):
            self._request(key)

    def _request(self, key: ServiceKey) -> None:
        if key not in self._pending:
            self._pending.add(key)
            self.defer(lambda: self._reconcile(key))

    def _services_for(self, event: Event) -> Iterable[ServiceKey]:
        if event.resource == SERVICES.key:
            return [(event.namespace, event.obj["metadata"]["name"])]
        if event.resource == PODS.key:
            pods = [event.obj, event.old]
            return [
                (event.namespace, s["metadata"]["name"])
                for s in self.api.store.items(SERVICES.key, event.namespace)
                if served(s) and any(p is not None and selects(s, p) for p in pods)
            ]
        if event.resource == SLICES.key:
            # A managed slice someone else changed or deleted is put back.
            versions = [v for v in (event.obj, event.old) if v is not None]
            return {
                (event.namespace, _labels(v)[SERVICE_NAME_LABEL])
                for v in versions
                if _labels(v).get(MANAGED_BY_LABEL) == CONTROLLER_NAME
                and _labels(v).get(SERVICE_NAME_LABEL)
            }
        if event.resource == NODES.key and _labels(event.obj).get(ZONE_LABEL) != _labels(
            event.old
        ).get(ZONE_LABEL):
            return [
                (s["metadata"]["namespace"], s["metadata"]["name"])
                for s in self.api.store.items(SERVICES.key)
            ]
        return []

    def _reconcile(self, key: ServiceKey) -> None:
        self._pending.discard(key)
        namespace, name = key
        service = self.api.store.get(SERVICES.key, namespace, name)
        if service is None:
            return  # its slices go with it (_collect)
        existing = [
            s
            for s in self.api.store.items(SLICES.key, namespace)
            if _labels(s).get(SERVICE_NAME_LABEL) == name
            and _labels(s).get(MANAGED_BY_LABEL) == CONTROLLER_NAME
        ]
        zones = {
            n["metadata"]["name"]: _labels(n)[ZONE_LABEL]
            for n in self.api.store.items(NODES.key)
            if _labels(n).get(ZONE_LABEL)
        }
        pods = list(self.api.store.items(PODS.key, namespace))
        plan = plan_slices(service, pods, existing, zones)
        if plan:
            self._apply(service, plan)

    def _apply(self, service: dict[str, Any], plan: SlicePlan) -> None:
        """Creates first, deletes last, as upstream: a reader never sees a gap. No new
        slices for a Service that is going."""
        meta = service["metadata"]
        creates = [] if meta.get("deletionTimestamp") else plan.create
        steps = [("create", b) for b in creates]
        steps += [("update", b) for b in plan.update] + [("delete", b) for b in plan.delete]
        for verb, body in steps:
            try:
                self._call(verb, meta["namespace"], body)
            except st.ApiError as exc:
                if exc.code != 404:  # a slice that is gone already is what we wanted
                    log.warning(
                        "service %s/%s: cannot %s an EndpointSlice: %s",
                        meta["namespace"],
                        meta["name"],
                        verb,
                        exc.message,
                    )

    def _call(self, verb: str, namespace: str, body: dict[str, Any]) -> None:
        if verb == "create":
            self.api.create(Target(SLICES, namespace, None, None), body)
            return
        target = Target(SLICES, namespace, body["metadata"]["name"], None)
        if verb == "update":
            self.api.update(target, body)
        else:
            self.api.delete(target)

    def _collect(self, namespace: str, uid: str | None) -> None:
        """Garbage collection: the slices a deleted Service owned go with it."""
        for slice_ in list(self.api.store.items(SLICES.key, namespace)):
            owners = slice_["metadata"].get("ownerReferences") or []
            if any(isinstance(o, dict) and o.get("uid") == uid for o in owners):
                with contextlib.suppress(st.ApiError):  # already gone
                    self._call("delete", namespace, slice_)
