"""The transit mark: how the node that judged a NodePort connection tells the backend's
node so (pure: rule and set texts; both backends program them).

With `externalTrafficPolicy: Cluster` the node an outside client reaches (A) picks a
backend on another node (B), DNATs, and masquerades to its own address: B no longer
sees the client. A judges the backend's ingress on the client's own address (a transit
endpoint, docs/agent.md); B would judge the same connection again on A's address, an
ordinary address an ipBlock may not hold, and deny what A admitted. So:

- A sets a DSCP code point on the packets that begin a connection it DNATed to a
  transit endpoint (before its program or chains judge them: what they deny is dropped
  anyway, and masquerade keeps the DSCP);
- B trusts a new connection as judged upstream only when all of these hold: it arrived
  on the interface holding B's node address (not from a pod), from another node's
  address, with that code point. B records the trust in a connection-mark bit when the
  connection begins, so the datapath (either backend) and the conntrack cleanup after a
  narrowing change read the same fact.

The mark rides on the first packets only (TCP: the SYN; UDP: until the first reply).
Who can forge it: only a sender of packets with another node's source address onto the
node network, which the cluster network must not allow anyway (the same trust a
tunnelling CNI gives its peers' addresses). DSCP 0 turns the mark off: B then judges
masqueraded transit on the masquerading node's address (docs/semantics.md).
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.compiler.ir import NodeIR
from agent.dataplane.ebpf_layout import TRUSTED_CTMARK
from agent.dataplane.ipset_render import SET_PREFIX, IpSet, family_name

CHAIN = "PICKET-TRANSIT"
# A code point of RFC 2474's pool 2 (xxxx11: experimental and local use).
DEFAULT_DSCP = 0x17
# The connection-mark bit meaning "judged by the node that DNATed it" (0x01000000; the
# eBPF program reads it too, hence its home in bpf/picket.h). kube-proxy uses packet
# marks (0x4000, 0x8000), not connection marks.
PEER_NODES_SET = f"{SET_PREFIX}peer-nodes"
TRANSIT_SET = f"{SET_PREFIX}transit"
SETS = (PEER_NODES_SET, TRANSIT_SET)  # IPv4's; `sets(6)`: picket6-peer-nodes, picket6-transit


def sets(family: int = 4) -> tuple[str, str]:
    """The names of the two sets of `family` (peer nodes, transit pods)."""
    return family_name(PEER_NODES_SET, family), family_name(TRANSIT_SET, family)


# The eBPF backend's jump from FORWARD (mangle) to the chain (ebpf/transit_chain.py);
# the iptables backend jumps to it from its own chain instead. While this jump stands,
# the chain and its sets are the eBPF backend's, whatever the other's cleanup finds.
STANDALONE_JUMP = ("FORWARD", "-m", "comment", "--comment", "picket: the transit mark", "-j", CHAIN)


def trusted(ctmark: int) -> bool:
    """Whether a connection mark says the connection was judged upstream."""
    return bool(ctmark & TRUSTED_CTMARK)


def render_sets(ir: NodeIR, family: int = 4) -> tuple[list[IpSet], list[IpSet]]:
    """(The other nodes' addresses of `family`, where trusted transit comes from; the
    transit endpoints' addresses of `family`, what this node marks), each only when
    there are any (the rules of chain_rules use them then; the transit set whenever
    there are transit endpoints, as the mark rule is written then)."""
    peers = frozenset(str(ip) for ip in ir.peer_node_ips if ip.version == family)
    transit = frozenset(
        str(ip) for e in ir.transit.values() for ip in e.ips if ip.version == family
    )
    peers_set, transit_set = sets(family)
    return (
        [IpSet(peers_set, "hash:ip", peers, family)] if peers else [],
        [IpSet(transit_set, "hash:ip", transit, family)] if ir.transit else [],
    )


def chain_rules(ir: NodeIR, uplinks: Iterable[str], dscp: int, family: int = 4) -> list[str]:
    """PICKET-TRANSIT's rules of `family` (after `-A PICKET-TRANSIT`): the trust when
    other nodes of that family exist, the mark when this node has transit endpoints;
    none when the mark is off. `uplinks`: the interfaces holding this node's addresses.
    DSCP, CONNMARK and conntrack matches read the same in ip6tables (DSCP is the top
    six bits of IPv6's traffic class)."""
    if not dscp:
        return []
    new = "-m conntrack --ctstate NEW"
    peers = any(ip.version == family for ip in ir.peer_node_ips)
    peers_set, transit_set = sets(family)
    rules = [
        f"-i {uplink} {new} -m dscp --dscp {dscp:#x} -m set --match-set {peers_set} src "
        f'-m comment --comment "picket: judged by the node that DNATed it" '
        f"-j CONNMARK --set-xmark {TRUSTED_CTMARK:#x}/{TRUSTED_CTMARK:#x}"
        for uplink in (sorted(set(uplinks)) if peers else ())
    ]
    if not ir.transit:
        return rules
    rules.append(
        f"{new} -m conntrack --ctstate DNAT -m set --match-set {transit_set} dst "
        f'-m comment --comment "picket: judged here for its backend\'s node" '
        f"-j DSCP --set-dscp {dscp:#x}"
    )
    return rules
