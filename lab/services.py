"""Services as the lab's commands show and probe them (pure): the probe targets that
name a Service or a NodePort, a Service's ports, and its line in `lab status`."""

from __future__ import annotations

from typing import Any

from agent.portspec import parse_port_protocol
from lab.dns.records import cluster_ip, cluster_ips, is_headless, ready_endpoints

# svc/NS/NAME targets are agent.portspec's (expected.txt names them too).
NODEPORT_TARGET = "nodeport/"


def parse_nodeport_target(text: str) -> tuple[str, int, str]:
    """'nodeport/NODE/PORT[/PROTO]' -> (NODE, PORT, PROTO)."""
    node, _, port = text.removeprefix(NODEPORT_TARGET).partition("/")
    if not text.startswith(NODEPORT_TARGET) or not node or not port:
        raise ValueError(f"{text!r} is not nodeport/NODE/PORT[/PROTO]")
    number, protocol = parse_port_protocol(port)
    return node, number, protocol


def service_ports(service: dict[str, Any]) -> list[tuple[int, str, int | None]]:
    """(port, protocol, nodePort) of each Service port; TCP when the protocol is unset."""
    return [
        (p.get("port"), (p.get("protocol") or "TCP").upper(), p.get("nodePort"))
        for p in (service.get("spec") or {}).get("ports") or []
    ]


def probe_address(
    service: dict[str, Any], port: int, protocol: str, family: int | None = None
) -> str:
    """The ClusterIP (of `family`, else the primary one) to probe `port`/`protocol` of
    this Service at: the Service port, which kube-proxy translates to the endpoint's
    target port. Raises ValueError."""
    meta = service.get("metadata") or {}
    ref = f"{meta.get('namespace')}/{meta.get('name')}"
    address = cluster_ip(service, family)
    if address is None:
        why = "is headless" if is_headless(service) else "has no ClusterIP"
        if family is not None and cluster_ip(service) is not None:
            why = f"has no IPv{family} ClusterIP"
        raise ValueError(f"Service {ref} {why}: probe its pods instead")
    served = [(p, proto) for p, proto, _ in service_ports(service)]
    if (port, protocol) not in served:
        have = ", ".join(f"{p}/{proto}" for p, proto in served) or "none"
        raise ValueError(f"Service {ref} has no port {port}/{protocol} (it has {have})")
    return address


def _port_text(port: int, protocol: str, node_port: int | None) -> str:
    return f"{port}:{node_port}/{protocol}" if node_port else f"{port}/{protocol}"


def status_line(service: dict[str, Any], slices: list[dict[str, Any]]) -> str:
    """`ns/name  type  clusterIPs  ports  endpoints N` (clusterIPs: each family's, the
    primary first; N: ready endpoint addresses of every family)."""
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    ref = f"{meta.get('namespace')}/{meta.get('name')}"
    ports = ",".join(_port_text(*p) for p in service_ports(service)) or "-"
    address = ",".join(cluster_ips(service)) or spec.get("clusterIP") or "-"
    kind = spec.get("type") or "ClusterIP"
    ready = sum(len(ready_endpoints(slices, family)) for family in (4, 6))
    return f"{ref:40} {kind:12} {address:15} {ports:30} endpoints {ready}"
