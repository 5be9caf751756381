"""core/v1 Service and discovery.k8s.io/v1 EndpointSlice from API dicts.

Lenient where NetworkPolicy parsing is strict: the API server validated these, and
Picket only reads what kube-proxy reads (type, traffic policy, ports, and which
addresses a Service sends to). A field is refused only when its value cannot be read
at all (a wrong JSON type, an address that is no address, a type or protocol the API
has no such value for); what the API would refuse but still reads plainly (a port name
that breaks IANA syntax, say) is kept as it is."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from agent.model.errors import FieldErrors
from agent.model.fields import (
    get_int,
    get_list,
    get_map,
    get_optional_bool,
    get_str,
    get_str_map,
    list_of_maps,
)
from agent.model.names import port_number_problems
from agent.model.objects import (
    ADDRESS_TYPES,
    CLUSTER_IP,
    PROTOCOLS,
    SERVICE_NAME_LABEL,
    SERVICE_TYPES,
    TCP,
    TRAFFIC_CLUSTER,
    TRAFFIC_POLICIES,
    EndpointPort,
    EndpointSlice,
    IPAddress,
    Service,
    ServicePort,
    SliceEndpoint,
    ref,
)
from agent.model.parse_core import parse_ip, parse_meta

HEADLESS = "None"  # the clusterIP of a headless Service


def parse_service(
    obj: dict[str, Any], errs: FieldErrors, default_namespace: str = "default"
) -> Service:
    meta = parse_meta(obj, errs, namespaced=True, default_namespace=default_namespace)
    spec = get_map(obj, "spec", "spec", errs) or {}
    service_type = get_str(spec, "type", "spec.type", errs) or CLUSTER_IP
    if service_type not in SERVICE_TYPES:
        errs.not_supported("spec.type", service_type, list(SERVICE_TYPES))
    policy = get_str(spec, "externalTrafficPolicy", "spec.externalTrafficPolicy", errs) or None
    if policy is not None and policy not in TRAFFIC_POLICIES:
        errs.not_supported("spec.externalTrafficPolicy", policy, list(TRAFFIC_POLICIES))
    cluster_ips, headless = _cluster_ips(spec, errs)
    selector = get_str_map(spec, "selector", "spec.selector", errs)
    service = Service(
        namespace=meta.namespace,
        name=meta.name,
        type=service_type,
        cluster_ips=cluster_ips,
        headless=headless,
        ports=_service_ports(spec, errs),
        external_ips=_ips(spec, "externalIPs", "spec.externalIPs", errs),
        # An empty selector is no selector, as the API stores it.
        selector=selector or None,
    )
    # Defaulted as the API server does: Cluster on an externally reachable Service;
    # on others the field means nothing.
    if not service.externally_reachable:
        return replace(service, external_traffic_policy=None)
    return replace(service, external_traffic_policy=policy or TRAFFIC_CLUSTER)


def _ips(obj: dict[str, Any], key: str, path: str, errs: FieldErrors) -> tuple[IPAddress, ...]:
    found: list[IPAddress] = []
    for i, raw in enumerate(get_list(obj, key, path, errs) or []):
        ip = parse_ip(raw, f"{path}[{i}]", errs)
        if ip is not None and ip not in found:
            found.append(ip)
    return tuple(found)


def _cluster_ips(spec: dict[str, Any], errs: FieldErrors) -> tuple[tuple[IPAddress, ...], bool]:
    """spec.clusterIPs, or spec.clusterIP alone; "None" in either means headless."""
    single = get_str(spec, "clusterIP", "spec.clusterIP", errs)
    many = get_list(spec, "clusterIPs", "spec.clusterIPs", errs) or []
    headless = single == HEADLESS or HEADLESS in many
    found: list[IPAddress] = []
    raws = [("spec.clusterIP", single)] if single else []
    raws += [(f"spec.clusterIPs[{i}]", raw) for i, raw in enumerate(many)]
    for path, raw in raws:
        ip = None if raw == HEADLESS else parse_ip(raw, path, errs)
        if ip is not None and ip not in found:
            found.append(ip)
    return tuple(found), headless


def _service_ports(spec: dict[str, Any], errs: FieldErrors) -> tuple[ServicePort, ...]:
    ports = []
    for path, raw in list_of_maps(get_list(spec, "ports", "spec.ports", errs), "spec.ports", errs):
        before = len(errs)
        number = get_int(raw, "port", f"{path}.port", errs, required=True)
        _check_port(number, f"{path}.port", errs)
        protocol = _protocol(raw, path, errs)
        target = _target_port(raw, f"{path}.targetPort", errs)
        node_port = get_int(raw, "nodePort", f"{path}.nodePort", errs) or None
        _check_port(node_port, f"{path}.nodePort", errs)
        name = get_str(raw, "name", f"{path}.name", errs) or None
        if len(errs) == before and number is not None:
            ports.append(ServicePort(number, protocol, name, target, node_port))
    return tuple(ports)


def _target_port(raw: dict[str, Any], path: str, errs: FieldErrors) -> int | str | None:
    """An IntOrString: a number, or the name of a container port of each backend pod."""
    value = raw.get("targetPort")
    if value is None or value == "" or value == 0:
        return None  # defaults to `port`
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        _check_port(value, path, errs)
        return value
    errs.invalid(path, value, "must be an integer or a string")
    return None


def _check_port(number: int | None, path: str, errs: FieldErrors) -> None:
    for msg in port_number_problems(number) if number is not None else []:
        errs.invalid(path, number, msg)


def _protocol(raw: dict[str, Any], path: str, errs: FieldErrors) -> str:
    protocol = get_str(raw, "protocol", f"{path}.protocol", errs) or TCP
    if protocol not in PROTOCOLS:
        errs.not_supported(f"{path}.protocol", protocol, list(PROTOCOLS))
    return protocol


def parse_endpoint_slice(
    obj: dict[str, Any], errs: FieldErrors, default_namespace: str = "default"
) -> EndpointSlice:
    meta = parse_meta(obj, errs, namespaced=True, default_namespace=default_namespace)
    address_type = get_str(obj, "addressType", "addressType", errs, required=True) or ""
    if address_type and address_type not in ADDRESS_TYPES:
        errs.not_supported("addressType", address_type, list(ADDRESS_TYPES))
    # `endpoints` and `ports` may be null: no endpoints yet; ports not restricted.
    items = list_of_maps(get_list(obj, "endpoints", "endpoints", errs), "endpoints", errs)
    return EndpointSlice(
        namespace=meta.namespace,
        name=meta.name,
        service_name=meta.labels.get(SERVICE_NAME_LABEL) or None,
        address_type=address_type,
        endpoints=tuple(
            _slice_endpoint(raw, path, address_type, meta.namespace, errs) for path, raw in items
        ),
        ports=_endpoint_ports(obj, errs),
    )


def _slice_endpoint(
    raw: dict[str, Any], path: str, address_type: str, namespace: str, errs: FieldErrors
) -> SliceEndpoint:
    addresses: list[IPAddress] = []
    raws = get_list(raw, "addresses", f"{path}.addresses", errs, required=True) or []
    for i, value in enumerate(raws):
        # FQDN endpoints name hosts, not addresses: nothing a pod address can match.
        ip = None if address_type == "FQDN" else parse_ip(value, f"{path}.addresses[{i}]", errs)
        if ip is not None and ip not in addresses:
            addresses.append(ip)
    conditions = get_map(raw, "conditions", f"{path}.conditions", errs) or {}
    cpath = f"{path}.conditions"
    return SliceEndpoint(
        addresses=tuple(addresses),
        ready=get_optional_bool(conditions, "ready", f"{cpath}.ready", errs),
        serving=get_optional_bool(conditions, "serving", f"{cpath}.serving", errs),
        terminating=get_optional_bool(conditions, "terminating", f"{cpath}.terminating", errs),
        node_name=get_str(raw, "nodeName", f"{path}.nodeName", errs) or None,
        target_pod=_target_pod(raw, path, namespace, errs),
    )


def _target_pod(raw: dict[str, Any], path: str, namespace: str, errs: FieldErrors) -> str | None:
    """namespace/name of the targetRef when it is a Pod (a reference without a kind is
    taken as one: reading too many pods as backends costs rules, too few opens)."""
    target = get_map(raw, "targetRef", f"{path}.targetRef", errs)
    if target is None:
        return None
    kind = get_str(target, "kind", f"{path}.targetRef.kind", errs)
    name = get_str(target, "name", f"{path}.targetRef.name", errs)
    where = get_str(target, "namespace", f"{path}.targetRef.namespace", errs) or namespace
    return ref(where, name) if name and kind in (None, "", "Pod") else None


def _endpoint_ports(obj: dict[str, Any], errs: FieldErrors) -> tuple[EndpointPort, ...]:
    ports = []
    for path, raw in list_of_maps(get_list(obj, "ports", "ports", errs), "ports", errs):
        before = len(errs)
        number = get_int(raw, "port", f"{path}.port", errs)
        _check_port(number, f"{path}.port", errs)
        protocol = _protocol(raw, path, errs)
        name = get_str(raw, "name", f"{path}.name", errs) or None
        if len(errs) == before:
            ports.append(EndpointPort(number, protocol, name))
    return tuple(ports)
