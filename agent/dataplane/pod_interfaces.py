"""What the node's network stack says about local pods: their host-side interfaces
(from the routes to their addresses) and the node's own addresses."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import ip_address

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from agent.compiler.ir import NodeIR
from agent.model.objects import IPAddress

RTPROT_KERNEL = 2  # linux/rtnetlink.h: a route the kernel made for an address of its own


def host_interfaces(ir: NodeIR) -> dict[str, str]:
    """Local endpoint -> host-side interface, from the routes to their addresses (the
    CNI's veth names are not a contract; its routes are)."""
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        oif_by_dst = {
            ip_address(route.get_attr("RTA_DST")): route.get_attr("RTA_OIF")
            for route in _host_routes(ipr)
        }
    found = {}
    for ref, endpoint in ir.endpoints.items():
        # Any of its addresses will do: an IPv6-only pod has only an IPv6 route.
        for ip in endpoint.ips:
            oif = oif_by_dst.get(ip)
            if oif in names:
                found[ref] = names[oif]
                break
    return found


def interface_owner(ifindex: int) -> tuple[str, tuple[IPAddress, ...]]:
    """The interface's name and the host addresses routed to it: who sits behind a pod's
    host-side interface ("" and () when it is gone)."""
    with IPRoute() as ipr:
        try:
            links = ipr.get_links(ifindex) if ifindex else []
        except NetlinkError:  # gone since the packet was dropped
            links = []
        if not links:
            return "", ()
        name = links[0].get_attr("IFLA_IFNAME") or ""
        owned = tuple(ip_address(r.get_attr("RTA_DST")) for r in _host_routes(ipr, oif=ifindex))
    return name, owned


def _host_routes(ipr: IPRoute, **match: int) -> list:
    """Routes of the main table to one address (/32, /128) through an interface, of
    both families: how the CNI's ptp plugin routes a pod's addresses to its veth. Not
    the kernel's own (an IPv6 address of the node's, such as the gateway address ptp
    puts on every host-side veth, gets a /128 route of the kernel's in main)."""
    return [
        route
        for family, length in ((2, 32), (10, 128))
        for route in ipr.get_routes(family=family, table=254, **match)
        if route["dst_len"] == length
        and route["proto"] != RTPROT_KERNEL
        and route.get_attr("RTA_DST")
        and route.get_attr("RTA_OIF") is not None
    ]


def node_addresses() -> frozenset[IPAddress]:
    """Every address this node (network namespace) holds."""
    with IPRoute() as ipr:
        return frozenset(ip_address(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr())


def uplink_interfaces(node_ips: Iterable[IPAddress]) -> tuple[str, ...]:
    """The interfaces holding any of the node's own addresses (its Node object's): where
    traffic from other nodes arrives. None found (an address the node does not hold,
    behind a NAT) means no interface is trusted for the transit mark."""
    wanted = {str(ip) for ip in node_ips}
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        found = {
            names[a["index"]]
            for a in ipr.get_addr()
            if a.get_attr("IFA_ADDRESS") in wanted and a["index"] in names
        }
    return tuple(sorted(found - {"lo"}))
