"""What kube-apiserver (v1.32) does to a Service before it allocates and validates it:
the v1 defaults (`SetDefaults_Service`), the registry's preparation of a create or an
update (`PrepareForCreate`, `PrepareForUpdate`: allocated values carried over, clusterIP
and clusterIPs kept in step, fields of an abandoned type dropped) and the IP family
fields (`initIPFamilyFields`) of a cluster with the Service families it was started
with (`--service-cluster-ip-range`: one range per family, the first the default).

Everything works in place on an object the caller owns. Shapes it does not recognise are
left alone for validation to report (or, with validation off, to be stored as given)."""

from __future__ import annotations

import ipaddress
from typing import Any

from agent.model.errors import FieldErrors

CLUSTER_IP, NODE_PORT = "ClusterIP", "NodePort"
LOAD_BALANCER, EXTERNAL_NAME = "LoadBalancer", "ExternalName"
HEADLESS = "None"  # spec.clusterIP of a headless Service
SINGLE_STACK, PREFER_DUAL, REQUIRE_DUAL = "SingleStack", "PreferDualStack", "RequireDualStack"
IPV4, IPV6 = "IPv4", "IPv6"
SINGLE_STACK_IPV4 = (IPV4,)  # a cluster whose --service-cluster-ip-range is one IPv4 range
DEFAULT_AFFINITY_TIMEOUT = 10800  # v1.DefaultClientIPServiceAffinitySeconds
_PROXIED_TYPES = (CLUSTER_IP, NODE_PORT, LOAD_BALANCER)


def spec_of(svc: dict[str, Any]) -> dict[str, Any]:
    """The Service's spec, created empty when missing; {} (detached) when not an object."""
    if svc.get("spec") is None:
        svc["spec"] = {}
    spec = svc["spec"]
    return spec if isinstance(spec, dict) else {}


def ports_of(spec: dict[str, Any]) -> list[dict[str, Any]]:
    ports = spec.get("ports")
    return [p for p in ports if isinstance(p, dict)] if isinstance(ports, list) else []


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def needs_node_ports(spec: dict[str, Any]) -> bool:
    return spec.get("type") in (NODE_PORT, LOAD_BALANCER)


def needs_health_check(spec: dict[str, Any]) -> bool:
    return spec.get("type") == LOAD_BALANCER and spec.get("externalTrafficPolicy") == "Local"


def externally_accessible(spec: dict[str, Any]) -> bool:
    # ExternallyAccessible: NodePort, LoadBalancer, or a ClusterIP with externalIPs.
    return needs_node_ports(spec) or (
        spec.get("type") == CLUSTER_IP and bool(spec.get("externalIPs"))
    )


def is_headless(spec: dict[str, Any]) -> bool:
    ips = spec.get("clusterIPs")
    return spec.get("clusterIP") == HEADLESS or (isinstance(ips, list) and ips[:1] == [HEADLESS])


def default_service(svc: dict[str, Any]) -> None:
    """SetDefaults_Service."""
    spec = spec_of(svc)
    if not spec.get("sessionAffinity"):
        spec["sessionAffinity"] = "None"
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP" and not _has_affinity_timeout(spec):
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": DEFAULT_AFFINITY_TIMEOUT}}
    if not spec.get("type"):
        spec["type"] = CLUSTER_IP
    for port in ports_of(spec):
        if not port.get("protocol"):
            port["protocol"] = "TCP"
        if port.get("targetPort") in (None, 0, ""):
            # A port without targetPort sends to the same port on the pod.
            port["targetPort"] = port.get("port")
    if externally_accessible(spec) and not spec.get("externalTrafficPolicy"):
        spec["externalTrafficPolicy"] = "Cluster"
    if spec.get("internalTrafficPolicy") is None and spec["type"] in _PROXIED_TYPES:
        spec["internalTrafficPolicy"] = "Cluster"
    if spec["type"] == LOAD_BALANCER and spec.get("allocateLoadBalancerNodePorts") is None:
        spec["allocateLoadBalancerNodePorts"] = True


def _has_affinity_timeout(spec: dict[str, Any]) -> bool:
    config = spec.get("sessionAffinityConfig")
    client_ip = config.get("clientIP") if isinstance(config, dict) else None
    return isinstance(client_ip, dict) and client_ip.get("timeoutSeconds") is not None


def prepare_create(svc: dict[str, Any]) -> None:
    """PrepareForCreate: the status is the server's; a lone clusterIP fills clusterIPs."""
    svc["status"] = {"loadBalancer": {}}
    spec = spec_of(svc)
    if spec.get("clusterIP") and not spec.get("clusterIPs"):
        spec["clusterIPs"] = [spec["clusterIP"]]


def prepare_update(svc: dict[str, Any], old: dict[str, Any]) -> None:
    """PrepareForUpdate: a client that resubmits its manifest keeps what was allocated."""
    spec, old_spec = spec_of(svc), spec_of(old)
    _patch_allocated_values(spec, old_spec)
    _normalize_cluster_ips(spec, old_spec)
    _drop_type_dependent_fields(spec, old_spec)
    if old_spec.get("ipFamilyPolicy") in (PREFER_DUAL, REQUIRE_DUAL) and (
        spec.get("ipFamilyPolicy") == SINGLE_STACK
    ):
        # Asking for single-stack is asking to drop the secondary family.
        for key in ("clusterIPs", "ipFamilies"):
            if isinstance(spec.get(key), list):
                spec[key] = spec[key][:1]


