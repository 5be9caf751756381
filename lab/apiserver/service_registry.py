"""The Service storage's part of a create or update that needs more than the object:
its IP family fields and its ClusterIP and NodePorts, allocated from the ranges the
server was started with, against what the stored Services hold.

The allocator is fed every stored Service at start and every change after (the store
calls its listeners synchronously, in the thread that commits), so within one server run
it always agrees with the store; the store lives in memory, so there is nothing else to
agree with across runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lab.apiserver import status as st
from lab.apiserver.resources import BY_PATH
from lab.apiserver.service_allocator import IPNetwork, ServiceAllocator
from lab.apiserver.service_defaults import init_ip_families, spec_of
from lab.apiserver.store import DELETED, Event, Store

SERVICES = BY_PATH[("", "v1", "services")]


class ServiceRegistry:
    def __init__(self, store: Store, cidrs: Sequence[IPNetwork], node_ports: range) -> None:
        """`cidrs`: the ClusterIP range of each family the cluster serves, the default
        family's first (kube-apiserver's --service-cluster-ip-range)."""
        self.allocator = ServiceAllocator(cidrs, node_ports)
        self.families = tuple(self.allocator.cidrs)
        for service in store.items(SERVICES.key):
            meta = service["metadata"]
            self.allocator.observe((meta["namespace"], meta["name"]), service)
        store.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if event.resource == SERVICES.key:
            key = (event.namespace, event.obj["metadata"]["name"])
            self.allocator.observe(key, None if event.type == DELETED else event.obj)

    def allocate(self, service: dict[str, Any], old: dict[str, Any] | None) -> None:
        """The admission step for Services (see admission.Allocate); raises the 422 or
        500 the real server sends."""
        meta = service.get("metadata") or {}
        old_spec = (old or {}).get("spec")
        old_spec = old_spec if isinstance(old_spec, dict) else None
        errs = init_ip_families(spec_of(service), old_spec, self.families)
        if errs:
            raise st.invalid(SERVICES, meta.get("name", ""), errs)
        self.allocator.allocate(service, (meta.get("namespace", ""), meta.get("name", "")))
