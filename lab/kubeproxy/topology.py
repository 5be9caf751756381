"""Which endpoints a service port sends traffic to from this node (pure): kube-proxy's
CategorizeEndpoints (pkg/proxy/topology.go), without topology hints.

- Cluster policy: the ready endpoints anywhere; with none ready anywhere, those still
  serving while terminating (so a rolling update does not drop connections).
- Local policy: the ready endpoints on this node; with none, this node's serving and
  terminating ones.
- `has_any`: some usable endpoint exists anywhere. With none, the Service has no rules
  in the nat table, only filter rules that reject its traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lab.kubeproxy.objects import Endpoint, ServicePort


@dataclass(frozen=True)
class Categorized:
    cluster: tuple[Endpoint, ...]
    local: tuple[Endpoint, ...]
    reachable: tuple[Endpoint, ...]  # every endpoint that gets a KUBE-SEP chain
    has_any: bool


def _only(endpoints: Sequence[Endpoint], keep: Callable[[Endpoint], bool]) -> tuple[Endpoint, ...]:
    return tuple(e for e in endpoints if keep(e))


def _serving_terminating(e: Endpoint) -> bool:
    return e.serving and e.terminating


def categorize(port: ServicePort, endpoints: Sequence[Endpoint], node: str) -> Categorized:
    cluster: tuple[Endpoint, ...] = ()
    if port.uses_cluster_endpoints:
        cluster = _only(endpoints, lambda e: e.ready) or _only(endpoints, _serving_terminating)
    if not port.uses_local_endpoints:
        return Categorized(cluster, (), cluster, bool(cluster))
    has_any = bool(cluster) or any(e.ready or _serving_terminating(e) for e in endpoints)
    on_node = _only(endpoints, lambda e: e.node == node)
    local = _only(on_node, lambda e: e.ready) or _only(on_node, _serving_terminating)
    if not port.uses_cluster_endpoints:
        return Categorized((), local, local, has_any)
    # Cluster holds every ready endpoint, so it covers the local ones unless those are
    # terminating fallbacks: then the two lists are merged (by ip:port, sorted).
    merged = {e.address: e for e in (*cluster, *local)}
    return Categorized(cluster, local, tuple(merged[a] for a in sorted(merged)), has_any)
