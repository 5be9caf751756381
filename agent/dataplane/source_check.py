"""The iptables backend's anti-spoofing check (pure): a packet that leaves a local pod's
interface must carry one of that pod's addresses as its source.

Both backends take a packet's identity from its source address, so without this a pod
with NET_RAW could send as any peer a policy admits (docs/ebpf.md, "Threat model"). The
check runs on every packet from a pod, established or not (a forged packet could
otherwise ride another pod's established connection), for pods no policy selects too.
It costs two ipset lookups whatever the number of pods:

    PICKET-FORWARD  -m set --match-set picket-pod-links src,src
                    -m set ! --match-set picket-pod-sources src,src -> PICKET-SPOOFED
                    (first rule)
    PICKET-SPOOFED  NFLOG "picket spoofed" (the drop log), DROP

Dropped packets are counted by the jump rule's counter
(`picket_dropped_packets_total{reason="spoofed"}`) and logged: the drop log names the
pod by the interface NFLOG reports, and folds its packets into one record per window.

`picket-pod-links` (hash:net,iface) holds 0.0.0.0/1 and 128.0.0.0/1 with each pod's
host-side interface (hash:net holds no /0): "arrived on a pod's interface";
`picket-pod-sources` (hash:net,iface) each pod's address with its interface."""

from __future__ import annotations

from collections.abc import Mapping

from agent.compiler.ir import NodeIR
from agent.dataplane.ipset_render import IpSet

LINKS_SET = "picket-pod-links"
SOURCES_SET = "picket-pod-sources"
SETS = (LINKS_SET, SOURCES_SET)
COMMENT = "picket: not the pod's own address"
CHAIN = "PICKET-SPOOFED"
NFLOG_PREFIX = "picket spoofed"


def applies(ir: NodeIR, interfaces: Mapping[str, str]) -> bool:
    """Some local pod has an interface: the rule exists."""
    return any(ref in ir.endpoints for ref in interfaces)


def render_sets(ir: NodeIR, interfaces: Mapping[str, str]) -> list[IpSet]:
    """Both sets; none when no local pod has an interface yet and the node has no pod
    CIDR (the unprogrammed check, unprogrammed.py, reads the sources set)."""
    wired = {ref: ifname for ref, ifname in interfaces.items() if ref in ir.endpoints}
    if not wired and not any(c.version == 4 for c in ir.pod_cidrs):
        return []
    links = frozenset(f"{half},{ifname}" for ifname in wired.values() for half in _HALVES)
    sources = frozenset(
        f"{ip},{ifname}"
        for ref, ifname in wired.items()
        for ip in ir.endpoints[ref].ips
        if ip.version == 4
    )
    return [
        IpSet(LINKS_SET, "hash:net,iface", links),
        IpSet(SOURCES_SET, "hash:net,iface", sources),
    ]


_HALVES = ("0.0.0.0/1", "128.0.0.0/1")


def forward_rule() -> str:
    return (
        f"-m set --match-set {LINKS_SET} src,src -m set ! --match-set {SOURCES_SET} src,src "
        f'-m comment --comment "{COMMENT}" -j {CHAIN}'
    )


def chain_rules(nflog_group: int) -> list[str]:
    """What a forged packet meets: the drop log's NFLOG, then DROP."""
    return [f'-j NFLOG --nflog-group {nflog_group} --nflog-prefix "{NFLOG_PREFIX}"', "-j DROP"]