def _patch_allocated_values(spec: dict[str, Any], old: dict[str, Any]) -> None:
    if spec.get("type") != EXTERNAL_NAME and old.get("type") != EXTERNAL_NAME:
        for key in ("clusterIP", "clusterIPs"):
            if not spec.get(key) and old.get(key):
                spec[key] = old[key]
    if needs_node_ports(spec) and needs_node_ports(old):
        # Node ports are carried over by port name.
        by_name = {p.get("name", ""): p.get("nodePort") for p in ports_of(old)}
        for port in ports_of(spec):
            if not port.get("nodePort") and by_name.get(port.get("name", "")):
                port["nodePort"] = by_name[port.get("name", "")]
    keeps_check = needs_health_check(spec) and needs_health_check(old)
    if keeps_check and not spec.get("healthCheckNodePort") and old.get("healthCheckNodePort"):
        spec["healthCheckNodePort"] = old["healthCheckNodePort"]


def _normalize_cluster_ips(spec: dict[str, Any], old: dict[str, Any]) -> None:
    """NormalizeClusterIPs: an old client that sets only clusterIP still means clusterIPs."""
    ip, ips = spec.get("clusterIP"), spec.get("clusterIPs")
    if old.get("clusterIPs") and not ips and ip == old.get("clusterIP"):
        spec["clusterIPs"] = ips = old["clusterIPs"]
    if ip == old.get("clusterIP"):
        return
    if old.get("clusterIP") and not ip:
        if ips == old.get("clusterIPs"):
            spec.pop("clusterIPs", None)
    elif ips == old.get("clusterIPs"):
        spec["clusterIPs"] = [ip]


def _drop_type_dependent_fields(spec: dict[str, Any], old: dict[str, Any]) -> None:
    """Fields the old type needed and the new one does not go, unless the client also
    changed them (then validation says why)."""
    if old.get("type") != EXTERNAL_NAME and spec.get("type") == EXTERNAL_NAME:
        same_ips = (spec.get("clusterIP"), spec.get("clusterIPs")) == (
            old.get("clusterIP"),
            old.get("clusterIPs"),
        )
        for key, same in (
            ("clusterIP", same_ips),
            ("clusterIPs", same_ips),
            ("ipFamilies", spec.get("ipFamilies") == old.get("ipFamilies")),
            ("ipFamilyPolicy", spec.get("ipFamilyPolicy") == old.get("ipFamilyPolicy")),
        ):
            if same:
                spec.pop(key, None)
    if needs_node_ports(old) and not needs_node_ports(spec):
        old_ports = {p.get("nodePort") for p in ports_of(old)}
        if {p.get("nodePort") for p in ports_of(spec) if p.get("nodePort")} <= old_ports:
            for port in ports_of(spec):
                port.pop("nodePort", None)
    same_policy = spec.get("externalTrafficPolicy") == old.get("externalTrafficPolicy")
    if externally_accessible(old) and not externally_accessible(spec) and same_policy:
        spec.pop("externalTrafficPolicy", None)
    same_check = spec.get("healthCheckNodePort") == old.get("healthCheckNodePort")
    if needs_health_check(old) and not needs_health_check(spec) and same_check:
        spec.pop("healthCheckNodePort", None)


def init_ip_families(
    spec: dict[str, Any],
    old: dict[str, Any] | None,
    cluster: tuple[str, ...] = SINGLE_STACK_IPV4,
) -> FieldErrors:
    """initIPFamilyFields on a cluster serving the families `cluster` (the first its
    default); the errors are the registry's (given whether or not validation is on)."""
    errs = FieldErrors()
    if spec.get("type") == EXTERNAL_NAME:
        return errs
    selectorless_headless = is_headless(spec) and not spec.get("selector")
    if spec.get("ipFamilyPolicy") is None:
        if old is not None and old.get("ipFamilyPolicy") is not None:
            spec["ipFamilyPolicy"] = old["ipFamilyPolicy"]
        else:
            # A headless Service without selector may carry addresses of both families.
            spec["ipFamilyPolicy"] = REQUIRE_DUAL if selectorless_headless else SINGLE_STACK
    families = spec.get("ipFamilies")
    if families is None:
        families = spec["ipFamilies"] = []
    if not isinstance(families, list):
        return errs
    _infer_families(spec, families, errs, cluster)
    if errs:
        return errs
    if selectorless_headless:
        families[:] = families or [cluster[0]]
        if len(families) < 2 and spec["ipFamilyPolicy"] != SINGLE_STACK:
            families.append(IPV6 if families[0] == IPV4 else IPV4)
        return errs
    if spec["ipFamilyPolicy"] == REQUIRE_DUAL and len(cluster) < 2:
        errs.invalid(
            "spec.ipFamilyPolicy",
            REQUIRE_DUAL,
            "this cluster is not configured for dual-stack services",
        )
    for i, family in enumerate(families):
        if family not in cluster:
            errs.invalid(f"spec.ipFamilies[{i}]", family, "not configured on this cluster")
    if errs:
        return errs
    families[:] = families or [cluster[0]]
    # Dual-stack asked for (Prefer or Require) on a dual-stack cluster: the other family.
    if spec["ipFamilyPolicy"] != SINGLE_STACK and len(families) == 1 and len(cluster) == 2:
        families.append(IPV6 if families[0] == IPV4 else IPV4)
    return errs


def _infer_families(
    spec: dict[str, Any], families: list[Any], errs: FieldErrors, cluster: tuple[str, ...]
) -> None:
    """Requested clusterIPs name the families they belong to."""
    ips = spec.get("clusterIPs")
    for i, ip in enumerate(ips if isinstance(ips, list) else []):
        if ip == HEADLESS or not isinstance(ip, str):
            break
        try:
            family = IPV4 if ipaddress.ip_address(ip).version == 4 else IPV6
        except ValueError:
            break  # validation reports the address
        if i >= len(families):
            if family not in cluster:
                errs.invalid(
                    f"spec.clusterIPs[{i}]", ips, f"{family} is not configured on this cluster"
                )
            else:
                families.append(family)
