"""A snapshot of the cluster objects the agent cares about, with lookup indices. It is
a ClusterView (agent/model/view.py), as LiveState is."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from agent.model.objects import (
    NAMESPACE_NAME_LABEL,
    EndpointSlice,
    IPAddress,
    Namespace,
    NetworkPolicy,
    Node,
    Pod,
    Service,
)
from agent.model.parse import ApiObject
from agent.model.services import transit_backends
from agent.model.view import is_endpoint


@dataclass(frozen=True)
class ClusterState:
    """Immutable by convention: build a new one for each snapshot."""

    namespaces: dict[str, Namespace] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)
    policies: dict[str, NetworkPolicy] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    endpoint_slices: dict[str, EndpointSlice] = field(default_factory=dict)

    @classmethod
    def from_objects(cls, objects: Iterable[ApiObject]) -> ClusterState:
        """Later objects with the same identity replace earlier ones."""
        state = cls()
        for obj in objects:
            if isinstance(obj, Namespace):
                state.namespaces[obj.name] = obj
            elif isinstance(obj, Node):
                state.nodes[obj.name] = obj
            elif isinstance(obj, Pod):
                state.pods[obj.ref] = obj
            elif isinstance(obj, NetworkPolicy):
                state.policies[obj.ref] = obj
            elif isinstance(obj, Service):
                state.services[obj.ref] = obj
            elif isinstance(obj, EndpointSlice):
                state.endpoint_slices[obj.ref] = obj
        return state

    def namespace_labels(self, name: str) -> dict[str, str]:
        """A namespace's labels. One not (yet) known still has the label the API server
        puts on every namespace, so selectors on its name keep working."""
        namespace = self.namespaces.get(name)
        if namespace is None:
            return {NAMESPACE_NAME_LABEL: name}
        return namespace.labels

    def policies_in(self, namespace: str) -> tuple[NetworkPolicy, ...]:
        return self._policies_by_namespace.get(namespace, ())

    @cached_property
    def _policies_by_namespace(self) -> dict[str, tuple[NetworkPolicy, ...]]:
        index: dict[str, list[NetworkPolicy]] = {}
        for ref in sorted(self.policies):
            policy = self.policies[ref]
            index.setdefault(policy.namespace, []).append(policy)
        return {ns: tuple(ps) for ns, ps in index.items()}

    @cached_property
    def endpoint_pods(self) -> tuple[Pod, ...]:
        """Pods that policies can select and peers can match (view.is_endpoint)."""
        return tuple(self.pods[r] for r in sorted(self.pods) if is_endpoint(self.pods[r]))

    def endpoint_pods_in(self, namespace: str) -> tuple[Pod, ...]:
        return self._endpoint_pods_by_namespace.get(namespace, ())

    @cached_property
    def _endpoint_pods_by_namespace(self) -> dict[str, tuple[Pod, ...]]:
        index: dict[str, list[Pod]] = {}
        for pod in self.endpoint_pods:
            index.setdefault(pod.namespace, []).append(pod)
        return {ns: tuple(pods) for ns, pods in index.items()}

    @cached_property
    def namespace_names(self) -> tuple[str, ...]:
        """Declared namespaces and those that pods live in."""
        return tuple(sorted(set(self.namespaces) | {p.namespace for p in self.pods.values()}))

    def pods_on(self, node: str) -> tuple[Pod, ...]:
        """Every pod bound to `node` (hostNetwork and finished ones included), by ref."""
        return self._pods_by_node.get(node, ())

    @cached_property
    def _pods_by_node(self) -> dict[str | None, tuple[Pod, ...]]:
        index: dict[str | None, list[Pod]] = {}
        for ref in sorted(self.pods):
            index.setdefault(self.pods[ref].node_name, []).append(self.pods[ref])
        return {node: tuple(pods) for node, pods in index.items()}

    def endpoint_pod_with_ip(self, ip: IPAddress) -> Pod | None:
        """The endpoint holding `ip`; of several, the last by namespace/name."""
        return self._pods_by_ip.get(ip)

    @cached_property
    def _pods_by_ip(self) -> dict[IPAddress, Pod]:
        return {ip: pod for pod in self.endpoint_pods for ip in pod.ips}

    def slices_of(self, service: str) -> tuple[EndpointSlice, ...]:
        """The EndpointSlices labelled with the Service `service` (namespace/name)."""
        return self._slices_by_service.get(service, ())

    @cached_property
    def _slices_by_service(self) -> dict[str, tuple[EndpointSlice, ...]]:
        index: dict[str, list[EndpointSlice]] = {}
        for ref in sorted(self.endpoint_slices):
            owner = self.endpoint_slices[ref].service_ref
            if owner is not None:
                index.setdefault(owner, []).append(self.endpoint_slices[ref])
        return {service: tuple(slices) for service, slices in index.items()}

    @cached_property
    def transit_backends(self) -> tuple[Pod, ...]:
        return transit_backends(
            self.services.values(), self.slices_of, self.pods, self.endpoint_pod_with_ip
        )

    def node_by_ip(self, ip: IPAddress) -> str | None:
        """The node that owns `ip` (a Node address, or the host IP reported by a pod)."""
        return self._nodes_by_ip.get(ip)

    @cached_property
    def _nodes_by_ip(self) -> dict[IPAddress, str]:
        index: dict[IPAddress, str] = {}
        for pod in self.pods.values():
            for ip in pod.host_ips if pod.node_name else ():
                index[ip] = pod.node_name
        for node in self.nodes.values():
            for ip in node.addresses:
                index[ip] = node.name
        return index

    def node_ip(self, name: str, family: int | None = None) -> IPAddress | None:
        """An address of node `name` (of `family` when given), if any object tells it."""
        node = self.nodes.get(name)
        known = [ip for ip in node.addresses] if node is not None else []
        known += [ip for ip, n in sorted(self._nodes_by_ip.items(), key=str) if n == name]
        return next((ip for ip in known if family is None or ip.version == family), None)
