"""The Node and Pod status a kubelet reports, in API form."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lab.config import IP_FAMILIES_DEFAULT, LabNode, VirtualNode

KUBELET_VERSION = "v1.32.0-picket-lab"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_body(
    node: LabNode | VirtualNode, families: tuple[int, ...] = IP_FAMILIES_DEFAULT
) -> dict[str, Any]:
    now = _now()
    virtual = isinstance(node, VirtualNode)
    addresses = [{"type": "Hostname", "address": node.name}]
    if not virtual:
        internal = [{"type": "InternalIP", "address": str(ip)} for ip in node.addresses(families)]
        addresses = internal + addresses
    cidrs = [str(cidr) for cidr in node.pod_cidrs(families)]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "picket.io/lab-node": "virtual" if virtual else "true",
            },
        },
        "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs},
        "status": {
            "addresses": addresses,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "picket lab kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "machineID": node.name,
                "systemUUID": node.name,
                "bootID": node.name,
                "osImage": "picket lab",
                "kernelVersion": "",
                "containerRuntimeVersion": "picket-lab://1",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def running_status(
    pod: dict[str, Any], ips: tuple[str, ...], host_ips: tuple[str, ...], ready: bool = True
) -> dict[str, Any]:
    """Running (and Ready unless `ready` is False), one container status per container;
    `ips` and `host_ips` one per family, the primary first."""
    now = _now()
    conditions = [
        {"type": t, "status": "True", "lastTransitionTime": now}
        for t in ("PodScheduled", "Initialized")
    ]
    conditions += [
        {"type": t, "status": "True" if ready else "False", "lastTransitionTime": now}
        for t in ("ContainersReady", "Ready")
    ]
    containers = [
        {
            "name": c.get("name", ""),
            "image": c.get("image", ""),
            "imageID": "",
            "ready": ready,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": now}},
        }
        for c in (pod.get("spec") or {}).get("containers") or []
    ]
    return {
        "phase": "Running",
        "podIP": ips[0],
        "podIPs": [{"ip": ip} for ip in ips],
        "hostIP": host_ips[0],
        "hostIPs": [{"ip": ip} for ip in host_ips],
        "startTime": now,
        "conditions": conditions,
        "containerStatuses": containers,
        "qosClass": "BestEffort",
    }
