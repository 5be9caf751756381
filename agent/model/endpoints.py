"""The two ends of a connection, resolved against the cluster state: a pod under
NetworkPolicy, a node (node addresses and hostNetwork pods), or an external address."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address

from agent.model.objects import IPAddress, Pod
from agent.model.state import ClusterState

POD, NODE, EXTERNAL = "pod", "node", "external"


class UnknownEndpointError(LookupError):
    """A `namespace/name` that names no pod, or text that is neither a pod nor an IP."""


@dataclass(frozen=True)
class Endpoint:
    kind: str
    ip: IPAddress | None
    pod: Pod | None = None
    node: str | None = None

    @property
    def is_pod(self) -> bool:
        return self.kind == POD

    @property
    def is_node(self) -> bool:
        return self.kind == NODE

    def __str__(self) -> str:
        if self.kind == POD and self.pod is not None:
            return self.pod.ref
        if self.kind == NODE:
            via = f" via hostNetwork pod {self.pod.ref}" if self.pod is not None else ""
            return f"node {self.node or '?'}{f' ({self.ip})' if self.ip else ''}{via}"
        return str(self.ip)


def resolve(
    state: ClusterState, what: Pod | IPAddress | str, family: int | None = None
) -> Endpoint:
    """`family` (4 or 6) picks which address a pod or node is reached at (None: its
    primary one); an address given as such keeps its own family."""
    if isinstance(what, Pod):
        return _from_pod(state, what, family)
    if isinstance(what, str):
        return _from_text(state, what, family)
    return _from_ip(state, what)


def _from_text(state: ClusterState, text: str, family: int | None) -> Endpoint:
    try:
        return _from_ip(state, ip_address(text))
    except ValueError:
        pass
    pod = state.pods.get(text)
    if pod is None:
        raise UnknownEndpointError(f"no pod {text!r} (expected NAMESPACE/POD or an IP)")
    return _from_pod(state, pod, family)


def _of_family(ips: tuple[IPAddress | None, ...], family: int | None) -> IPAddress | None:
    return next((ip for ip in ips if ip is not None and family in (None, ip.version)), None)


def _from_pod(state: ClusterState, pod: Pod, family: int | None) -> Endpoint:
    if pod.host_network:
        # A hostNetwork pod uses its node's address: it is node traffic, not a pod.
        ip = _of_family((*pod.host_ips, *pod.ips), family) or state.node_ip(
            pod.node_name or "", family
        )
        return Endpoint(NODE, ip, pod, pod.node_name)
    # Every address of a pod is that pod; the one of the connection's family is its end.
    return Endpoint(POD, _of_family(pod.ips, family), pod, pod.node_name)


def _from_ip(state: ClusterState, ip: IPAddress) -> Endpoint:
    pod = state.endpoint_pod_with_ip(ip)
    if pod is not None:
        return Endpoint(POD, ip, pod, pod.node_name)
    node = state.node_by_ip(ip)
    if node is not None:
        return Endpoint(NODE, ip, None, node)
    return Endpoint(EXTERNAL, ip)
