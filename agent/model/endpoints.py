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


def resolve(state: ClusterState, what: Pod | IPAddress | str) -> Endpoint:
    if isinstance(what, Pod):
        return _from_pod(state, what)
    if isinstance(what, str):
        return _from_text(state, what)
    return _from_ip(state, what)


def _from_text(state: ClusterState, text: str) -> Endpoint:
    try:
        return _from_ip(state, ip_address(text))
    except ValueError:
        pass
    pod = state.pods.get(text)
    if pod is None:
        raise UnknownEndpointError(f"no pod {text!r} (expected NAMESPACE/POD or an IP)")
    return _from_pod(state, pod)


def _from_pod(state: ClusterState, pod: Pod) -> Endpoint:
    if pod.host_network:
        # A hostNetwork pod uses its node's address: it is node traffic, not a pod.
        ip = pod.host_ip or (pod.ips[0] if pod.ips else None) or state.node_ip(pod.node_name or "")
        return Endpoint(NODE, ip, pod, pod.node_name)
    return Endpoint(POD, pod.ips[0] if pod.ips else None, pod, pod.node_name)


def _from_ip(state: ClusterState, ip: IPAddress) -> Endpoint:
    pod = state.endpoint_pod_with_ip(ip)
    if pod is not None:
        return Endpoint(POD, ip, pod, pod.node_name)
    node = state.node_by_ip(ip)
    if node is not None:
        return Endpoint(NODE, ip, None, node)
    return Endpoint(EXTERNAL, ip)
