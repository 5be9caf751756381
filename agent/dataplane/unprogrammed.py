"""The iptables backend's check that a pod is closed until it is programmed (pure).

A pod's interface and address exist from its CNI ADD, and its policy exists in the
dataplane only once the agent has seen the pod and programmed it: in between (and for
every pod started while the agent is down, restarting or cut off from the API) its
traffic would meet no rule of its own. So traffic from or to an address in the node's
pod CIDRs (NodeIR.pod_cidrs) is dropped unless that address is a programmed local pod's
on that pod's own interface: the anti-spoofing check's sources set (source_check.py),
which gains a pod only after its chains are in place (iptables.py). Two rules, after
the anti-spoofing check and before everything else in PICKET-FORWARD:

    PICKET-FORWARD    -s <pod CIDR> ! --match-set picket-pod-sources src,src
                        -> PICKET-UNPROG-EG
                      -d <pod CIDR> ! --match-set picket-pod-sources dst,dst
                        -> PICKET-UNPROG-IN
    PICKET-UNPROG-EG  NFLOG "picket unprogrammed egress", DROP   (-IN: ingress)

(`dst,dst` matches the destination address with the outgoing interface.) Each family's
rules name its own pod CIDRs and sources set: ip6tables the IPv6 ranges and
`picket6-pod-sources`. Without a pod CIDR (a Node with no spec.podCIDRs and no
--pod-cidr) nothing is added, and a new pod is open until programmed, as before; the
agent warns at start (agent/loop/agent.py)."""

from __future__ import annotations

from agent.compiler.ir import NodeIR
from agent.dataplane.ipset_render import family_name
from agent.dataplane.source_check import SOURCES_SET

EGRESS_CHAIN, INGRESS_CHAIN = "PICKET-UNPROG-EG", "PICKET-UNPROG-IN"
CHAINS = (EGRESS_CHAIN, INGRESS_CHAIN)
COMMENT = "picket: a pod not programmed yet"


def nflog_prefix(direction: str) -> str:
    return f"picket unprogrammed {direction}"


def forward_rules(ir: NodeIR, family: int = 4) -> list[str]:
    """The two rules per pod CIDR of `family`."""
    rules = []
    sources = family_name(SOURCES_SET, family)
    for cidr in ir.pod_cidrs:
        if cidr.version != family:
            continue
        rules += [
            f"-s {cidr} -m set ! --match-set {sources} src,src "
            f'-m comment --comment "{COMMENT}" -j {EGRESS_CHAIN}',
            f"-d {cidr} -m set ! --match-set {sources} dst,dst "
            f'-m comment --comment "{COMMENT}" -j {INGRESS_CHAIN}',
        ]
    return rules


def chains(nflog_group: int) -> dict[str, list[str]]:
    """What the traffic of a pod not programmed yet meets: the drop log's NFLOG (by the
    direction of the pod it is), then DROP."""
    return {
        chain: [
            f'-j NFLOG --nflog-group {nflog_group} --nflog-prefix "{nflog_prefix(direction)}"',
            "-j DROP",
        ]
        for chain, direction in ((EGRESS_CHAIN, "egress"), (INGRESS_CHAIN, "ingress"))
    }
