"""Server-side printing of Services and EndpointSlices: the columns and cells of
upstream's printService and printEndpointSlice (pkg/printers/internalversion), as the
API server fills them (wide cells included)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from lab.apiserver.printing import AGE, NAME, Column, age, name, sub

SERVICE_COLUMNS: dict[str, list[Column]] = {
    "services": [
        NAME,
        ("Type", "string", 0, "type determines how the Service is exposed."),
        ("Cluster-IP", "string", 0, "clusterIP is the IP address of the service."),
        (
            "External-IP",
            "string",
            0,
            "externalIPs is a list of IP addresses for which nodes accept traffic.",
        ),
        ("Port(s)", "string", 0, "The list of ports that are exposed by this service."),
        AGE,
        (
            "Selector",
            "string",
            1,
            "Route service traffic to pods with label keys and values matching this selector.",
        ),
    ],
    "endpointslices": [
        NAME,
        (
            "AddressType",
            "string",
            0,
            "addressType specifies the type of address carried by this EndpointSlice.",
        ),
        (
            "Ports",
            "string",
            0,
            "ports specifies the list of network ports exposed by each endpoint.",
        ),
        ("Endpoints", "string", 0, "endpoints is a list of unique endpoints in this slice."),
        AGE,
    ],
}


def _service_cells(svc: dict, now: datetime) -> list[Any]:
    spec = sub(svc, "spec")
    ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
    pieces = [
        f"{p.get('port')}:{p['nodePort']}/{p.get('protocol')}"
        if p.get("nodePort")
        else f"{p.get('port')}/{p.get('protocol')}"
        for p in ports
    ]
    selector = spec.get("selector") or {}
    return [
        name(svc),
        spec.get("type", ""),
        (spec.get("clusterIPs") or ["<none>"])[0],
        _external_ip(svc),
        ",".join(pieces) or "<none>",
        age(svc, now),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
    ]


def _external_ip(svc: dict) -> str:
    """getServiceExternalIP, wide: what reaches the Service from outside the cluster."""
    spec = sub(svc, "spec")
    external = [str(ip) for ip in spec.get("externalIPs") or []]
    kind = spec.get("type")
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if kind == "ExternalName":
        return spec.get("externalName") or ""
    if kind == "LoadBalancer":
        ingress = sub(svc, "status", "loadBalancer").get("ingress") or []
        found = [i.get("ip") or i.get("hostname") for i in ingress if isinstance(i, dict)]
        return ",".join([f for f in found if f] + external) or "<pending>"
    return "<unknown>"


def _few(values: list[str]) -> str:
    """listWithMoreString: three values, then how many more."""
    if len(values) > 3:
        return f"{','.join(values[:3])} + {len(values) - 3} more..."
    return ",".join(values) or "<unset>"


def _endpointslice_cells(eps: dict, now: datetime) -> list[Any]:
    ports = [p for p in eps.get("ports") or [] if isinstance(p, dict)]
    port_texts = [
        str(p["port"]) if p.get("port") is not None else p.get("name") or "*" for p in ports
    ]
    endpoints = [e for e in eps.get("endpoints") or [] if isinstance(e, dict)]
    addresses = [str(a) for e in endpoints for a in e.get("addresses") or []]
    return [
        name(eps),
        eps.get("addressType", ""),
        _few(port_texts),
        _few(addresses),
        age(eps, now),
    ]


SERVICE_CELLS: dict[str, Callable[[dict, datetime], list[Any]]] = {
    "services": _service_cells,
    "endpointslices": _endpointslice_cells,
}
