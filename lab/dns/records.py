"""The cluster's DNS records, from Services and EndpointSlices (pure).

The names are those of the Kubernetes DNS-based service discovery specification
(kubernetes/dns, docs/specification.md, 1.1.0), A records only, IPv4 only:

- `<service>.<ns>.svc.<zone>` -> the Service's ClusterIP, for a Service that has one;
- a headless Service (`clusterIP: None`): `<service>.<ns>.svc.<zone>` -> every ready
  endpoint address of its EndpointSlices, and `<hostname>.<service>.<ns>.svc.<zone>`
  -> the address of each ready endpoint that has a hostname.

Not served: ExternalName (a CNAME) and SRV records, which dnsmasq's hosts files cannot
hold, and pod records (`<a-b-c-d>.<ns>.pod.<zone>`).
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, ip_address
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
HEADLESS = "None"

Record = tuple[str, str]  # (name without the final dot, IPv4 address)


def _ipv4(text: object) -> str | None:
    try:
        return str(IPv4Address(str(text)))
    except ValueError:
        return None


def cluster_ip(service: dict[str, Any], family: int | None = None) -> str | None:
    """The Service's ClusterIP of `family` (None: its primary one, the first of
    clusterIPs); None when headless, unallocated, ExternalName or of other families."""
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return None
    for text in [*(spec.get("clusterIPs") or []), spec.get("clusterIP")]:
        try:
            address = ip_address(str(text))
        except ValueError:
            continue  # None (headless), unset, or not an address
        if family is None or address.version == family:
            return str(address)
    return None


def cluster_ipv4(service: dict[str, Any]) -> str | None:
    """The Service's IPv4 ClusterIP (DNS serves A records only)."""
    return cluster_ip(service, 4)


def is_headless(service: dict[str, Any]) -> bool:
    spec = service.get("spec") or {}
    return spec.get("clusterIP") == HEADLESS and spec.get("type") != "ExternalName"


def _is_ready(endpoint: dict[str, Any]) -> bool:
    # "ready ... a nil value should be interpreted as true" (EndpointConditions).
    return (endpoint.get("conditions") or {}).get("ready") is not False


def ready_endpoints(slices: Iterable[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(address, hostname) of every ready IPv4 endpoint of these slices."""
    found = []
    for piece in slices:
        if piece.get("addressType", "IPv4") != "IPv4":
            continue
        for endpoint in piece.get("endpoints") or []:
            if not _is_ready(endpoint):
                continue
            for address in filter(None, map(_ipv4, endpoint.get("addresses") or [])):
                found.append((address, endpoint.get("hostname")))
    return found


def slices_by_service(slices: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[dict]]:
    """EndpointSlices grouped by the (namespace, name) of the Service their label names."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for piece in slices:
        meta = piece.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner:
            grouped.setdefault((meta.get("namespace", ""), owner), []).append(piece)
    return grouped


def service_records(
    services: Iterable[dict[str, Any]], slices: Iterable[dict[str, Any]], zone: str
) -> list[Record]:
    """Every record the cluster's DNS serves, sorted and without duplicates."""
    grouped = slices_by_service(slices)
    records: set[Record] = set()
    for service in services:
        meta = service.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        fqdn = f"{name}.{namespace}.svc.{zone}"
        address = cluster_ipv4(service)
        if address is not None:
            records.add((fqdn, address))
        elif is_headless(service):
            for ip, hostname in ready_endpoints(grouped.get((namespace, name), [])):
                records.add((fqdn, ip))
                if hostname:
                    records.add((f"{hostname}.{fqdn}", ip))
    return sorted(records)


def render_hosts(records: Iterable[Record]) -> str:
    """A hosts file, one `address name` line per record (dnsmasq reads it as given)."""
    lines = [f"{address} {name}" for name, address in records]
    return "".join(line + "\n" for line in lines)
