"""Services and EndpointSlices as a user or an operator writes them: explicit cluster
IPs (in the lab's Service range) and node ports, slices labelled with their Service.
Until the lab allocates and runs an EndpointSlice controller, tests write both."""

from __future__ import annotations

import json
from typing import Any

from lab.config import state_dir
from lab.kubeproxy.status import wait_programmed
from tests.support.lab_cli import Kubectl

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def service_port(
    name: str, port: int, protocol: str = "TCP", target: int = 80, node_port: int | None = None
) -> dict[str, Any]:
    found = {"name": name, "port": port, "protocol": protocol, "targetPort": target}
    return found | ({"nodePort": node_port} if node_port is not None else {})


def service(
    ns: str,
    name: str,
    cluster_ip: str | None,
    ports: list[dict[str, Any]],
    external_policy: str | None = None,
) -> dict[str, Any]:
    """A ClusterIP Service, or NodePort if a port has a node port; `cluster_ip` None
    leaves it unallocated, "None" makes it headless."""
    spec: dict[str, Any] = {"ports": ports}
    spec["type"] = "NodePort" if any("nodePort" in p for p in ports) else "ClusterIP"
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    if external_policy is not None:
        spec["externalTrafficPolicy"] = external_policy
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }


def endpoint(ip: str, node: str, ready: bool = True) -> dict[str, Any]:
    return {"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}}


def endpoint_slice(
    ns: str,
    service_name: str,
    ports: list[dict[str, Any]],
    endpoints: list[dict[str, Any]],
    name: str | None = None,
) -> dict[str, Any]:
    """`ports` as the Service's (name, protocol); the slice gives the target port."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": ns,
            "name": name or f"{service_name}-1",
            "labels": {SERVICE_NAME_LABEL: service_name},
        },
        "addressType": "IPv4",
        "ports": [
            {"name": p["name"], "port": p.get("targetPort", p["port"]), "protocol": p["protocol"]}
            for p in ports
        ],
        "endpoints": endpoints,
    }


def published(
    kubectl: Kubectl, manifest: dict[str, Any], backend_ip: str, nodes: list[str]
) -> dict[str, Any]:
    """Apply a selector Service and wait until every node's kube-proxy DNATs its first
    port to `backend_ip` (of either family); returns the Service as the API server allocated it."""
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    first = manifest["spec"]["ports"][0]
    port = f"{first['port']}/{first.get('protocol', 'TCP')}"
    prefix = f"[{backend_ip}]:" if ":" in backend_ip else f"{backend_ip}:"

    def ready(services: dict[str, Any]) -> bool:
        entry = (services.get(f"{ns}/{name}") or {}).get("ports", {}).get(port) or {}
        return any(e.startswith(prefix) for e in entry.get("endpoints", []))

    wait_programmed(state_dir(), nodes, ready)
    return kubectl.json("get", "service", "-n", ns, name)
