"""core/v1 objects from API dicts: metadata, Namespace, Node and Pod."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from typing import Any

from agent.model.errors import FieldErrors
from agent.model.fields import (
    get_bool,
    get_int,
    get_list,
    get_map,
    get_str,
    get_str_map,
    list_of_maps,
)
from agent.model.names import (
    check_labels,
    dns1123_label_problems,
    dns1123_subdomain_problems,
    port_name_problems,
    port_number_problems,
)
from agent.model.objects import PROTOCOLS, ContainerPort, IPAddress, Namespace, Node, Pod


@dataclass(frozen=True)
class Meta:
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def parse_meta(
    obj: dict[str, Any],
    errs: FieldErrors,
    namespaced: bool,
    default_namespace: str = "default",
    name_is_label: bool = False,
) -> Meta:
    """Name, namespace, labels, annotations. Objects without a namespace land in
    `default_namespace`, as `kubectl apply` puts them in the context's namespace."""
    meta = get_map(obj, "metadata", "metadata", errs, required=True) or {}
    name = get_str(meta, "name", "metadata.name", errs, required=True) or ""
    check = dns1123_label_problems if name_is_label else dns1123_subdomain_problems
    for msg in check(name) if name else []:
        errs.invalid("metadata.name", name, msg)
    namespace = ""
    if namespaced:
        namespace = get_str(meta, "namespace", "metadata.namespace", errs) or default_namespace
        for msg in dns1123_label_problems(namespace):
            errs.invalid("metadata.namespace", namespace, msg)
    labels = get_str_map(meta, "labels", "metadata.labels", errs)
    check_labels(labels, "metadata.labels", errs)
    annotations = get_str_map(meta, "annotations", "metadata.annotations", errs)
    return Meta(name, namespace, labels, annotations)


def parse_ip(raw: Any, path: str, errs: FieldErrors) -> IPAddress | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            return ip_address(raw)
        except ValueError:
            pass
    errs.invalid(path, raw, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
    return None


def parse_namespace(obj: dict[str, Any], errs: FieldErrors) -> Namespace:
    meta = parse_meta(obj, errs, namespaced=False, name_is_label=True)
    return Namespace(meta.name, meta.labels, meta.annotations)


def parse_node(obj: dict[str, Any], errs: FieldErrors) -> Node:
    meta = parse_meta(obj, errs, namespaced=False)
    spec = get_map(obj, "spec", "spec", errs) or {}
    status = get_map(obj, "status", "status", errs) or {}
    cidrs = get_list(spec, "podCIDRs", "spec.podCIDRs", errs) or []
    single = get_str(spec, "podCIDR", "spec.podCIDR", errs)
    pod_cidrs = []
    for i, raw in enumerate(cidrs or ([single] if single else [])):
        try:
            pod_cidrs.append(ip_network(raw, strict=False))
        except (ValueError, TypeError):
            errs.invalid(f"spec.podCIDRs[{i}]", raw, "must be a valid CIDR value")
    addresses = []
    items = get_list(status, "addresses", "status.addresses", errs)
    for path, item in list_of_maps(items, "status.addresses", errs):
        if item.get("type") in ("InternalIP", "ExternalIP"):
            ip = parse_ip(item.get("address"), f"{path}.address", errs)
            if ip is not None:
                addresses.append(ip)
    return Node(meta.name, meta.labels, tuple(addresses), tuple(pod_cidrs))


def parse_pod(obj: dict[str, Any], errs: FieldErrors, default_namespace: str = "default") -> Pod:
    meta = parse_meta(obj, errs, namespaced=True, default_namespace=default_namespace)
    spec = get_map(obj, "spec", "spec", errs, required=True) or {}
    status = get_map(obj, "status", "status", errs) or {}
    return Pod(
        namespace=meta.namespace,
        name=meta.name,
        labels=meta.labels,
        node_name=get_str(spec, "nodeName", "spec.nodeName", errs) or None,
        host_network=get_bool(spec, "hostNetwork", "spec.hostNetwork", errs),
        ips=_pod_ips(status, errs),
        host_ips=_pod_ips(status, errs, "hostIP", "hostIPs"),
        container_ports=_container_ports(spec, errs),
        phase=get_str(status, "phase", "status.phase", errs),
    )


def _pod_ips(
    status: dict[str, Any], errs: FieldErrors, single: str = "podIP", plural: str = "podIPs"
) -> tuple[IPAddress, ...]:
    """status.podIPs, or status.podIP alone; the first is the primary address (the
    same shape for hostIP and hostIPs)."""
    ips: list[IPAddress] = []
    path = f"status.{single}"
    primary = parse_ip(get_str(status, single, path, errs), path, errs)
    if primary is not None:
        ips.append(primary)
    items = get_list(status, plural, f"status.{plural}", errs)
    for path, item in list_of_maps(items, f"status.{plural}", errs):
        ip = parse_ip(item.get("ip"), f"{path}.ip", errs)
        if ip is not None and ip not in ips:
            ips.append(ip)
    return tuple(ips)


def _container_ports(spec: dict[str, Any], errs: FieldErrors) -> tuple[ContainerPort, ...]:
    containers = get_list(spec, "containers", "spec.containers", errs, required=True)
    if containers == []:
        errs.required("spec.containers")
    ports: list[ContainerPort] = []
    container_names: set[str] = set()
    port_names: set[str] = set()
    for path, container in list_of_maps(containers, "spec.containers", errs):
        name = get_str(container, "name", f"{path}.name", errs, required=True)
        for msg in dns1123_label_problems(name) if name else []:
            errs.invalid(f"{path}.name", name, msg)
        if name in container_names:
            errs.duplicate(f"{path}.name", name)
        container_names.add(name or "")
        get_str(container, "image", f"{path}.image", errs, required=True)
        items = get_list(container, "ports", f"{path}.ports", errs)
        for port_path, raw in list_of_maps(items, f"{path}.ports", errs):
            port = _container_port(raw, port_path, errs)
            if port and port.name:
                if port.name in port_names:
                    errs.duplicate(f"{port_path}.name", port.name)
                port_names.add(port.name)
            if port:
                ports.append(port)
    return tuple(ports)


def _container_port(raw: dict[str, Any], path: str, errs: FieldErrors) -> ContainerPort | None:
    before = len(errs)
    number = get_int(raw, "containerPort", f"{path}.containerPort", errs, required=True)
    for msg in port_number_problems(number) if number is not None else []:
        errs.invalid(f"{path}.containerPort", number, msg)
    protocol = get_str(raw, "protocol", f"{path}.protocol", errs) or "TCP"
    if protocol not in PROTOCOLS:
        errs.not_supported(f"{path}.protocol", protocol, list(PROTOCOLS))
    name = get_str(raw, "name", f"{path}.name", errs) or None
    for msg in port_name_problems(name) if name else []:
        errs.invalid(f"{path}.name", name, msg)
    if len(errs) != before or number is None:
        return None
    return ContainerPort(number, protocol, name)
