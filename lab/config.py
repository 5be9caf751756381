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

IPv6 (2001:2::/48, RFC 5180's benchmarking range), beside each IPv4 range:
underlay  2001:2::/64           node i: 2001:2::<i>; external host ::fd (hex)
pods      2001:2:0:<i>::/64     the pod CIDR of node i
virtual   2001:2:0:<100+k>::/64 virtual node k (hex, so 2001:2:0:101::/64 for k = 1)
outside   2001:2:0:fe00::/64    "the internet", as 198.19.200.0/24
services  2001:2:0:ff00::/112   ClusterIPs of the second (or only) family
The underlay always carries both families; which families pods get is the lab's
`--ip-families` (a pod gets one address per family, IPv4 first when both).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
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
UNDERLAY6 = IPv6Network("2001:2::/64")
EXTERNAL_ADDRESS6 = IPv6Address("2001:2::fd")
OUTSIDE6 = IPv6Network("2001:2:0:fe00::/64")
SERVICE_CIDR6 = IPv6Network("2001:2:0:ff00::/112")
# Which address families pods get: both by default, as a dual-stack cluster has, so
# that every lab run shows enforcement on each (tests and the demo probe both).
IP_FAMILIES_DEFAULT = (4, 6)
CNI_BIN_DIR = Path("/usr/lib/cni")
SERVICE_CIDR = IPv4Network("198.19.240.0/20")
DNS_SERVICE_IP = IPv4Address("198.19.240.10")
DNS_SERVICE_IP6 = IPv6Address("2001:2:0:ff00::a")  # an IPv6-only lab's kube-dns
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
    def address6(self) -> IPv6Address:
        return UNDERLAY6.network_address + self.index

    def addresses(self, families: tuple[int, ...]) -> tuple[IPv4Address | IPv6Address, ...]:
        """The node's InternalIPs in the cluster's families (its underlay has both)."""
        return tuple(self.address if f == 4 else self.address6 for f in families)

    @property
    def pod_cidr(self) -> IPv4Network:
        return IPv4Network(f"198.18.{self.index}.0/24")

    @property
    def pod_cidr6(self) -> IPv6Network:
        return IPv6Network(f"2001:2:0:{self.index:x}::/64")

    def pod_cidrs(self, families: tuple[int, ...]) -> tuple[IPv4Network | IPv6Network, ...]:
        return tuple(self.pod_cidr if f == 4 else self.pod_cidr6 for f in families)

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

    @property
    def pod_cidr6(self) -> IPv6Network:
        return IPv6Network(f"2001:2:0:{0x100 + self.index:x}::/64")

    def pod_cidrs(self, families: tuple[int, ...]) -> tuple[IPv4Network | IPv6Network, ...]:
        return tuple(self.pod_cidr if f == 4 else self.pod_cidr6 for f in families)


def virtual_nodes(count: int) -> list[VirtualNode]:
    if not 0 <= count <= MAX_VIRTUAL_NODES:
        raise ValueError(f"--virtual-nodes must be between 0 and {MAX_VIRTUAL_NODES}")
    return [VirtualNode(i) for i in range(1, count + 1)]


def parse_ip_families(text: str) -> tuple[int, ...]:
    """`4`, `6`, `4,6` or `6,4` (the first is the primary family: pods' podIP)."""
    try:
        families = tuple(int(part) for part in text.split(","))
    except ValueError:
        families = ()
    if not families or set(families) - {4, 6} or len(set(families)) != len(families):
        raise ValueError(f"--ip-families {text!r}: want 4, 6, 4,6 or 6,4")
    return families


def node_by_address(address: str) -> LabNode | None:
    """The lab node whose underlay address (of either family) is `address`."""
    try:
        ip = ip_address(address)
    except ValueError:
        return None
    underlay = UNDERLAY if ip.version == 4 else UNDERLAY6
    index = int(ip) - int(underlay.network_address)
    return LabNode(index) if ip in underlay and 1 <= index <= MAX_NODES else None
