"""The lab's names and address plan, all inside 198.18.0.0/15 (RFC 2544 test range).

underlay  198.18.0.0/24     node i: 198.18.0.i; external host .253; the host end
                            (API server) .254
pods      198.18.i.0/24     the pod CIDR of node i (i = 1..200)
virtual   198.19.k.0/24     the pod CIDR of virtual node k (k = 1..199): pods that
                            are API objects with addresses, and no namespace
outside   198.19.200.0/24   "the internet": every address answers, from one
                            namespace (for ipBlock rules and external clients)
services  198.19.240.0/20   ClusterIPs (the lab's --service-cluster-ip-range); the
                            kube-dns Service holds .10, as 10.96.0.10 on kubeadm
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

HOST_LINK = "picket-lab0"  # the only thing the lab puts in the host namespace
UNDERLAY_NS = "picket-underlay"  # holds the bridge that joins the nodes
UNDERLAY_BRIDGE = "br0"
NETNS_PREFIX = "picket-"
UNDERLAY = IPv4Network("198.18.0.0/24")
API_ADDRESS = IPv4Address("198.18.0.254")
API_PORT = 6443
MAX_NODES = 200
MAX_VIRTUAL_NODES = 199
EXTERNAL_NS = "picket-external"
EXTERNAL_LINK = "pu-external"
EXTERNAL_ADDRESS = IPv4Address("198.18.0.253")
OUTSIDE = IPv4Network("198.19.200.0/24")
CNI_BIN_DIR = Path("/usr/lib/cni")
SERVICE_CIDR = IPv4Network("198.19.240.0/20")
DNS_SERVICE_IP = IPv4Address("198.19.240.10")
NODEPORT_RANGE = range(30000, 32768)  # kube-apiserver's --service-node-port-range default
CLUSTER_DOMAIN = "cluster.local"
AGENT_METRICS_PORT = 9402  # `picket agent --metrics-addr` default, in each node's namespace


def state_dir() -> Path:
    """Where the lab keeps pids, certificates, the kubeconfig and logs."""
    return Path(os.environ.get("PICKET_LAB_DIR", "/run/picket-lab"))


@dataclass(frozen=True)
class LabNode:
    index: int  # 1-based

    @property
    def name(self) -> str:
        return f"node-{self.index}"

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.name}"

    @property
    def address(self) -> IPv4Address:
        return UNDERLAY.network_address + self.index

    @property
    def pod_cidr(self) -> IPv4Network:
        return IPv4Network(f"198.18.{self.index}.0/24")

    @property
    def metrics_url(self) -> str:
        """The node agent's /metrics, reachable from the host through the lab link."""
        return f"http://{self.address}:{AGENT_METRICS_PORT}/metrics"

    @property
    def underlay_link(self) -> str:
        """The node's veth end on the underlay bridge (interface names: <= 15 chars)."""
        return f"pu-{self.name}"


def lab_nodes(count: int) -> list[LabNode]:
    if not 1 <= count <= MAX_NODES:
        raise ValueError(f"--nodes must be between 1 and {MAX_NODES}")
    return [LabNode(i) for i in range(1, count + 1)]


def pod_netns(uid: str) -> str:
    """A pod's network namespace, from its UID (stable, short, unique)."""
    return f"{NETNS_PREFIX}pod-{uid.replace('-', '')[:12]}"


@dataclass(frozen=True)
class VirtualNode:
    """A node that exists only in the API: its pods get addresses and nothing else, so
    benchmarks can have thousands of pods without thousands of namespaces."""

    index: int  # 1-based

    @property
    def name(self) -> str:
        return f"vnode-{self.index}"

    @property
    def pod_cidr(self) -> IPv4Network:
        return IPv4Network(f"198.19.{self.index}.0/24")


def virtual_nodes(count: int) -> list[VirtualNode]:
    if not 0 <= count <= MAX_VIRTUAL_NODES:
        raise ValueError(f"--virtual-nodes must be between 0 and {MAX_VIRTUAL_NODES}")
    return [VirtualNode(i) for i in range(1, count + 1)]


def node_by_address(address: str) -> LabNode | None:
    """The lab node whose underlay address is `address`."""
    try:
        ip = IPv4Address(address)
    except ValueError:
        return None
    index = int(ip) - int(UNDERLAY.network_address)
    return LabNode(index) if ip in UNDERLAY and 1 <= index <= MAX_NODES else None
