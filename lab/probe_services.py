"""The Services `picket lab matrix --via-service` probes through (pure).

One per destination pod: a selector-less Service in the pod's namespace whose one port
is the probed port, and an EndpointSlice naming the pod's address, written the way an
operator writes one (label `kubernetes.io/service-name`). Pods are never relabelled
for this: labels decide policy verdicts. The label `picket.io/probe-service` marks
both, so a run, or the next one after a run that was interrupted, removes them all.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from lab.cluster import LabPod
from lab.dns.records import SERVICE_NAME_LABEL

PROBE_LABEL = "picket.io/probe-service"
PROBE_SELECTOR = f"{PROBE_LABEL}=matrix"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "picket-lab-matrix"  # not the EndpointSlice controller: it leaves these alone
PREFIX = "picket-probe-"
PORT_NAME = "probe"
# A Service name is a DNS-1035 label: a letter first, at most 63 characters.
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def service_name(pod_name: str) -> str:
    """`picket-probe-<pod>`, or `picket-probe-<hash of the name>` where that is not a
    valid Service name (too long, or the pod name has dots)."""
    name = PREFIX + pod_name
    if len(name) <= 63 and _DNS_1035.match(name):
        return name
    return PREFIX + hashlib.sha256(pod_name.encode()).hexdigest()[:16]


def _labels(service: str | None = None) -> dict[str, str]:
    labels = {PROBE_LABEL: "matrix"}
    if service is not None:
        labels |= {SERVICE_NAME_LABEL: service, MANAGED_BY_LABEL: MANAGED_BY}
    return labels


def _split(pod: LabPod) -> tuple[str, str]:
    namespace, _, name = pod.ref.partition("/")
    return namespace, name


def service_manifest(pod: LabPod, port: int, protocol: str) -> dict[str, Any]:
    namespace, name = _split(pod)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(name), "namespace": namespace, "labels": _labels()},
        "spec": {
            "type": "ClusterIP",
            "ports": [{"name": PORT_NAME, "port": port, "protocol": protocol, "targetPort": port}],
        },
    }


def slice_manifest(pod: LabPod, port: int, protocol: str) -> dict[str, Any]:
    namespace, name = _split(pod)
    endpoint: dict[str, Any] = {
        "addresses": [pod.ip],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "targetRef": {"kind": "Pod", "namespace": namespace, "name": name},
    }
    if pod.node:
        endpoint["nodeName"] = pod.node
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": service_name(name),
            "namespace": namespace,
            "labels": _labels(service_name(name)),
        },
        "addressType": "IPv4",
        "endpoints": [endpoint],
        "ports": [{"name": PORT_NAME, "port": port, "protocol": protocol}],
    }


def wanted_programming(
    pods: list[LabPod], cluster_ips: dict[str, str], port: int, protocol: str
) -> dict[str, tuple[str, str, str]]:
    """What every kube-proxy must have programmed before the probes start:
    `ns/service` -> (ClusterIP, `port/PROTO`, `podIP:port`), for pods by ref."""
    wanted = {}
    for pod in pods:
        namespace, name = _split(pod)
        wanted[f"{namespace}/{service_name(name)}"] = (
            cluster_ips[pod.ref],
            f"{port}/{protocol}",
            f"{pod.ip}:{port}",
        )
    return wanted


def unprogrammed(
    services: dict[str, Any] | None, wanted: dict[str, tuple[str, str, str]]
) -> list[str]:
    """The wanted Services that a node's programmed services (the "services" of its
    kube-proxy status file, as lab/kubeproxy/status.py `programmed` reads them:
    `{"ns/name": {"clusterIP": ..., "ports": {"80/TCP": {"endpoints": [...]}}}}`, None
    before its first apply) do not show with their ClusterIP, port and endpoint."""
    services = services or {}
    missing = []
    for key, (address, port_key, endpoint) in sorted(wanted.items()):
        entry = services.get(key) or {}
        port = (entry.get("ports") or {}).get(port_key) or {}
        if entry.get("clusterIP") != address or endpoint not in (port.get("endpoints") or []):
            missing.append(key)
    return missing
