"""The lab's wiring, through netlink (pyroute2): an underlay bridge in a namespace of
its own, one veth to the host for the API address, one namespace per node.

The bridge lives in `picket-underlay`, not in the host namespace: with br_netfilter
loaded, bridged frames pass the iptables of the bridge's namespace, and the host's
rules (Docker sets FORWARD to DROP, for one) must not decide node-to-node traffic. In
the underlay namespace those rules are empty, and we switch bridge netfilter off there.
The host namespace gets one link, `picket-lab0`, holding the API address.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from pyroute2 import IPRoute, NetNS, netns

from lab.config import (
    API_ADDRESS,
    EXTERNAL_ADDRESS,
    EXTERNAL_ADDRESS6,
    EXTERNAL_LINK,
    EXTERNAL_NS,
    HOST_LINK,
    NETNS_PREFIX,
    OUTSIDE,
    OUTSIDE6,
    SERVICE_CIDR,
    SERVICE_CIDR6,
    UNDERLAY,
    UNDERLAY6,
    UNDERLAY_BRIDGE,
    UNDERLAY_NS,
    LabNode,
)

HOST_PEER = "pu-host"
Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


class TopologyError(RuntimeError):
    pass


@contextmanager
def netns_ipr(name: str | None) -> Iterator[IPRoute | NetNS]:
    """Netlink in namespace `name` (None: the host namespace)."""
    ipr = IPRoute() if name is None else NetNS(name)
    try:
        yield ipr
    finally:
        ipr.close()


def lab_namespaces() -> list[str]:
    return sorted(n for n in netns.listnetns() if n.startswith(NETNS_PREFIX))


def sysctl(namespace: str, key: str, value: str) -> None:
    """Sysctls under /proc/sys/net belong to the namespace of the writer."""
    subprocess.run(
        ["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", f"{key}={value}"],
        check=True,
        capture_output=True,
    )


def _index(ipr: IPRoute | NetNS, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _up(ipr: IPRoute | NetNS, ifname: str, **extra: object) -> None:
    ipr.link("set", index=_index(ipr, ifname), state="up", **extra)


def _ensure_netns(name: str) -> None:
    if name not in netns.listnetns():
        netns.create(name)
        no_dad(name)
    with netns_ipr(name) as ipr:
        _up(ipr, "lo")


def no_dad(namespace: str) -> None:
    """IPv6 addresses usable at once: duplicate address detection would hold each new
    one tentative for a second or more (the CNI plugin waits it out), and no address of
    the lab can be duplicated, since the lab hands them all out."""
    for scope in ("all", "default"):
        sysctl(namespace, f"net.ipv6.conf.{scope}.accept_dad", "0")


def _ensure_address(ipr: IPRoute | NetNS, ifname: str, address: str, prefixlen: int) -> None:
    index = _index(ipr, ifname)
    present = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index)}
    if address not in present:
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen)


def check_host_is_free() -> None:
    """Refuse to build over an address plan someone else already uses on this host."""
    with netns_ipr(None) as ipr:
        for route in [*ipr.get_routes(family=2), *ipr.get_routes(family=10)]:
            dst = route.get_attr("RTA_DST")
            oif = route.get_attr("RTA_OIF")
            if dst is None or route["dst_len"] == 0:
                continue
            links = ipr.get_links(oif) if oif else []
            name = links[0].get_attr("IFLA_IFNAME") if links else "?"
            if name != HOST_LINK and dst.startswith(("198.18.", "198.19.", "2001:2:")):
                raise TopologyError(
                    f"the host already routes {dst}/{route['dst_len']} via "
                    f"{name}; the lab needs 198.18.0.0/15 and 2001:2::/48 for itself"
                )


def ensure_underlay() -> None:
    """The underlay namespace with its bridge, and the host's `picket-lab0` on it."""
    _ensure_netns(UNDERLAY_NS)
    with netns_ipr(UNDERLAY_NS) as ipr:
        if _index(ipr, UNDERLAY_BRIDGE) is None:
            ipr.link("add", ifname=UNDERLAY_BRIDGE, kind="bridge")
        _up(ipr, UNDERLAY_BRIDGE)
    # Bridged node traffic must not pass any iptables: not the host's, not ours.
    for key in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"):
        # Without br_netfilter the keys do not exist, and bridged frames skip iptables.
        with contextlib.suppress(subprocess.CalledProcessError):
            sysctl(UNDERLAY_NS, f"net.bridge.{key}", "0")
    with netns_ipr(None) as host:
        if _index(host, HOST_LINK) is None:
            host.link(
                "add",
                ifname=HOST_LINK,
                kind="veth",
                peer={"ifname": HOST_PEER, "net_ns_fd": UNDERLAY_NS},
            )
        _ensure_address(host, HOST_LINK, str(API_ADDRESS), UNDERLAY.prefixlen)
        _up(host, HOST_LINK)
    with netns_ipr(UNDERLAY_NS) as ipr:
        _up(ipr, HOST_PEER, master=_index(ipr, UNDERLAY_BRIDGE))


