"""The cluster's DNS records, from Services and EndpointSlices (pure).

The names are those of the Kubernetes DNS-based service discovery specification
(kubernetes/dns, docs/specification.md, 1.1.0), an A record for each IPv4 address and
an AAAA record for each IPv6 one, as CoreDNS serves a dual-stack cluster:

- `<service>.<ns>.svc.<zone>` -> each of the Service's ClusterIPs (`clusterIPs`: one per
  family of a dual-stack Service), for a Service that has them;
- a headless Service (`clusterIP: None`): `<service>.<ns>.svc.<zone>` -> every ready
  endpoint address of its EndpointSlices of either family (`addressType` IPv4 or IPv6),
  and `<hostname>.<service>.<ns>.svc.<zone>` -> the addresses of each ready endpoint
  that has a hostname.

A name with addresses of one family only has no record of the other type (NODATA, as
the specification's "must exist" leaves it). Not served: ExternalName (a CNAME) and SRV
records, which dnsmasq's hosts files cannot hold, and pod records
(`<a-b-c-d>.<ns>.pod.<zone>`).
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import ip_address
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
HEADLESS = "None"
ADDRESS_TYPES = {4: "IPv4", 6: "IPv6"}  # EndpointSlice addressType per family

Record = tuple[str, str]  # (name without the final dot, IPv4 or IPv6 address)


def _address(text: object, family: int | None = None) -> str | None:
    """`text` as an address in its canonical form, if it is one (of `family`)."""
    try:
        address = ip_address(str(text))
    except ValueError:
        return None
    return str(address) if family in (None, address.version) else None


def cluster_ips(service: dict[str, Any]) -> list[str]:
    """The Service's ClusterIPs, the primary first (clusterIPs, else clusterIP); none
    when headless, unallocated or ExternalName."""
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return []
    found: list[str] = []
    for text in [*(spec.get("clusterIPs") or []), spec.get("clusterIP")]:
        address = _address(text)  # None (headless), unset, or not an address
        if address is not None and address not in found:
            found.append(address)
    return found


def cluster_ip(service: dict[str, Any], family: int | None = None) -> str | None:
    """The Service's ClusterIP of `family` (None: its primary one, the first of
    clusterIPs); None when headless, unallocated, ExternalName or of other families."""
    ips = [ip for ip in cluster_ips(service) if _address(ip, family)]
    return ips[0] if ips else None


def is_headless(service: dict[str, Any]) -> bool:
    spec = service.get("spec") or {}
    return spec.get("clusterIP") == HEADLESS and spec.get("type") != "ExternalName"


def _is_ready(endpoint: dict[str, Any]) -> bool:
    # "ready ... a nil value should be interpreted as true" (EndpointConditions).
    return (endpoint.get("conditions") or {}).get("ready") is not False


def ready_endpoints(
    slices: Iterable[dict[str, Any]], family: int = 4
) -> list[tuple[str, str | None]]:
    """(address, hostname) of every ready endpoint of these slices of `family` (their
    addressType; an address of another family in a slice is not its endpoint)."""
    found = []
    for piece in slices:
        if piece.get("addressType", "IPv4") != ADDRESS_TYPES[family]:
            continue
        for endpoint in piece.get("endpoints") or []:
            if not _is_ready(endpoint):
                continue
            for text in endpoint.get("addresses") or []:
                address = _address(text, family)
                if address is not None:
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


def _headless_records(fqdn: str, slices: list[dict[str, Any]]) -> set[Record]:
    records: set[Record] = set()
    for family in ADDRESS_TYPES:
        for ip, hostname in ready_endpoints(slices, family):
            records.add((fqdn, ip))
            if hostname:
                records.add((f"{hostname}.{fqdn}", ip))
    return records


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
        addresses = cluster_ips(service)
        records.update((fqdn, address) for address in addresses)
        if not addresses and is_headless(service):
            records |= _headless_records(fqdn, grouped.get((namespace, name), []))
    return sorted(records)


def render_hosts(records: Iterable[Record]) -> str:
    """A hosts file, one `address name` line per record (dnsmasq reads it as given, A
    and AAAA alike)."""
    lines = [f"{address} {name}" for name, address in records]
    return "".join(line + "\n" for line in lines)
