"""The lab's cluster DNS as its tests read it: the DNS pod, the dnsmasq processes that
serve the lab's records, `picket lab resolve` (and the same lookup in this process),
whether a DNS query passes policy; and the endpoint of a lab pod, for the
EndpointSlices the DNS and Service probe tests write (tests/support/services.py)."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from lab import lab
from lab.cluster import core_api, get_pod
from lab.config import CLUSTER_DOMAIN, DNS_SERVICE_IP, state_dir
from lab.dns.resolve import ask
from lab.dns.resolve import resolve as resolve_names
from lab.dns.search import TIMEOUT, Resolution, candidates
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


def _netns(source: str) -> str:
    pod = get_pod(core_api(lab.kubeconfig_path()), source)
    assert pod.netns is not None, f"{source} is not running in the lab"
    return pod.netns


def dns_gets_through(source: str, server: str, tcp: bool, timeout: float = 1.0) -> bool:
    """Whether one DNS query from pod SOURCE to SERVER (port 53) passes policy: any
    reply counts, NXDOMAIN and an ICMP unreachable too; only a timeout is a drop. A DNS
    server answers nothing but queries, so this is the probe of a DNS port."""
    name = "kube-dns.kube-system.svc.cluster.local."
    return ask(_netns(source), server, name, tcp, timeout).outcome != TIMEOUT


def lookup(source: str, name: str, tcp: bool = False, timeout: float = 1.0) -> Resolution:
    """What `picket lab resolve SOURCE NAME [--tcp]` finds, asked from this process (a
    `picket` start costs a second): the pod's search list, through the kube-dns
    ClusterIP."""
    names = candidates(name, source.partition("/")[0], CLUSTER_DOMAIN)
    return resolve_names(_netns(source), str(DNS_SERVICE_IP), names, tcp, timeout)
