"""The Node and Pod status a kubelet reports, in API form."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lab.config import LabNode, VirtualNode

KUBELET_VERSION = "v1.32.0-picket-lab"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_body(node: LabNode | VirtualNode) -> dict[str, Any]:
    now = _now()
    virtual = isinstance(node, VirtualNode)
    addresses = [{"type": "Hostname", "address": node.name}]
    if not virtual:
        addresses.insert(0, {"type": "InternalIP", "address": str(node.address)})
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
        "spec": {"podCIDR": str(node.pod_cidr), "podCIDRs": [str(node.pod_cidr)]},
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
    pod: dict[str, Any], ip: str, host_ip: str, ready: bool = True
) -> dict[str, Any]:
    """Running (and Ready unless `ready` is False), one container status per container."""
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
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": now,
        "conditions": conditions,
        "containerStatuses": containers,
        "qosClass": "BestEffort",
    }
