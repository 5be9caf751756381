"""One view of cluster state: the reads the compilers make, and which pods are endpoints.

A snapshot (`ClusterState`, rebuilt per sync) and a state changed one object at a time
(`LiveState`, the agent's) both offer these reads, so both compilers take either and
neither needs to know which it was handed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from agent.model.objects import (
    EndpointSlice,
    IPAddress,
    Namespace,
    NetworkPolicy,
    Node,
    Pod,
    Service,
)


def is_endpoint(pod: Pod) -> bool:
    """A pod policies can select and peers can match: not hostNetwork (those share the
    node's address and are not selected for isolation), not finished."""
    return not pod.host_network and not pod.is_terminal


def released_addresses(
    pairs: Iterable[tuple[Pod | None, Pod | None]],
) -> frozenset[IPAddress]:
    """The addresses an endpoint pod held in (old, new) pairs and holds no longer (it
    was deleted, finished or readdressed)."""
    out: set[IPAddress] = set()
    for old, new in pairs:
        if old is None or not is_endpoint(old):
            continue
        kept = set(new.ips) if new is not None and is_endpoint(new) else set()
        out.update(ip for ip in old.ips if ip not in kept)
    return frozenset(out)


def is_local_endpoint(pod: Pod, node: str) -> bool:
    """An endpoint this node enforces for: bound to `node`, and with an address to
    match on (one still being created has none yet)."""
    return pod.node_name == node and is_endpoint(pod) and bool(pod.ips)


@runtime_checkable
class ClusterView(Protocol):
    """What the compilers read of the cluster. Pod tuples come sorted by namespace/name,
    so whatever is built from them does not depend on which view was read."""

    @property
    def namespaces(self) -> Mapping[str, Namespace]: ...

    @property
    def nodes(self) -> Mapping[str, Node]: ...

    @property
    def services(self) -> Mapping[str, Service]: ...

    @property
    def endpoint_slices(self) -> Mapping[str, EndpointSlice]: ...

    @property
    def transit_backends(self) -> tuple[Pod, ...]:
        """Endpoint pods behind Services that kube-proxy balances across nodes for
        outside clients (agent/model/services.py), sorted by namespace/name."""
        ...

    @property
    def namespace_names(self) -> tuple[str, ...]:
        """Declared namespaces and those that pods live in, sorted."""
        ...

    @property
    def endpoint_pods(self) -> tuple[Pod, ...]:
        """Every endpoint (see `is_endpoint`) in the cluster."""
        ...

    def namespace_labels(self, name: str) -> dict[str, str]:
        """A namespace's labels; one not (yet) known still has the name label the API
        server puts on every namespace."""
        ...

    def policies_in(self, namespace: str) -> tuple[NetworkPolicy, ...]: ...

    def endpoint_pods_in(self, namespace: str) -> tuple[Pod, ...]: ...

    def endpoint_pod_with_ip(self, ip: IPAddress) -> Pod | None:
        """The endpoint holding `ip`; of several (briefly, while one replaces another),
        the last by namespace/name."""
        ...

    def pods_on(self, node: str) -> tuple[Pod, ...]:
        """Every pod bound to `node` (hostNetwork and finished ones included)."""
        ...


def local_endpoints(state: ClusterView, node: str) -> list[Pod]:
    """The node's pods under policy, by namespace/name."""
    return [p for p in state.pods_on(node) if is_local_endpoint(p, node)]
