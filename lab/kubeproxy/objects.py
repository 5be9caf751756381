"""Services and EndpointSlices, as API dicts, into what kube-proxy programs (pure).

What kube-proxy skips, we skip: a Service with no cluster IP yet (not allocated), a
headless one (clusterIP None: DNS only, no rules), an ExternalName one; addresses of
another family than the proxier's (one proxier per family, as kube-proxy's
dual-stack mode runs them); slices without the
`kubernetes.io/service-name` label; slice ports without a name (the upstream
EndpointSlice controller always writes one, "" for an unnamed port) or a number.
Malformed fields are reported as problems naming the object and the field, and only
that port is left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service: what kube-proxy calls a ServicePortName and its info."""

    namespace: str
    service: str
    port_name: str  # "" for an unnamed port
    protocol: str  # TCP, UDP or SCTP
    cluster_ip: str
    port: int
    node_port: int | None
    external_local: bool  # externalTrafficPolicy: Local
    internal_local: bool  # internalTrafficPolicy: Local

    @property
    def service_ref(self) -> str:
        return f"{self.namespace}/{self.service}"

    @property
    def name_string(self) -> str:
        """`ns/name:port-name`, or `ns/name` for an unnamed port (kube-proxy's String())."""
        return self.service_ref + (f":{self.port_name}" if self.port_name else "")

    @property
    def key(self) -> PortKey:
        return (self.namespace, self.service, self.port_name, self.protocol)

    # A Service is reachable from outside through its node port (we have no
    # LoadBalancer or external IPs); the traffic policies mean what the API says:
    # "Local" sends traffic only to endpoints on the node that received it.
    @property
    def externally_accessible(self) -> bool:
        return self.node_port is not None

    @property
    def external_policy_local(self) -> bool:
        return self.externally_accessible and self.external_local

    @property
    def uses_cluster_endpoints(self) -> bool:
        # Local external policy still short-circuits pod and node traffic to all endpoints.
        return not self.internal_local or self.external_policy_local

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_local or self.external_policy_local


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    node: str | None
    ready: bool
    serving: bool
    terminating: bool

    @property
    def address(self) -> str:
        """ip:port, [ip]:port for IPv6 (what DNAT --to-destination takes)."""
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


PortKey = tuple[str, str, str, str]  # namespace, service, port name, protocol


def _of_family(text: object, family: int) -> str | None:
    try:
        address = ip_address(str(text))
    except ValueError:
        return None
    return str(address) if address.version == family else None


def _ref(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', 'object')} {meta.get('namespace', '')}/{meta.get('name', '')}"


def _port_number(value: object) -> int | None:
    return value if isinstance(value, int) and 0 < value < 65536 else None


def service_ports(
    services: Iterable[dict[str, Any]], family: int = 4
) -> tuple[list[ServicePort], list[str]]:
    """The service ports to program for `family` (their ClusterIP of that family), and
    the problems found (one line each)."""
    ports: list[ServicePort] = []
    problems: list[str] = []
    for svc in services:
        spec = svc.get("spec") or {}
        candidates = [*(spec.get("clusterIPs") or []), spec.get("clusterIP")]
        cluster_ip = next((ip for ip in (_of_family(c, family) for c in candidates) if ip), None)
        if cluster_ip is None or spec.get("type") == "ExternalName":
            continue  # not allocated yet, headless, ExternalName, or not of this family
        for i, port in enumerate(spec.get("ports") or []):
            parsed = _service_port(svc, spec, cluster_ip, port)
            if isinstance(parsed, str):
                problems.append(f"{_ref(svc)}: spec.ports[{i}].{parsed}")
            else:
                ports.append(parsed)
    return sorted(ports, key=lambda p: (p.name_string, p.protocol)), problems


def _service_port(
    svc: dict[str, Any], spec: dict[str, Any], cluster_ip: str, port: dict[str, Any]
) -> ServicePort | str:
    """A ServicePort, or the field that is wrong and why."""
    protocol = port.get("protocol") or "TCP"
    if protocol not in PROTOCOLS:
        return f"protocol: Unsupported value: {protocol!r}"
    number = _port_number(port.get("port"))
    if number is None:
        return f"port: Invalid value: {port.get('port')!r}"
    node_port = port.get("nodePort")
    if node_port not in (None, 0) and _port_number(node_port) is None:
        return f"nodePort: Invalid value: {node_port!r}"
    meta = svc.get("metadata") or {}
    return ServicePort(
        namespace=meta.get("namespace", ""),
        service=meta.get("name", ""),
        port_name=port.get("name") or "",
        protocol=protocol,
        cluster_ip=cluster_ip,
        port=number,
        node_port=node_port or None,
        external_local=spec.get("externalTrafficPolicy") == "Local",
        internal_local=spec.get("internalTrafficPolicy") == "Local",
    )


def slice_endpoints(
    slices: Iterable[dict[str, Any]], node: str, family: int = 4
) -> dict[PortKey, tuple[Endpoint, ...]]:
    """Endpoints per service port from every slice of `family` of every Service,
    deduplicated by ip:port (a copy on `node` wins) and sorted by ip:port as text, as
    kube-proxy sorts."""
    found: dict[PortKey, dict[str, Endpoint]] = {}
    ordered = sorted(slices, key=lambda s: (s.get("metadata") or {}).get("name", ""))
    for es in ordered:
        meta = es.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service or es.get("addressType") != f"IPv{family}":
            continue
        for port in es.get("ports") or []:
            number, name = _port_number(port.get("port")), port.get("name")
            if number is None or name is None:
                continue
            key = (meta.get("namespace", ""), service, name, port.get("protocol") or "TCP")
            chosen = found.setdefault(key, {})
            for endpoint in _endpoints(es.get("endpoints") or [], number, family):
                if endpoint.address not in chosen or endpoint.node == node:
                    chosen[endpoint.address] = endpoint
    return {k: tuple(v[a] for a in sorted(v)) for k, v in found.items()}


def _endpoints(entries: list[dict[str, Any]], port: int, family: int) -> Iterable[Endpoint]:
    for entry in entries:
        ip = _of_family((entry.get("addresses") or [None])[0], family)
        if ip is None:
            continue  # kube-proxy uses an endpoint's first address only
        conditions = entry.get("conditions") or {}
        # Unset conditions: ready and serving unless said otherwise, not terminating.
        ready = conditions.get("ready") is not False
        yield Endpoint(
            ip=ip,
            port=port,
            node=entry.get("nodeName"),
            ready=ready,
            serving=conditions.get("serving") is not False,
            terminating=conditions.get("terminating") is True,
        )
