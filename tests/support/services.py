"""Services, EndpointSlices and the cluster DNS as the lab tests write and read them:
API dicts written as an operator writes them (selector-less Services with explicit
ClusterIPs and NodePorts, slices with the `kubernetes.io/service-name` label), the DNS
pod, and the dnsmasq processes of the lab."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from lab.config import state_dir
from tests.support.lab_cli import Kubectl, picket


def service(
    ns: str,
    name: str,
    ports: list[tuple[int, str, int]],
    cluster_ip: str | None = None,
    node_ports: dict[int, int] | None = None,
) -> dict[str, Any]:
    """A selector-less Service; `ports` are (port, protocol, targetPort)."""
    spec: dict[str, Any] = {
        "ports": [
            {"name": f"p{i}", "port": p, "protocol": proto, "targetPort": target}
            | ({"nodePort": node_ports[p]} if node_ports and p in node_ports else {})
            for i, (p, proto, target) in enumerate(ports)
        ]
    }
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    if node_ports:
        spec["type"] = "NodePort"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def endpoint_slice(
    ns: str,
    service_name: str,
    endpoints: list[dict[str, Any]],
    ports: list[tuple[int, str]],
    name: str | None = None,
) -> dict[str, Any]:
    """An EndpointSlice of `service_name`; `ports` are (port, protocol), named as
    service() names the Service's."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{service_name}-1",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [
            {"name": f"p{i}", "port": p, "protocol": proto} for i, (p, proto) in enumerate(ports)
        ],
    }


def endpoint(ip: str, ready: bool = True, hostname: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": ready}}
    if hostname:
        out["hostname"] = hostname
    return out


def pod_ip(kubectl: Kubectl, ref: str) -> str:
    ns, name = ref.split("/")
    return kubectl.json("get", "pod", "-n", ns, name)["status"]["podIP"]


def dns_pod(kubectl: Kubectl) -> dict[str, Any]:
    """The one pod of the coredns Deployment (kube-system, k8s-app=kube-dns)."""
    items = kubectl.json("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns")["items"]
    assert len(items) == 1, [p["metadata"]["name"] for p in items]
    return items[0]


def dnsmasq_pids() -> list[int]:
    """Every dnsmasq serving the lab's records, whatever started it."""
    pattern = f"^dnsmasq .*--hostsdir={state_dir()}/"
    proc = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return sorted(int(pid) for pid in proc.stdout.split())


def same_netns(pid: int, netns: str) -> bool:
    return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{netns}").st_ino


def resolve(*args: str) -> tuple[int, list[str]]:
    """`picket lab resolve ARGS`: (exit status, stdout lines)."""
    proc = picket("lab", "resolve", *args, check=False)
    return proc.returncode, proc.stdout.split()
