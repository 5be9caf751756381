"""What a datapath reports of one denied (or, in audit mode, would-be denied) packet,
and the pure parsing of the packet headers the iptables capture hands over."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from agent.model.objects import IP_PROTOCOL_NAMES

DROP, WOULD_DROP = "drop", "would-drop"
# Why: a policy denied the connection; the packet left a pod's interface with a source
# address that is not one of the pod's; or, in an isolated direction, conntrack holds no
# connection for it: INVALID in conntrack's judgment, headers that do not parse, an IP
# fragment (docs/droplog.md, "Untracked packets"); or it is from or to a pod of this
# node that the agent has not programmed yet (docs/droplog.md, "Pods not programmed").
POLICY, SPOOFED = "policy", "spoofed"
INVALID, UNPARSED, FRAGMENT = "invalid", "unparsed", "fragment"
UNTRACKED = (INVALID, UNPARSED, FRAGMENT)
UNPROGRAMMED = "unprogrammed"


@dataclass(frozen=True)
class PacketEvent:
    """One packet a policy denied. `direction` is "ingress" or "egress" (whose policy
    denied it: the destination's for ingress, the source's for egress); `verdict` is
    "drop", or "would-drop" where the namespace is in audit mode. Ports are 0 for
    protocols without them. The addresses are the packet's as the policy check saw it,
    after kube-proxy's DNAT; `sent_to` is where the client sent the connection (a
    ClusterIP, a node address and node port) when DNAT changed that, else None.

    A `reason` of SPOOFED is a packet dropped before any policy: `src_ip` is the source
    it forged and `interface` the index of the host-side interface it came from, which
    names the pod that really sent it. One of UNTRACKED is a packet without a
    connection dropped in an isolated direction (its ports may be 0: unparsed).
    UNPROGRAMMED is a packet from (egress) or to (ingress) an address of this node's pod
    CIDRs that no programmed pod holds: a pod whose policy is not programmed yet."""

    direction: str
    verdict: str
    protocol: int
    src_ip: IPv4Address
    src_port: int
    dst_ip: IPv4Address
    dst_port: int
    sent_to: tuple[IPv4Address, int] | None = None
    reason: str = POLICY
    interface: int = 0

    @property
    def protocol_name(self) -> str:
        return IP_PROTOCOL_NAMES.get(self.protocol, str(self.protocol))

    @property
    def flow(self) -> tuple[object, ...]:
        """The connection this packet belongs to, as the log folds it; for a forged
        source, the interface: one record per pod and window, whatever it forges; for
        an untracked packet, the reason, direction and local pod's address: one record
        per pod, direction and reason a window, whatever the peer sends."""
        if self.reason == SPOOFED:
            return (SPOOFED, self.interface)
        if self.reason in UNTRACKED or self.reason == UNPROGRAMMED:
            local = self.dst_ip if self.direction == "ingress" else self.src_ip
            return (self.reason, self.direction, local)
        return (
            self.direction,
            self.protocol,
            self.src_ip,
            self.src_port,
            self.dst_ip,
            self.dst_port,
        )


PORTED_PROTOCOLS = (6, 17, 132)  # TCP, UDP, SCTP: the protocols kube-proxy DNATs


def sent_to(
    protocol: int, dst_ip: IPv4Address, dst_port: int, original: tuple[IPv4Address, int] | None
) -> tuple[IPv4Address, int] | None:
    """The connection's original destination when it differs from the packet's (the
    connection was DNATed), else None. Without ports (ICMP) only the address counts:
    conntrack's tuple holds an ICMP id and type there, which never match."""
    if original is None or int(original[0]) == 0:
        return None
    if protocol not in PORTED_PROTOCOLS:
        return (original[0], 0) if original[0] != dst_ip else None
    return original if original != (dst_ip, dst_port) else None


def parse_ipv4(packet: bytes) -> tuple[int, IPv4Address, int, IPv4Address, int] | None:
    """(protocol, source, source port, destination, destination port) from an IPv4
    packet's first bytes; None when it is not IPv4 or too short. Non-first fragments and
    port-less protocols get port 0 (TCP, UDP and SCTP all start with the two ports)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header_len = (packet[0] & 0x0F) * 4
    protocol = packet[9]
    src, dst = IPv4Address(packet[12:16]), IPv4Address(packet[16:20])
    fragment_offset = struct.unpack("!H", packet[6:8])[0] & 0x1FFF
    sport = dport = 0
    if protocol in PORTED_PROTOCOLS and fragment_offset == 0 and len(packet) >= header_len + 4:
        sport, dport = struct.unpack("!HH", packet[header_len : header_len + 4])
    return protocol, src, sport, dst, dport