def ensure_node(node: LabNode, all_nodes: list[LabNode]) -> None:
    """Node namespace, its underlay link and address, forwarding, routes to its peers'
    pod CIDRs through their underlay addresses."""
    _ensure_netns(node.netns)
    with netns_ipr(UNDERLAY_NS) as ipr:
        if _index(ipr, node.underlay_link) is None:
            ipr.link(
                "add",
                ifname=node.underlay_link,
                kind="veth",
                peer={"ifname": "eth0", "net_ns_fd": node.netns},
            )
        _up(ipr, node.underlay_link, master=_index(ipr, UNDERLAY_BRIDGE))
    with netns_ipr(node.netns) as ipr:
        _ensure_address(ipr, "eth0", str(node.address), UNDERLAY.prefixlen)
        _ensure_address(ipr, "eth0", str(node.address6), UNDERLAY6.prefixlen)
        _up(ipr, "eth0")
        routes: dict[Network, Address] = {
            peer.pod_cidr: peer.address for peer in all_nodes if peer != node
        }
        routes |= {peer.pod_cidr6: peer.address6 for peer in all_nodes if peer != node}
        routes[OUTSIDE] = EXTERNAL_ADDRESS
        routes[OUTSIDE6] = EXTERNAL_ADDRESS6
        # A real node's default route also carries the Service range: traffic to a
        # cluster IP that no DNAT rewrote (a Service without endpoints) is routed into
        # FORWARD, where kube-proxy rejects it, and the node itself can connect to
        # cluster IPs (its OUTPUT DNAT re-routes). The lab's nodes have no default
        # route, so the range goes where the outside does.
        routes[SERVICE_CIDR] = EXTERNAL_ADDRESS
        routes[SERVICE_CIDR6] = EXTERNAL_ADDRESS6
        _ensure_routes(ipr, routes)
    sysctl(node.netns, "net.ipv4.ip_forward", "1")
    sysctl(node.netns, "net.ipv6.conf.all.forwarding", "1")
    for scope in ("all", "default"):
        # Strict reverse-path filtering would drop pod traffic on asymmetric paths.
        sysctl(node.netns, f"net.ipv4.conf.{scope}.rp_filter", "0")


def _ensure_routes(ipr: IPRoute | NetNS, routes: dict[Network, Address]) -> None:
    present = {
        (r.get_attr("RTA_DST"), r["dst_len"])
        for family in (2, 10)
        for r in ipr.get_routes(family=family)
    }
    for dst, gateway in routes.items():
        if (str(dst.network_address), dst.prefixlen) not in present:
            ipr.route("add", dst=str(dst), gateway=str(gateway))


def ensure_external(all_nodes: list[LabNode]) -> None:
    """The outside world: one namespace on the underlay that owns all of 198.19.200.0/24
    and 2001:2:0:fe00::/64 (`local` routes: every address there is its own), reached
    through it by the nodes."""
    _ensure_netns(EXTERNAL_NS)
    with netns_ipr(UNDERLAY_NS) as ipr:
        if _index(ipr, EXTERNAL_LINK) is None:
            ipr.link(
                "add",
                ifname=EXTERNAL_LINK,
                kind="veth",
                peer={"ifname": "eth0", "net_ns_fd": EXTERNAL_NS},
            )
        _up(ipr, EXTERNAL_LINK, master=_index(ipr, UNDERLAY_BRIDGE))
    with netns_ipr(EXTERNAL_NS) as ipr:
        _ensure_address(ipr, "eth0", str(EXTERNAL_ADDRESS), UNDERLAY.prefixlen)
        _ensure_address(ipr, "eth0", str(EXTERNAL_ADDRESS6), UNDERLAY6.prefixlen)
        _up(ipr, "eth0")
        for outside, family in ((OUTSIDE, 2), (OUTSIDE6, 10)):
            local = [
                r
                for r in ipr.get_routes(family=family, table=255)
                if r.get_attr("RTA_DST") == str(outside.network_address)
                and r["dst_len"] == outside.prefixlen
            ]
            if not local:
                ipr.route(
                    "add",
                    dst=str(outside),
                    type="local",
                    table=255,
                    scope="host",
                    oif=_index(ipr, "lo"),
                )
        routes: dict[Network, Address] = {n.pod_cidr: n.address for n in all_nodes}
        routes |= {n.pod_cidr6: n.address6 for n in all_nodes}
        _ensure_routes(ipr, routes)
    # Every TCP and UDP port of every outside address is answered by one responder on 7.
    for command in ("iptables", "ip6tables"):
        for proto in ("tcp", "udp"):
            rule = ["PREROUTING", "-p", proto, "-j", "REDIRECT", "--to-ports", "7"]
            argv = ["ip", "netns", "exec", EXTERNAL_NS, command, "-w", "-t", "nat"]
            check = subprocess.run([*argv, "-C", *rule], capture_output=True, check=False)
            if check.returncode != 0:
                subprocess.run([*argv, "-A", *rule], capture_output=True, check=True)


def remove_everything() -> list[str]:
    """Delete every lab namespace and the host link; return what was removed."""
    removed = []
    for name in lab_namespaces():
        netns.remove(name)
        removed.append(f"netns {name}")
    with netns_ipr(None) as host:
        index = _index(host, HOST_LINK)
        if index is not None:
            host.link("del", index=index)
            removed.append(f"link {HOST_LINK}")
    return removed
