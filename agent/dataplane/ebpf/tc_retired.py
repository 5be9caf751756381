"""The TC programs of Picket's first eBPF datapath, which judged packets on each pod's
host-side interface (before kube-proxy's DNAT, after its masquerade: wrong for Service
traffic). An agent upgraded in place finds them still attached, sharing its pinned
maps: it removes them once its FORWARD program is hooked, and so does cleanup."""

from __future__ import annotations

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

FILTER_PRIO = 4949  # the TC filters' fixed priority
HOOKS = {"ffff:fff2": "from pod", "ffff:fff3": "to pod"}  # clsact ingress, egress


def detach_everywhere() -> list[str]:
    """Remove the TC programs from every interface; say which went."""
    removed = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            index, name = link["index"], link.get_attr("IFLA_IFNAME")
            for hook, side in HOOKS.items():
                try:
                    ipr.tc("del-filter", "bpf", index, ":1", parent=hook, prio=FILTER_PRIO)
                    removed.append(f"TC program on {name} ({side})")
                except NetlinkError:
                    pass
    return removed
