"""Which Service a DNATed connection went through, from the address the client sent it
to (pure: the caller holds whatever lock guards the cache).

kube-proxy DNATs, per Service port (port + protocol), its ClusterIPs at `port`, its
externalIPs at `port`, and for NodePort and LoadBalancer Services every node address
at `nodePort` (KUBE-SERVICES first, KUBE-NODEPORTS last, for local addresses only).
This reads the same frontends back from the agent's cache of Services. Not modelled:
LoadBalancer ingress addresses (status.loadBalancer), which the cache does not hold."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from agent.model.live import LiveState
from agent.model.objects import LOAD_BALANCER, NODE_PORT, IPAddress, Service

CLUSTER_IP, EXTERNAL_IP, NODE_PORT_FRONTEND = "ClusterIP", "externalIP", "NodePort"


@dataclass(frozen=True)
class Via:
    """Where the client sent a connection that DNAT took elsewhere: `ip`:`port`, and
    the Service (namespace/name) and kind of frontend that address is, or "" for both
    when no Service in the cache has it (another DNAT, or a Service already gone)."""

    ip: IPv4Address
    port: int
    service: str = ""
    frontend: str = ""

    def __str__(self) -> str:
        address = f"{self.ip}:{self.port}" if self.port else str(self.ip)
        if not self.service:
            return f"via {address} (no Service known)"
        kind = "" if self.frontend == CLUSTER_IP else f"{self.frontend} "
        return f"via Service {self.service} {kind}{address}"


def _serves(service: Service, port: int, protocol: str, node_port: bool) -> bool:
    for service_port in service.ports:
        if service_port.protocol != protocol:
            continue
        if (service_port.node_port if node_port else service_port.port) == port:
            return True
    return False


def frontend_of(
    services: Iterable[Service],
    node_addresses: Collection[IPAddress],
    ip: IPv4Address,
    port: int,
    protocol: str,
) -> tuple[Service, str] | None:
    """The Service and kind of frontend kube-proxy DNATs `ip`:`port`/`protocol` for, in
    kube-proxy's order (ClusterIPs and externalIPs, then node ports); None if none.
    ClusterIPs and node ports are unique per Service; an externalIP two Services share
    is the first one's, as kube-proxy's first matching rule is."""
    services = tuple(services)
    for service in services:
        if service.headless or not _serves(service, port, protocol, node_port=False):
            continue
        if ip in service.cluster_ips:
            return service, CLUSTER_IP
        if ip in service.external_ips:
            return service, EXTERNAL_IP
    if ip in node_addresses:
        for service in services:
            if service.type in (NODE_PORT, LOAD_BALANCER) and _serves(
                service, port, protocol, node_port=True
            ):
                return service, NODE_PORT_FRONTEND
    return None


def via(
    live: LiveState | None, sent_to: tuple[IPv4Address, int] | None, protocol: str
) -> Via | None:
    """What a drop record says of the Service: None for a connection DNAT left alone."""
    if sent_to is None:
        return None
    ip, port = sent_to
    if live is None:
        return Via(ip, port)
    nodes = {a for node in live.nodes.values() for a in node.addresses}
    found = frontend_of(live.services.values(), nodes, ip, port, protocol)
    return Via(ip, port) if found is None else Via(ip, port, found[0].ref, found[1])
