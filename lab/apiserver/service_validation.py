"""Service validation as kube-apiserver (v1.32) does it, after defaulting and allocation
(`ValidateServiceCreate`, `ValidateServiceUpdate`), with its field paths and messages.

A shape the Go decoder would refuse outright (a selector value that is not a string, a
port that is not a number) is a 422 naming the field here, so that the error says where
the problem is."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from agent.model.errors import FieldErrors
from agent.model.names import (
    check_labels,
    dns1123_label_problems,
    dns1123_subdomain_problems,
    port_name_problems,
    port_number_problems,
    qualified_name_problems,
)
from lab.apiserver.service_defaults import (
    CLUSTER_IP,
    EXTERNAL_NAME,
    HEADLESS,
    IPV4,
    IPV6,
    LOAD_BALANCER,
    NODE_PORT,
    PREFER_DUAL,
    REQUIRE_DUAL,
    SINGLE_STACK,
    externally_accessible,
    int_or_none,
    is_headless,
    needs_health_check,
)

TYPES = [CLUSTER_IP, EXTERNAL_NAME, LOAD_BALANCER, NODE_PORT]
PROTOCOLS = ["SCTP", "TCP", "UDP"]
AFFINITIES = ["ClientIP", "None"]
TRAFFIC_POLICIES = ["Cluster", "Local"]
FAMILY_POLICIES = [PREFER_DUAL, REQUIRE_DUAL, SINGLE_STACK]
MAX_AFFINITY_TIMEOUT = 86400
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def dns1035_label_problems(value: str) -> list[str]:
    """A Service's name: an RFC 1035 label (it becomes a DNS name and env var prefix)."""
    problems = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not _DNS1035_LABEL.fullmatch(value):
        problems.append(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
            "start with an alphabetic character, and end with an alphanumeric character"
        )
    return problems


def validate_service(svc: dict[str, Any], old: dict[str, Any] | None = None) -> FieldErrors:
    """Every problem with the Service's spec (its metadata is checked by the caller)."""
    errs = FieldErrors()
    spec = svc.get("spec")
    if not isinstance(spec, dict):
        errs.invalid("spec", spec, "must be an object")
        return errs
    _check_type(spec, errs)
    _check_ports(spec, errs)
    _check_selector(spec.get("selector"), errs)
    _check_affinity(spec, errs)
    _check_cluster_ips(spec, errs)
    _check_node_ports(spec, errs)
    _check_traffic_policies(spec, errs)
    if old is not None:
        _check_update(spec, old.get("spec") or {}, errs)
    return errs


