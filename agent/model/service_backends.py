"""Where a connection to a Service's ClusterIP goes: the backend pods kube-proxy may
DNAT one Service port to, each with the target port it translates to (pure).

NetworkPolicy acts below Services: such a connection is judged as the same connection
to the backend pod kube-proxy picked (docs/semantics.md, "Services"), so the oracle
asks this first and then judges each backend (`service_verdicts`).

kube-proxy reads EndpointSlices, so a Service with slices in the state (a live cluster)
goes where they say. Manifests have none (no controller wrote them): then the backends
are what the EndpointSlice controller would write, the selected pods with the port
resolved per pod."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from agent.model.objects import EXTERNAL_NAME, EndpointSlice, Pod, Service, ServicePort, ref
from agent.model.oracle import Verdict, verdict
from agent.model.services import routed_to
from agent.model.state import ClusterState


class ServiceLookupError(LookupError):
    """A Service that does not exist, or has no ClusterIP port to connect to."""


@dataclass(frozen=True)
class Backend:
    pod: Pod
    port: int  # the target port kube-proxy DNATs to


def target_port(service_port: ServicePort, pod: Pod) -> int | None:
    """The pod's port for this Service port: a number as is (unset: the Service port);
    a name is the pod's container port of that name and protocol (the controller's
    FindPort), None when the pod has no such port and is no endpoint for it."""
    target = service_port.target_port
    if target is None:
        return service_port.port
    if isinstance(target, int):
        return target
    found = pod.named_ports(target, service_port.protocol)
    return found[0] if found else None


def service_backends(
    state: ClusterState, namespace: str, name: str, port: int, protocol: str
) -> tuple[Backend, ...]:
    """The backends of Service NAMESPACE/NAME's `port`/`protocol` (the Service port),
    by pod namespace/name. Raises ServiceLookupError naming the Service and why."""
    service = state.services.get(ref(namespace, name))
    if service is None:
        raise ServiceLookupError(f"no Service {ref(namespace, name)}")
    service_port = _service_port(service, port, protocol.upper())
    slices = state.slices_of(service.ref)
    found = (
        _from_slices(state, slices, service_port)
        if slices
        else _from_selector(state, service, service_port)
    )
    return tuple(sorted(set(found), key=lambda b: (b.pod.ref, b.port)))


def _service_port(service: Service, port: int, protocol: str) -> ServicePort:
    if service.headless or service.type == EXTERNAL_NAME:
        why = "is headless" if service.headless else "is an ExternalName"
        raise ServiceLookupError(f"Service {service.ref} {why}: clients reach its pods directly")
    for candidate in service.ports:
        if (candidate.port, candidate.protocol) == (port, protocol):
            return candidate
    have = ", ".join(f"{p.port}/{p.protocol}" for p in service.ports) or "none"
    raise ServiceLookupError(f"Service {service.ref} has no port {port}/{protocol} (it has {have})")


def _from_selector(
    state: ClusterState, service: Service, service_port: ServicePort
) -> Iterator[Backend]:
    # A Service without a selector has only the slices someone writes for it.
    if not service.selector:
        return
    for pod in state.endpoint_pods_in(service.namespace):
        selected = all(pod.labels.get(k) == v for k, v in service.selector.items())
        number = target_port(service_port, pod) if selected and pod.ips else None
        if number is not None:
            yield Backend(pod, number)


def _from_slices(
    state: ClusterState, slices: Iterable[EndpointSlice], service_port: ServicePort
) -> Iterator[Backend]:
    # Slice ports match Service ports by name and protocol; an unnamed one is "".
    wanted = (service_port.name or "", service_port.protocol)
    for endpoint_slice in slices:
        ports = [p.port for p in endpoint_slice.ports if (p.name or "", p.protocol) == wanted]
        if not ports or ports[0] is None:
            continue  # no such port here, or one without a number: kube-proxy skips it
        for endpoint in endpoint_slice.endpoints:
            pod = state.endpoint_pod_with_ip(endpoint.addresses[0]) if endpoint.addresses else None
            if routed_to(endpoint) and pod is not None:
                yield Backend(pod, ports[0])


def service_verdicts(
    state: ClusterState, src: Pod | str, namespace: str, name: str, port: int, protocol: str
) -> dict[str, Verdict]:
    """The verdict of a new connection from `src` to the Service's `port`, for each
    backend kube-proxy may pick (by pod namespace/name): the same connection to that
    pod on its target port, from the client's own address."""
    return {
        b.pod.ref: verdict(state, src, b.pod, protocol, b.port)
        for b in service_backends(state, namespace, name, port, protocol)
    }
