"""Which pods a node other than their own may send outside traffic to, after DNAT: the
backends of Services that kube-proxy load-balances across nodes for outside clients.

For such a Service (NodePort, LoadBalancer or externalIPs, with externalTrafficPolicy
Cluster) the node an outside client reaches picks a backend on any node, DNATs and
masquerades to its own address: the backend's node no longer sees the client. So the
DNATing node must judge the backend's ingress on the client's address, and needs the
rules of these pods: the compiler calls them transit endpoints.

Reading too many pods as backends only costs rules (the check a node makes for one of
them is the check its own node makes); reading too few would leave an ingress rule
unenforced for outside clients. Where the API leaves room, this reads more."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from agent.model.objects import TRAFFIC_LOCAL, EndpointSlice, IPAddress, Pod, Service, SliceEndpoint
from agent.model.view import is_endpoint


def balanced_across_nodes(service: Service) -> bool:
    """Whether outside clients reaching one node may be sent to a backend on another:
    an externally reachable Service whose externalTrafficPolicy is not Local (Local
    keeps them on the receiving node, unmasqueraded)."""
    return service.externally_reachable and service.external_traffic_policy != TRAFFIC_LOCAL


def routed_to(endpoint: SliceEndpoint) -> bool:
    """Whether kube-proxy may send new connections to this endpoint: ready (a null
    `ready` means ready), or serving while terminating, which kube-proxy falls back to
    when a Service has no ready endpoint."""
    return endpoint.ready is not False or endpoint.serving is True


def backend_pods(
    slices: Iterable[EndpointSlice],
    pods: Mapping[str, Pod],
    pod_with_ip: Callable[[IPAddress], Pod | None],
) -> set[str]:
    """Refs of the endpoint pods the slices' routed endpoints name: the pod holding
    each address (what kube-proxy DNATs to) and the targetRef's pod."""
    found: set[str] = set()
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.endpoints:
            if not routed_to(endpoint):
                continue
            candidates = [pod_with_ip(ip) for ip in endpoint.addresses]
            if endpoint.target_pod is not None:
                candidates.append(pods.get(endpoint.target_pod))
            found |= {p.ref for p in candidates if p is not None and is_endpoint(p)}
    return found


def transit_backends(
    services: Iterable[Service],
    slices_of: Callable[[str], Iterable[EndpointSlice]],
    pods: Mapping[str, Pod],
    pod_with_ip: Callable[[IPAddress], Pod | None],
) -> tuple[Pod, ...]:
    """The endpoint pods behind every Service balanced across nodes, by namespace/name.
    `slices_of(service ref)` gives the slices labelled with that Service's name."""
    refs: set[str] = set()
    for service in services:
        if balanced_across_nodes(service):
            refs |= backend_pods(slices_of(service.ref), pods, pod_with_ip)
    return tuple(pods[r] for r in sorted(refs))
