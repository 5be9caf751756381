"""The lab's cluster DNS as its tests read it: the DNS pod, the dnsmasq processes that
serve the lab's records, `picket lab resolve`; and the endpoint of a lab pod, for the
EndpointSlices the DNS and Service probe tests write (tests/support/services.py)."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from lab.config import state_dir
from tests.support.lab_cli import Kubectl, picket
from tests.support.services import endpoint


def pod_endpoint(kubectl: Kubectl, ref: str, ready: bool = True) -> dict[str, Any]:
    """The pod's address and node as an EndpointSlice endpoint."""
    ns, name = ref.split("/")
    pod = kubectl.json("get", "pod", "-n", ns, name)
    return endpoint(pod["status"]["podIP"], pod["spec"]["nodeName"], ready)


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
