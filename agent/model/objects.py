"""Typed, validated API objects: the only shapes the compiler and oracle see."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Literal

from agent.model.selectors import LabelSelector

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

TCP, UDP, SCTP = "TCP", "UDP", "SCTP"
PROTOCOLS = (TCP, UDP, SCTP)
# IP protocol numbers of what a datapath matches or reports (ICMP: only reported).
IP_PROTOCOL_NUMBERS = {TCP: 6, UDP: 17, SCTP: 132, "ICMP": 1}
IP_PROTOCOL_NAMES = {number: name for name, number in IP_PROTOCOL_NUMBERS.items()} | {
    58: "ICMPv6"  # only reported, as ICMP
}
INGRESS, EGRESS = "Ingress", "Egress"
POLICY_TYPES = (INGRESS, EGRESS)
Direction = Literal["Ingress", "Egress"]

# The label the API server puts on every namespace (NamespaceDefaultLabelName).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
TERMINAL_PHASES = ("Succeeded", "Failed")


def ref(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    annotations: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Node:
    name: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    addresses: tuple[IPAddress, ...] = ()
    pod_cidrs: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, order=True)
class ContainerPort:
    port: int
    protocol: str = TCP
    name: str | None = None


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    node_name: str | None = None
    host_network: bool = False
    ips: tuple[IPAddress, ...] = ()
    # status.hostIPs (a dual-stack node has one per family), the primary first.
    host_ips: tuple[IPAddress, ...] = ()
    container_ports: tuple[ContainerPort, ...] = ()
    phase: str | None = None

    @property
    def host_ip(self) -> IPAddress | None:
        return self.host_ips[0] if self.host_ips else None

    @property
    def ref(self) -> str:
        return ref(self.namespace, self.name)

    @property
    def is_terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def named_ports(self, name: str, protocol: str) -> tuple[int, ...]:
        """Container ports called `name` for `protocol` (named ports are per protocol)."""
        return tuple(
            p.port for p in self.container_ports if p.name == name and p.protocol == protocol
        )


@dataclass(frozen=True)
class SelectorPeer:
    """Pods chosen by selectors. A null namespace selector means the policy's own
    namespace; a null pod selector means every pod of the chosen namespaces."""

    namespace_selector: LabelSelector | None = None
    pod_selector: LabelSelector | None = None


@dataclass(frozen=True)
class IPBlockPeer:
    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    def contains(self, ip: IPAddress) -> bool:
        if ip.version != self.cidr.version or ip not in self.cidr:
            return False
        return not any(ip in hole for hole in self.excepts)


Peer = SelectorPeer | IPBlockPeer


@dataclass(frozen=True)
class PortSpec:
    """One entry of a rule's `ports`: a protocol, and a number, range or name (or all)."""

    protocol: str = TCP
    port: int | str | None = None
    end_port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return f"any/{self.protocol}"
        if self.end_port is not None:
            return f"{self.port}-{self.end_port}/{self.protocol}"
        return f"{self.port}/{self.protocol}"


@dataclass(frozen=True)
class Rule:
    """An ingress or egress rule. Empty `peers` means every peer (a missing or empty
    `from`/`to`); empty `ports` means every port and protocol."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PortSpec, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: tuple[str, ...]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()

    @property
    def ref(self) -> str:
        return ref(self.namespace, self.name)

    def rules(self, direction: str) -> tuple[Rule, ...]:
        return self.ingress if direction == INGRESS else self.egress

    def isolates(self, direction: str) -> bool:
        return direction in self.policy_types


# --- Services and EndpointSlices: what kube-proxy DNATs to ---------------------------

CLUSTER_IP, NODE_PORT, LOAD_BALANCER, EXTERNAL_NAME = (
    "ClusterIP",
    "NodePort",
    "LoadBalancer",
    "ExternalName",
)
SERVICE_TYPES = (CLUSTER_IP, NODE_PORT, LOAD_BALANCER, EXTERNAL_NAME)
TRAFFIC_CLUSTER, TRAFFIC_LOCAL = "Cluster", "Local"
TRAFFIC_POLICIES = (TRAFFIC_CLUSTER, TRAFFIC_LOCAL)
# The label that ties an EndpointSlice to its Service (discovery.k8s.io/v1).
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")


@dataclass(frozen=True)
class ServicePort:
    port: int
    protocol: str = TCP
    name: str | None = None
    target_port: int | str | None = None  # None: the same as `port`
    node_port: int | None = None


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    type: str = CLUSTER_IP
    cluster_ips: tuple[IPAddress, ...] = ()
    headless: bool = False  # clusterIP "None": DNS gives pod addresses, no NAT
    ports: tuple[ServicePort, ...] = ()
    # Set for externally reachable Services (see `externally_reachable`), else None.
    external_traffic_policy: str | None = None
    external_ips: tuple[IPAddress, ...] = ()
    selector: dict[str, str] | None = field(default=None, hash=False)

    @property
    def ref(self) -> str:
        return ref(self.namespace, self.name)

    @property
    def externally_reachable(self) -> bool:
        """Reached through a node's own address or one routed to the nodes (NodePort,
        LoadBalancer, externalIPs): kube-proxy's "ExternallyAccessible"."""
        if self.type == EXTERNAL_NAME:
            return False
        return self.type in (NODE_PORT, LOAD_BALANCER) or bool(self.external_ips)


@dataclass(frozen=True)
class SliceEndpoint:
    """One endpoint of an EndpointSlice. `ready` None means ready (the API's rule for
    consumers); `target_pod` is the targetRef's namespace/name when it is a Pod."""

    addresses: tuple[IPAddress, ...] = ()
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None
    node_name: str | None = None
    target_pod: str | None = None


@dataclass(frozen=True)
class EndpointPort:
    port: int | None = None  # None: every port (the API leaves it to the consumer)
    protocol: str = TCP
    name: str | None = None


@dataclass(frozen=True)
class EndpointSlice:
    namespace: str
    name: str
    service_name: str | None = None  # its kubernetes.io/service-name label
    address_type: str = "IPv4"
    endpoints: tuple[SliceEndpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()

    @property
    def ref(self) -> str:
        return ref(self.namespace, self.name)

    @property
    def service_ref(self) -> str | None:
        return ref(self.namespace, self.service_name) if self.service_name else None
