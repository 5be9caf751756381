"""The lab's names and address plan, all inside 198.18.0.0/15 (RFC 2544 test range).

underlay  198.18.0.0/24   node i: 198.18.0.i; the host end (API server): .254
pods      198.18.i.0/24   the pod CIDR of node i (i = 1..200)
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
CNI_BIN_DIR = Path("/usr/lib/cni")


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
