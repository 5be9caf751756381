"""A cluster state that changes one object at a time, keeping its indices current, and
says what each change touched. It is a ClusterView (agent/model/view.py), as
ClusterState is, so the compilers take either and the agent can compile a relabel
without rebuilding a snapshot of every pod."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.model.annotations import audited
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
from agent.model.state import ClusterState
from agent.model.view import is_endpoint


@dataclass
class Changes:
    """What changed since the compiler last looked."""

    pods: list[tuple[Pod | None, Pod | None]] = field(default_factory=list)  # (old, new)
    policy_namespaces: set[str] = field(default_factory=set)
    namespaces: set[str] = field(default_factory=set)  # labels changed, or came or went
    nodes: bool = False
    services: bool = False  # a Service or an EndpointSlice came, went or changed

    @property
    def empty(self) -> bool:
        return not (
            self.pods or self.policy_namespaces or self.namespaces or self.nodes or self.services
        )


class LiveState:
    def __init__(self) -> None:
        self.namespaces: dict[str, Namespace] = {}
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, Pod] = {}
        self.policies: dict[str, NetworkPolicy] = {}
        self.services: dict[str, Service] = {}
        self.endpoint_slices: dict[str, EndpointSlice] = {}
        self._slices_by_service: dict[str, dict[str, EndpointSlice]] = {}
        self._pods_by_ns: dict[str, dict[str, Pod]] = {}
        self._pods_by_node: dict[str | None, dict[str, Pod]] = {}
        self._policies_by_ns: dict[str, dict[str, NetworkPolicy]] = {}
        self._pods_by_ip: dict[IPAddress, set[str]] = {}
        self.changes = Changes()

    @classmethod
    def from_state(cls, state: ClusterState) -> LiveState:
        live = cls()
        for obj in [
            *state.namespaces.values(),
            *state.nodes.values(),
            *state.pods.values(),
            *state.policies.values(),
            *state.services.values(),
            *state.endpoint_slices.values(),
        ]:
            live.put(obj)
        live.changes = Changes()
        return live

    # --- changes -----------------------------------------------------------------------

    def put(self, obj: ApiObject) -> None:
        if isinstance(obj, Pod):
            self._set_pod(obj.ref, obj)
        elif isinstance(obj, NetworkPolicy):
            self._set_policy(obj.ref, obj.namespace, obj)
        elif isinstance(obj, Namespace):
            self._set_namespace(obj.name, obj)
        elif isinstance(obj, Node):
            self.nodes[obj.name] = obj
            self.changes.nodes = True
        elif isinstance(obj, Service):
            self._set_service(obj.ref, obj)
        elif isinstance(obj, EndpointSlice):
            self._set_slice(obj.ref, obj)

    def remove(self, kind: str, key: str) -> None:
        """`key` is namespace/name for namespaced kinds, the name otherwise."""
        if kind == "Pod":
            self._set_pod(key, None)
        elif kind == "NetworkPolicy":
            self._set_policy(key, key.split("/", 1)[0], None)
        elif kind == "Namespace":
            self._set_namespace(key, None)
        elif kind == "Node" and self.nodes.pop(key, None) is not None:
            self.changes.nodes = True
        elif kind == "Service":
            self._set_service(key, None)
        elif kind == "EndpointSlice":
            self._set_slice(key, None)

    def _set_pod(self, ref: str, pod: Pod | None) -> None:
        old = self.pods.pop(ref, None)
        if old is not None:
            self._pods_by_ns.get(old.namespace, {}).pop(ref, None)
            self._pods_by_node.get(old.node_name, {}).pop(ref, None)
            for ip in old.ips:
                self._pods_by_ip.get(ip, set()).discard(ref)
        if pod is not None:
            self.pods[ref] = pod
            self._pods_by_ns.setdefault(pod.namespace, {})[ref] = pod
            self._pods_by_node.setdefault(pod.node_name, {})[ref] = pod
            for ip in pod.ips:
                self._pods_by_ip.setdefault(ip, set()).add(ref)
        if old != pod:
            self.changes.pods.append((old, pod))

    def _set_policy(self, ref: str, namespace: str, policy: NetworkPolicy | None) -> None:
        old = self.policies.pop(ref, None)
        self._policies_by_ns.get(namespace, {}).pop(ref, None)
        if policy is not None:
            self.policies[ref] = policy
            self._policies_by_ns.setdefault(namespace, {})[ref] = policy
        if old != policy:
            self.changes.policy_namespaces.add(namespace)

    def _set_service(self, ref: str, service: Service | None) -> None:
        old = self.services.pop(ref, None)
        if service is not None:
            self.services[ref] = service
        if old != service:
            self.changes.services = True

    def _set_slice(self, ref: str, endpoint_slice: EndpointSlice | None) -> None:
        old = self.endpoint_slices.pop(ref, None)
        if old is not None and old.service_ref is not None:
            self._slices_by_service.get(old.service_ref, {}).pop(ref, None)
        if endpoint_slice is not None:
            self.endpoint_slices[ref] = endpoint_slice
            if endpoint_slice.service_ref is not None:
                owner = endpoint_slice.service_ref
                self._slices_by_service.setdefault(owner, {})[ref] = endpoint_slice
        if old != endpoint_slice:
            self.changes.services = True

    def _set_namespace(self, name: str, namespace: Namespace | None) -> None:
        old = self.namespaces.pop(name, None)
        if namespace is not None:
            self.namespaces[name] = namespace
        if (old.labels if old else None) != (namespace.labels if namespace else None):
            self.changes.namespaces.add(name)
        if audited(old) != audited(namespace):
            self.changes.policy_namespaces.add(name)  # its endpoints change mode

    def take_changes(self) -> Changes:
        changes, self.changes = self.changes, Changes()
        return changes

    # --- reads: the ClusterView ------------------------------------------------------

    def namespace_labels(self, name: str) -> dict[str, str]:
        namespace = self.namespaces.get(name)
        return namespace.labels if namespace is not None else {NAMESPACE_NAME_LABEL: name}

    def policies_in(self, namespace: str) -> tuple[NetworkPolicy, ...]:
        found = self._policies_by_ns.get(namespace, {})
        return tuple(found[ref] for ref in sorted(found))

    @property
    def namespace_names(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.namespaces) | {n for n, p in self._pods_by_ns.items() if p}))

    @property
    def endpoint_pods(self) -> tuple[Pod, ...]:
        return tuple(self.pods[r] for r in sorted(self.pods) if is_endpoint(self.pods[r]))

    def endpoint_pods_in(self, namespace: str) -> tuple[Pod, ...]:
        found = self._pods_by_ns.get(namespace, {})
        return tuple(found[r] for r in sorted(found) if is_endpoint(found[r]))

    def endpoint_pod_with_ip(self, ip: IPAddress) -> Pod | None:
        """The endpoint holding `ip`; of several (briefly, while one replaces another),
        the last by namespace/name, as ClusterState's indices resolve it."""
        refs = sorted(r for r in self._pods_by_ip.get(ip, ()) if is_endpoint(self.pods[r]))
        return self.pods[refs[-1]] if refs else None

    def slices_of(self, service: str) -> tuple[EndpointSlice, ...]:
        """The EndpointSlices labelled with the Service `service` (namespace/name)."""
        found = self._slices_by_service.get(service, {})
        return tuple(found[r] for r in sorted(found))

    @property
    def transit_backends(self) -> tuple[Pod, ...]:
        """Computed when asked (the compiler asks only after a change that can move it):
        the cost is the endpoints of Services balanced across nodes, not every pod."""
        return transit_backends(
            self.services.values(), self.slices_of, self.pods, self.endpoint_pod_with_ip
        )

    def pods_on(self, node: str) -> tuple[Pod, ...]:
        found = self._pods_by_node.get(node, {})
        return tuple(found[r] for r in sorted(found))
