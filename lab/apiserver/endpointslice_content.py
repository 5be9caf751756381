"""What goes in the EndpointSlices of a Service, as kube-controller-manager's
EndpointSlice controller (v1.32, staging k8s.io/endpointslice) writes them: which
Services it fills, a pod as an endpoint, the Service's ports as a pod serves them, the
labels and owner of a slice, and the keys that tell endpoints and port lists apart.
Pure; endpointslice_plan.py decides what to create, update and delete."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
ZONE_LABEL = "topology.kubernetes.io/zone"
RESERVED_LABELS = (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)
MAX_ENDPOINTS_PER_SLICE = 100
API_VERSION = "discovery.k8s.io/v1"

PortKey = tuple[tuple[str, ...], ...]
EndpointKey = tuple[Any, ...]


def sub(obj: Any, key: str) -> dict[str, Any]:
    """The object at `key`, or {} where it is missing or not an object."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def items(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    return value if isinstance(value, list) else []


def served(service: dict[str, Any]) -> bool:
    """A Service this controller fills: one with a selector (an empty selector is no
    selector, as the API stores it) that is not an ExternalName."""
    spec = sub(service, "spec")
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


def selects(service: dict[str, Any], pod: dict[str, Any]) -> bool:
    selector = sub(service, "spec").get("selector")
    labels = sub(pod, "metadata").get("labels") or {}
    return isinstance(selector, dict) and all(labels.get(k) == v for k, v in selector.items())


def address_types(service: dict[str, Any]) -> list[str]:
    spec = sub(service, "spec")
    families = [f for f in items(spec, "ipFamilies") if f in ("IPv4", "IPv6")]
    if families:
        return list(dict.fromkeys(families))
    ip = spec.get("clusterIP")
    if ip and ip != "None":
        return ["IPv6" if ":" in str(ip) else "IPv4"]
    return ["IPv4", "IPv6"]  # a headless Service of unknown families: both


def endpoint_ports(service: dict[str, Any], pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The Service's ports as this pod serves them (FindPort per port)."""
    spec = sub(service, "spec")
    out = []
    for sp in (p for p in items(spec, "ports") if isinstance(p, dict)):
        number = _target_port(sp, pod)
        if number is None:
            continue  # the pod has no container port of that name and protocol
        port = {"name": sp.get("name") or "", "port": number, "protocol": sp.get("protocol")}
        if sp.get("appProtocol") is not None:
            port["appProtocol"] = sp["appProtocol"]
        out.append(port)
    return out


def _target_port(service_port: dict[str, Any], pod: dict[str, Any]) -> int | None:
    target = service_port.get("targetPort")
    if not isinstance(target, str):
        return target if isinstance(target, int) and not isinstance(target, bool) else None
    spec = sub(pod, "spec")
    # Sidecars (init containers that keep running) serve named ports too.
    containers = [c for c in items(spec, "containers") if isinstance(c, dict)]
    containers += [
        c
        for c in items(spec, "initContainers")
        if isinstance(c, dict) and c.get("restartPolicy") == "Always"
    ]
    for container in containers:
        for port in items(container, "ports"):
            if not isinstance(port, dict) or port.get("name") != target:
                continue
            if port.get("protocol", "TCP") == service_port.get("protocol"):
                return port.get("containerPort")
    return None


def _ready(pod: dict[str, Any]) -> bool:
    conditions = items(sub(pod, "status"), "conditions")
    return any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions
    )


def _addresses(pod: dict[str, Any], address_type: str) -> list[str]:
    status = sub(pod, "status")
    raw = [p.get("ip") for p in items(status, "podIPs") if isinstance(p, dict)]
    raw = raw or [status.get("podIP")]
    out = []
    for value in raw:
        try:
            ip = ipaddress.ip_address(value) if isinstance(value, str) else None
        except ValueError:
            continue
        if ip is not None and {4: "IPv4", 6: "IPv6"}[ip.version] == address_type:
            out.append(str(ip))
    return out


