"""The Services `picket lab matrix --via-service` probes through (pure).

One per destination pod: a selector-less Service in the pod's namespace whose ports are
the probed ports (one for the command; the conformance suite keeps one Service per pod
with every port its scenarios probe), with a ClusterIP of each family probed (dual-stack:
RequireDualStack), and an EndpointSlice per family naming the pod's address of that
family, written the way an operator writes one (label `kubernetes.io/service-name`). Pods are
never relabelled for this: labels decide policy verdicts. The label
`picket.io/probe-service` marks both, so a run, or the next one after a run that was
interrupted, removes them all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lab.cluster import LabPod
from lab.dns.records import SERVICE_NAME_LABEL

PROBE_LABEL = "picket.io/probe-service"
PROBE_SELECTOR = f"{PROBE_LABEL}=matrix"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "picket-lab-matrix"  # not the EndpointSlice controller: it leaves these alone
PREFIX = "picket-probe-"
# A Service name is a DNS-1035 label: a letter first, at most 63 characters.
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def service_name(pod_name: str) -> str:
    """`picket-probe-<pod>`, or `picket-probe-<hash of the name>` where that is not a
    valid Service name (too long, or the pod name has dots)."""
    name = PREFIX + pod_name
    if len(name) <= 63 and _DNS_1035.match(name):
        return name
    return PREFIX + hashlib.sha256(pod_name.encode()).hexdigest()[:16]


def probe_service_key(ref: str) -> tuple[str, str]:
    """(namespace, name) of the probe Service (and its slice) of pod `ref` (NS/POD)."""
    namespace, _, name = ref.partition("/")
    return namespace, service_name(name)


def _labels(service: str | None = None) -> dict[str, str]:
    labels = {PROBE_LABEL: "matrix"}
    if service is not None:
        labels |= {SERVICE_NAME_LABEL: service, MANAGED_BY_LABEL: MANAGED_BY}
    return labels


def _split(pod: LabPod) -> tuple[str, str]:
    namespace, _, name = pod.ref.partition("/")
    return namespace, name


ProbePort = tuple[int, str]  # (port, protocol), e.g. (80, "TCP")


def port_name(port: int, protocol: str) -> str:
    """`tcp-80`: a Service's port names are unique among its ports, and two ports may
    share a number when their protocols differ."""
    return f"{protocol.lower()}-{port}"


def service_manifest(
    pod: LabPod, ports: Sequence[ProbePort], families: Sequence[int] = (4,)
) -> dict[str, Any]:
    namespace, name = _split(pod)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(name), "namespace": namespace, "labels": _labels()},
        "spec": {
            "type": "ClusterIP",
            "ipFamilyPolicy": "SingleStack" if len(families) == 1 else "RequireDualStack",
            "ipFamilies": [f"IPv{f}" for f in families],
            "ports": [
                {"name": port_name(n, p), "port": n, "protocol": p, "targetPort": n}
                for n, p in ports
            ],
        },
    }


def slice_name(pod_name: str, family: int) -> str:
    """The IPv4 slice is named as the Service; the IPv6 one after `<pod>.ipv6`, a name
    no pod has (a dot makes service_name hash it)."""
    return service_name(pod_name if family == 4 else f"{pod_name}.ipv6")


def slice_manifest(pod: LabPod, ports: Sequence[ProbePort], family: int = 4) -> dict[str, Any]:
    namespace, name = _split(pod)
    endpoint: dict[str, Any] = {
        "addresses": [pod.address(family)],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "targetRef": {"kind": "Pod", "namespace": namespace, "name": name},
    }
    if pod.node:
        endpoint["nodeName"] = pod.node
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(name, family),
            "namespace": namespace,
            "labels": _labels(service_name(name)),
        },
        "addressType": f"IPv{family}",
        "endpoints": [endpoint],
        "ports": [{"name": port_name(n, p), "port": n, "protocol": p} for n, p in ports],
    }


@dataclass(frozen=True)
class WantedPort:
    """One Service port a kube-proxy must have programmed: `ns/name`, its ClusterIP,
    `port/PROTO` and the endpoint `podIP:port` it DNATs to."""

    service: str
    cluster_ip: str
    port: str
    endpoint: str

    def __str__(self) -> str:
        return f"{self.service} {self.port}"


def wanted_programming(
    pods: Sequence[LabPod],
    cluster_ips: dict[int, dict[str, str]],
    ports: Sequence[ProbePort],
) -> list[WantedPort]:
    """What every kube-proxy must have programmed before the probes start, for pods by
    ref and family (cluster_ips[family][ref]): each of their Services' ports, on every
    family."""
    wanted = []
    for family, by_pod in cluster_ips.items():
        for pod in pods:
            namespace, name = _split(pod)
            address = pod.address(family)
            endpoint = f"[{address}]" if family == 6 else f"{address}"
            for number, protocol in ports:
                wanted.append(
                    WantedPort(
                        f"{namespace}/{service_name(name)}",
                        by_pod[pod.ref],
                        f"{number}/{protocol}",
                        f"{endpoint}:{number}",
                    )
                )
    return wanted


def unprogrammed(services: dict[str, Any] | None, wanted: Sequence[WantedPort]) -> list[str]:
    """The wanted Service ports (`ns/name port/PROTO`) that a node's programmed services
    (the "services" of its kube-proxy status file, as lab/kubeproxy/status.py
    `programmed` reads them: `{"ns/name": {"clusterIP": ..., "ports": {"80/TCP":
    {"endpoints": [...]}}}}`, None before its first apply) do not show with their
    ClusterIP and endpoint."""
    services = services or {}
    missing = []
    for want in wanted:
        entry = services.get(want.service) or {}
        port = (entry.get("ports") or {}).get(want.port) or {}
        cluster_ips = entry.get("clusterIPs") or [entry.get("clusterIP")]
        if want.cluster_ip not in cluster_ips or want.endpoint not in (port.get("endpoints") or []):
            missing.append(str(want))
    return sorted(set(missing))
