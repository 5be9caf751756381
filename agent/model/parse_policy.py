"""networking.k8s.io/v1 NetworkPolicy from an API dict, validated as the API server
validates it (pkg/apis/networking/validation)."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

from agent.model.errors import FieldErrors
from agent.model.fields import get_int, get_list, get_map, get_str, list_of_maps
from agent.model.names import port_name_problems, port_number_problems
from agent.model.objects import (
    POLICY_TYPES,
    PROTOCOLS,
    TCP,
    IPBlockPeer,
    IPNetwork,
    NetworkPolicy,
    Peer,
    PortSpec,
    Rule,
    SelectorPeer,
)
from agent.model.parse_core import parse_meta
from agent.model.selectors import MATCH_ALL, parse_selector


def parse_network_policy(
    obj: dict[str, Any], errs: FieldErrors, default_namespace: str = "default"
) -> NetworkPolicy:
    meta = parse_meta(obj, errs, namespaced=True, default_namespace=default_namespace)
    spec = get_map(obj, "spec", "spec", errs, required=True) or {}
    # podSelector is a struct, not a pointer, in the API: omitted means {} (all pods).
    raw_selector = spec.get("podSelector")
    pod_selector = (
        MATCH_ALL
        if raw_selector is None
        else parse_selector(raw_selector, "spec.podSelector", errs)
    )
    return NetworkPolicy(
        namespace=meta.namespace,
        name=meta.name,
        pod_selector=pod_selector,
        policy_types=_policy_types(spec, errs),
        ingress=_rules(spec, "ingress", "from", errs),
        egress=_rules(spec, "egress", "to", errs),
    )


def _policy_types(spec: dict[str, Any], errs: FieldErrors) -> tuple[str, ...]:
    raw = get_list(spec, "policyTypes", "spec.policyTypes", errs) or []
    if len(raw) > len(POLICY_TYPES):
        errs.invalid("spec.policyTypes", raw, "may not specify more than two policyTypes")
        return ()
    types = []
    for i, value in enumerate(raw):
        if value not in POLICY_TYPES:
            errs.not_supported(f"spec.policyTypes[{i}]", value, list(POLICY_TYPES))
        elif value not in types:
            types.append(value)
    return tuple(types)


def _rules(
    spec: dict[str, Any], direction: str, peers_key: str, errs: FieldErrors
) -> tuple[Rule, ...]:
    items = get_list(spec, direction, f"spec.{direction}", errs)
    rules = []
    for path, raw in list_of_maps(items, f"spec.{direction}", errs):
        peers = get_list(raw, peers_key, f"{path}.{peers_key}", errs)
        ports = get_list(raw, "ports", f"{path}.ports", errs)
        rules.append(
            Rule(
                peers=tuple(
                    p
                    for p in (
                        _peer(item, p_path, errs)
                        for p_path, item in list_of_maps(peers, f"{path}.{peers_key}", errs)
                    )
                    if p
                ),
                ports=tuple(
                    p
                    for p in (
                        _port(item, p_path, errs)
                        for p_path, item in list_of_maps(ports, f"{path}.ports", errs)
                    )
                    if p
                ),
            )
        )
    return tuple(rules)


def _peer(raw: dict[str, Any], path: str, errs: FieldErrors) -> Peer | None:
    ns_raw, pod_raw, block_raw = (
        raw.get(k) for k in ("namespaceSelector", "podSelector", "ipBlock")
    )
    count = sum(v is not None for v in (ns_raw, pod_raw, block_raw))
    if count == 0:
        errs.required(path, "must specify a peer")
        return None
    if block_raw is not None:
        if count > 1:
            errs.forbidden(path, "may not specify both ipBlock and another peer")
            return None
        return _ip_block(block_raw, f"{path}.ipBlock", errs)
    return SelectorPeer(
        namespace_selector=(
            None if ns_raw is None else parse_selector(ns_raw, f"{path}.namespaceSelector", errs)
        ),
        pod_selector=(
            None if pod_raw is None else parse_selector(pod_raw, f"{path}.podSelector", errs)
        ),
    )


def _parse_cidr(raw: Any, path: str, errs: FieldErrors) -> IPNetwork | None:
    if isinstance(raw, str) and "/" in raw:
        try:
            # Like Go's ParseCIDR, host bits may be set; the network is what counts.
            return ip_network(raw, strict=False)
        except ValueError:
            pass
    errs.invalid(path, raw, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
    return None


def _ip_block(raw: Any, path: str, errs: FieldErrors) -> IPBlockPeer | None:
    if not isinstance(raw, dict):
        errs.invalid(path, raw, "must be an object")
        return None
    cidr_raw = get_str(raw, "cidr", f"{path}.cidr", errs, required=True)
    cidr = _parse_cidr(cidr_raw, f"{path}.cidr", errs) if cidr_raw is not None else None
    excepts = []
    for i, item in enumerate(get_list(raw, "except", f"{path}.except", errs) or []):
        hole = _parse_cidr(item, f"{path}.except[{i}]", errs)
        if hole is None or cidr is None:
            continue
        # Each except must be a strict subset of cidr.
        if (
            hole.version != cidr.version
            or not hole.subnet_of(cidr)
            or hole.prefixlen <= cidr.prefixlen
        ):
            errs.invalid(f"{path}.except[{i}]", item, "must be a strict subset of `cidr`")
            continue
        excepts.append(hole)
    return IPBlockPeer(cidr, tuple(excepts)) if cidr is not None else None


def _port(raw: dict[str, Any], path: str, errs: FieldErrors) -> PortSpec | None:
    before = len(errs)
    protocol = get_str(raw, "protocol", f"{path}.protocol", errs) or TCP
    if protocol not in PROTOCOLS:
        errs.not_supported(f"{path}.protocol", protocol, list(PROTOCOLS))
    port = raw.get("port")
    end_port = get_int(raw, "endPort", f"{path}.endPort", errs)
    if port is None:
        if end_port is not None:
            errs.invalid(
                f"{path}.endPort", end_port, "may not be specified when `port` is not specified"
            )
    elif isinstance(port, int) and not isinstance(port, bool):
        _check_port_range(port, end_port, path, errs)
    elif isinstance(port, str):
        if end_port is not None:
            errs.invalid(
                f"{path}.endPort", end_port, "may not be specified when `port` is non-numeric"
            )
        for msg in port_name_problems(port):
            errs.invalid(f"{path}.port", port, msg)
    else:
        errs.invalid(f"{path}.port", port, "must be an integer or a port name")
    if len(errs) != before:
        return None
    return PortSpec(protocol, port, end_port)


def _check_port_range(port: int, end_port: int | None, path: str, errs: FieldErrors) -> None:
    for msg in port_number_problems(port):
        errs.invalid(f"{path}.port", port, msg)
    if end_port is None:
        return
    # endPort makes a range and must not be below port.
    if end_port < port:
        errs.invalid(f"{path}.endPort", end_port, "must be greater than or equal to `port`")
    for msg in port_number_problems(end_port):
        errs.invalid(f"{path}.endPort", end_port, msg)
