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
`picket-pod-sources` (hash:net,iface) each pod's address with its interface. IPv6 has
its own pair (`picket6-pod-links` with ::/1 and 8000::/1, `picket6-pod-sources`, family
inet6) named by the ip6tables rules: a pod that sends IPv6 from an address its Pod does
not list (an IPv4-only pod the CNI gave an IPv6 address the API never saw) is spoofing.
Link-local sources (neighbour discovery with the node) are never forwarded, so they
never meet this check."""

from __future__ import annotations

from collections.abc import Mapping

from agent.compiler.ir import NodeIR
from agent.dataplane.ipset_render import HALVES, IpSet, family_name

LINKS_SET = "picket-pod-links"
SOURCES_SET = "picket-pod-sources"
SETS = (LINKS_SET, SOURCES_SET)
COMMENT = "picket: not the pod's own address"
CHAIN = "PICKET-SPOOFED"
NFLOG_PREFIX = "picket spoofed"


def applies(ir: NodeIR, interfaces: Mapping[str, str]) -> bool:
    """Some local pod has an interface: the rule exists."""
    return any(ref in ir.endpoints for ref in interfaces)


def render_sets(ir: NodeIR, interfaces: Mapping[str, str], family: int = 4) -> list[IpSet]:
    """Both sets of `family`; none when no local pod has an interface yet and the node
    has no pod CIDR of the family (the unprogrammed check, unprogrammed.py, reads the
    sources set)."""
    wired = {ref: ifname for ref, ifname in interfaces.items() if ref in ir.endpoints}
    if not wired and not any(c.version == family for c in ir.pod_cidrs):
        return []
    links = frozenset(f"{half},{ifname}" for ifname in wired.values() for half in HALVES[family])
    sources = frozenset(
        f"{ip},{ifname}"
        for ref, ifname in wired.items()
        for ip in ir.endpoints[ref].ips
        if ip.version == family
    )
    return [
        IpSet(family_name(LINKS_SET, family), "hash:net,iface", links, family),
        IpSet(family_name(SOURCES_SET, family), "hash:net,iface", sources, family),
    ]


def forward_rule(family: int = 4) -> str:
    links, sources = (family_name(n, family) for n in SETS)
    return (
        f"-m set --match-set {links} src,src -m set ! --match-set {sources} src,src "
        f'-m comment --comment "{COMMENT}" -j {CHAIN}'
    )


def chain_rules(nflog_group: int) -> list[str]:
    """What a forged packet meets: the drop log's NFLOG, then DROP."""
    return [f'-j NFLOG --nflog-group {nflog_group} --nflog-prefix "{NFLOG_PREFIX}"', "-j DROP"]