def _check_type(spec: dict[str, Any], errs: FieldErrors) -> None:
    kind = spec.get("type")
    if kind not in TYPES:
        errs.not_supported("spec.type", kind, TYPES)
    elif kind in (NODE_PORT, LOAD_BALANCER) and is_headless(spec):
        errs.invalid(
            "spec.clusterIPs[0]", HEADLESS, f"may not be set to 'None' for {kind} services"
        )
    elif kind == EXTERNAL_NAME:
        for key in ("clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if spec.get(key):
                errs.forbidden(f"spec.{key}", "may not be set for ExternalName services")
        name = spec.get("externalName")
        # The name may end in a dot, to say it is fully qualified.
        cname = name.removesuffix(".") if isinstance(name, str) else ""
        if not cname:
            errs.required("spec.externalName")
        for msg in dns1123_subdomain_problems(cname) if cname else []:
            errs.invalid("spec.externalName", cname, msg)


def _check_ports(spec: dict[str, Any], errs: FieldErrors) -> None:
    ports = spec.get("ports")
    if ports is not None and not isinstance(ports, list):
        errs.invalid("spec.ports", ports, "must be a list")
        return
    ports = ports or []
    if not ports and not is_headless(spec) and spec.get("type") != EXTERNAL_NAME:
        errs.required("spec.ports")
    names: set[str] = set()
    seen: set[tuple[Any, Any]] = set()
    for i, port in enumerate(ports):
        path = f"spec.ports[{i}]"
        if not isinstance(port, dict):
            errs.invalid(path, port, "must be an object")
            continue
        _check_port(port, path, len(ports) > 1, names, errs)
        key = (port.get("protocol"), port.get("port"))
        if key in seen:
            # Two entries may share a port number only on different protocols.
            errs.duplicate(path, {"port": key[1], "protocol": key[0]})
        seen.add(key)


def _check_port(
    port: dict[str, Any], path: str, name_required: bool, names: set[str], errs: FieldErrors
) -> None:
    name = port.get("name") or ""
    if not isinstance(name, str):
        errs.invalid(f"{path}.name", name, "must be a string")
    elif not name and name_required:
        errs.required(f"{path}.name")
    elif name:
        for msg in dns1123_label_problems(name):
            errs.invalid(f"{path}.name", name, msg)
        if name in names:
            errs.duplicate(f"{path}.name", name)
        names.add(name)
    number = int_or_none(port.get("port"))
    for msg in port_number_problems(number) if number is not None else ["must be an integer"]:
        errs.invalid(f"{path}.port", port.get("port"), msg)
    if port.get("protocol") not in PROTOCOLS:
        errs.not_supported(f"{path}.protocol", port.get("protocol"), PROTOCOLS)
    _check_target_port(port.get("targetPort"), f"{path}.targetPort", errs)
    app_protocol = port.get("appProtocol")
    if app_protocol is not None:
        text = app_protocol if isinstance(app_protocol, str) else ""
        for msg in qualified_name_problems(text) or ([] if text else ["must be a string"]):
            errs.invalid(f"{path}.appProtocol", app_protocol, msg)


def _check_target_port(target: Any, path: str, errs: FieldErrors) -> None:
    """A number 1-65535, or the name of a container port (an IANA_SVC_NAME)."""
    if isinstance(target, str):
        for msg in port_name_problems(target):
            errs.invalid(path, target, msg)
    elif int_or_none(target) is not None:
        for msg in port_number_problems(target):
            errs.invalid(path, target, msg)
    else:
        errs.invalid(path, target, "must be an integer or a string")


def _check_selector(selector: Any, errs: FieldErrors) -> None:
    if selector is None:
        return
    if not isinstance(selector, dict):
        errs.invalid("spec.selector", selector, "must be a map of label keys to string values")
        return
    strings = {}
    for key, value in selector.items():
        if isinstance(value, str):
            strings[key] = value
        else:
            errs.invalid(f"spec.selector[{key}]", value, "must be a string")
    check_labels(strings, "spec.selector", errs)


def _check_affinity(spec: dict[str, Any], errs: FieldErrors) -> None:
    affinity = spec.get("sessionAffinity")
    if affinity not in AFFINITIES:
        errs.not_supported("spec.sessionAffinity", affinity, AFFINITIES)
    config = spec.get("sessionAffinityConfig")
    if affinity == "None" and config is not None:
        errs.forbidden(
            "spec.sessionAffinityConfig", "must not be set when session affinity is None"
        )
    if affinity != "ClientIP":
        return
    client_ip = config.get("clientIP") if isinstance(config, dict) else None
    timeout = client_ip.get("timeoutSeconds") if isinstance(client_ip, dict) else None
    if int_or_none(timeout) is None or not 0 < timeout <= MAX_AFFINITY_TIMEOUT:
        errs.invalid(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            timeout,
            f"must be greater than 0 and less than {MAX_AFFINITY_TIMEOUT}",
        )


def _check_cluster_ips(spec: dict[str, Any], errs: FieldErrors) -> None:
    """ValidateServiceClusterIPsRelatedFields: clusterIP and clusterIPs agree, hold
    addresses (or the one value None), and match ipFamilies."""
    if spec.get("type") == EXTERNAL_NAME:
        return
    ip, ips = spec.get("clusterIP"), spec.get("clusterIPs")
    if ips is not None and not isinstance(ips, list):
        errs.invalid("spec.clusterIPs", ips, "must be a list")
        return
    ips = ips or []
    if ip and not ips:
        errs.required("spec.clusterIPs")
    elif ip and ips[0] != ip:
        errs.invalid("spec.clusterIPs", ips, "first value must match `clusterIP`")
    elif ips and not ip:
        errs.invalid("spec.clusterIPs", ips, "must be empty when `clusterIP` is not specified")
    if ips[:1] == [HEADLESS] and len(ips) > 1:
        errs.invalid("spec.clusterIPs", ips, "'None' must be the first and only value")
    for i, value in enumerate(ips):
        if not (i == 0 and value == HEADLESS) and _family(value) is None:
            errs.invalid(
                f"spec.clusterIPs[{i}]",
                value,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )
    if len(ips) > 2:
        errs.invalid("spec.clusterIPs", ips, "may only hold up to 2 values")
    _check_families(spec, ips, errs)


def _check_families(spec: dict[str, Any], ips: list[Any], errs: FieldErrors) -> None:
    policy, families = spec.get("ipFamilyPolicy"), spec.get("ipFamilies") or []
    if policy not in FAMILY_POLICIES:
        errs.not_supported("spec.ipFamilyPolicy", policy, FAMILY_POLICIES)
    for i, family in enumerate(families if isinstance(families, list) else []):
        if family not in (IPV4, IPV6):
            errs.not_supported(f"spec.ipFamilies[{i}]", family, [IPV4, IPV6])
        elif family in families[:i]:
            errs.duplicate(f"spec.ipFamilies[{i}]", family)
        elif i < len(ips) and ips[i] != HEADLESS and _family(ips[i]) not in (None, family):
            errs.invalid(
                f"spec.clusterIPs[{i}]",
                ips[i],
                f"expected an {family} value as indicated by `ipFamilies[{i}]`",
            )
    if policy == SINGLE_STACK and isinstance(families, list) and len(families) > 1:
        errs.invalid(
            "spec.ipFamilyPolicy",
            policy,
            "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are "
            "specified",
        )


def _check_node_ports(spec: dict[str, Any], errs: FieldErrors) -> None:
    seen: set[tuple[Any, int]] = set()
    ports = spec.get("ports") if isinstance(spec.get("ports"), list) else []
    for i, port in enumerate(ports):
        node_port = port.get("nodePort") if isinstance(port, dict) else None
        if node_port in (None, 0):
            continue
        path = f"spec.ports[{i}].nodePort"
        if spec.get("type") == CLUSTER_IP:
            errs.forbidden(path, "may not be used when `type` is 'ClusterIP'")
        elif int_or_none(node_port) is None:
            errs.invalid(path, node_port, "must be an integer")
        elif (port.get("protocol"), node_port) in seen:
            errs.duplicate(path, node_port)
        else:
            seen.add((port.get("protocol"), node_port))
            for msg in port_number_problems(node_port):
                errs.invalid(path, node_port, msg)


def _check_traffic_policies(spec: dict[str, Any], errs: FieldErrors) -> None:
    external = spec.get("externalTrafficPolicy")
    if not externally_accessible(spec):
        if external:
            errs.invalid(
                "spec.externalTrafficPolicy",
                external,
                "may only be set for externally-accessible services",
            )
    elif external not in TRAFFIC_POLICIES:
        errs.not_supported("spec.externalTrafficPolicy", external, TRAFFIC_POLICIES)
    internal = spec.get("internalTrafficPolicy")
    if spec.get("type") != EXTERNAL_NAME and internal not in TRAFFIC_POLICIES:
        errs.not_supported("spec.internalTrafficPolicy", internal, TRAFFIC_POLICIES)
    check_port = spec.get("healthCheckNodePort")
    if check_port and not needs_health_check(spec):
        errs.invalid(
            "spec.healthCheckNodePort",
            check_port,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        )


def _check_update(spec: dict[str, Any], old: dict[str, Any], errs: FieldErrors) -> None:
    """A Service keeps its addresses: clusterIPs[0] and ipFamilies[0] never change, except
    to or from ExternalName, which has none."""
    if EXTERNAL_NAME in (spec.get("type"), old.get("type")):
        return
    if is_headless(spec) and is_headless(old):
        return
    new_ips, old_ips = spec.get("clusterIPs") or [], old.get("clusterIPs") or []
    if not isinstance(new_ips, list) or not isinstance(old_ips, list):
        return
    if old_ips and not new_ips:
        errs.invalid("spec.clusterIPs[0]", new_ips, "primary clusterIP can not be unset")
    for i, (before, after) in enumerate(zip(old_ips, new_ips, strict=False)):
        if before != after:
            errs.invalid(f"spec.clusterIPs[{i}]", new_ips, "may not change once set")
    new_families, old_families = spec.get("ipFamilies") or [], old.get("ipFamilies") or []
    if new_families[:1] and old_families[:1] and new_families[:1] != old_families[:1]:
        errs.invalid("spec.ipFamilies[0]", new_families, "may not change once set")


def _family(value: Any) -> str | None:
    try:
        version = ipaddress.ip_address(value).version if isinstance(value, str) else None
    except ValueError:
        return None
    return {4: IPV4, 6: IPV6}.get(version or 0)