def pod_endpoint(
    service: dict[str, Any], pod: dict[str, Any], address_type: str, zones: dict[str, str]
) -> dict[str, Any] | None:
    """The pod as an endpoint of the Service, or None when it is not one."""
    status, meta, spec = sub(pod, "status"), sub(pod, "metadata"), sub(pod, "spec")
    if status.get("phase") in ("Succeeded", "Failed"):
        return None  # a finished pod serves nothing
    addresses = _addresses(pod, address_type)
    if not addresses:
        return None
    serving = _ready(pod)
    terminating = bool(meta.get("deletionTimestamp"))
    publish = sub(service, "spec").get("publishNotReadyAddresses") is True
    endpoint: dict[str, Any] = {
        "addresses": addresses,
        "conditions": {
            "ready": publish or (serving and not terminating),
            "serving": serving,
            "terminating": terminating,
        },
        "targetRef": {
            "kind": "Pod",
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
        },
    }
    if spec.get("nodeName"):
        endpoint["nodeName"] = spec["nodeName"]
        if zones.get(spec["nodeName"]):
            endpoint["zone"] = zones[spec["nodeName"]]
    # A pod with hostname and subdomain = the Service's name gets a DNS name of its own.
    service_meta = sub(service, "metadata")
    if spec.get("hostname") and spec.get("subdomain") == service_meta.get("name"):
        endpoint["hostname"] = spec["hostname"]
    return endpoint


def port_key(ports: list[dict[str, Any]] | None) -> PortKey:
    return tuple(
        sorted(
            (
                str(p.get("name")),
                str(p.get("protocol")),
                str(p.get("port")),
                str(p.get("appProtocol")),
            )
            for p in ports or []
            if isinstance(p, dict)
        )
    )


def endpoint_key(endpoint: dict[str, Any]) -> EndpointKey:
    """What names an endpoint (upstream's endpoint hash): its addresses, hostname and
    the object it stands for."""
    ref = sub(endpoint, "targetRef")
    return (
        tuple(sorted(str(a) for a in items(endpoint, "addresses"))),
        endpoint.get("hostname"),
        ref.get("namespace"),
        ref.get("name"),
    )


def same_endpoint(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two versions of one endpoint (same key) say the same (a targetRef's
    resourceVersion aside)."""
    keys = ("nodeName", "zone", "conditions")
    ref_keys = ("kind", "namespace", "name", "uid")
    return all(a.get(k) == b.get(k) for k in keys) and all(
        sub(a, "targetRef").get(k) == sub(b, "targetRef").get(k) for k in ref_keys
    )


def slice_labels(existing: dict[str, Any] | None, service: dict[str, Any]) -> tuple[dict, bool]:
    """The labels a slice must carry (the Service's own, plus the reserved ones), and
    whether its non-reserved labels differ from the Service's."""
    own = {
        k: v
        for k, v in (sub(service, "metadata").get("labels") or {}).items()
        if k not in RESERVED_LABELS
    }
    current = {
        k: v
        for k, v in (sub(existing, "metadata").get("labels") or {}).items()
        if k not in RESERVED_LABELS
    }
    labels = dict(own)
    spec = sub(service, "spec")
    if spec.get("clusterIP") in (None, "", "None"):
        labels[HEADLESS_LABEL] = ""
    labels[SERVICE_NAME_LABEL] = sub(service, "metadata").get("name")
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    return labels, current != own


def owned_by(slice_: dict[str, Any], service: dict[str, Any]) -> bool:
    uid = sub(service, "metadata").get("uid")
    return any(
        isinstance(ref, dict)
        and (ref.get("uid"), ref.get("kind"), ref.get("apiVersion")) == (uid, "Service", "v1")
        for ref in items(sub(slice_, "metadata"), "ownerReferences")
    )


def new_slice(
    service: dict[str, Any],
    address_type: str,
    ports: list[dict[str, Any]],
    endpoints: list[dict[str, Any]],
) -> dict[str, Any]:
    meta = sub(service, "metadata")
    owner = {
        "apiVersion": "v1",
        "kind": "Service",
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "EndpointSlice",
        "metadata": {
            "generateName": f"{meta.get('name')}-",
            "namespace": meta.get("namespace"),
            "labels": slice_labels(None, service)[0],
            "ownerReferences": [owner],
        },
        "addressType": address_type,
        "ports": copy.deepcopy(ports),
        "endpoints": endpoints,
    }


def stored_form(slice_: dict[str, Any]) -> dict[str, Any]:
    """Empty port and endpoint lists are null, as the real server returns them (its
    protobuf storage does not tell an empty list from none)."""
    for key in ("ports", "endpoints"):
        if not slice_.get(key):
            slice_[key] = None
    return slice_
