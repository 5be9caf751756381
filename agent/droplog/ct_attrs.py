"""The original destination of a connection, from the conntrack attributes the kernel
attaches to an NFLOG packet (pure: bytes in, address out).

With `NFULNL_CFG_F_CONNTRACK`, nfnetlink_log puts the packet's conntrack entry in one
nested `NFULA_CT` attribute, built by nf_conntrack_netlink's glue
(`ctnetlink_glue_build`) with the same attributes a ctnetlink dump carries
(include/uapi/linux/netfilter/nfnetlink_conntrack.h):

    CTA_TUPLE_ORIG   (nested)  the connection as its first packet was sent
      CTA_TUPLE_IP    (nested)  CTA_IP_V4_SRC, CTA_IP_V4_DST: 4 bytes each (IPv6:
                                CTA_IP_V6_SRC, CTA_IP_V6_DST, 16 bytes each)
      CTA_TUPLE_PROTO (nested)  CTA_PROTO_NUM (u8), CTA_PROTO_SRC_PORT,
                                CTA_PROTO_DST_PORT (be16)
    CTA_TUPLE_REPLY  (nested)  the same for replies: after DNAT its source is the backend
    CTA_STATUS, CTA_TIMEOUT, ...

The packet NFLOG hands over at FORWARD is after kube-proxy's DNAT, so the original
tuple's destination is the only record of where the client sent it (a ClusterIP, a node
address and node port). Attribute headers are host order, values network order; nested
attributes carry NLA_F_NESTED in their type, which is masked off. Anything cut short or
malformed reads as "no original destination": the record then names no Service, which
is what it said before the kernel gave us conntrack at all."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from agent.droplog.nflog_wire import NLA, NLA_TYPE_MASK

CTA_TUPLE_ORIG = 1
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_DST, CTA_IP_V6_DST = 2, 4
CTA_PROTO_DST_PORT = 3


def attributes(data: bytes) -> dict[int, bytes]:
    """Type -> value of the netlink attributes in `data` (the first of a repeated type
    wins); stops at the first malformed header."""
    found: dict[int, bytes] = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = NLA.unpack_from(data, offset)
        if length < 4 or offset + length > len(data):
            break
        found.setdefault(kind & NLA_TYPE_MASK, data[offset + 4 : offset + length])
        offset += (length + 3) & ~3
    return found


def original_destination(conntrack: bytes) -> tuple[IPv4Address | IPv6Address, int] | None:
    """(address, port) the connection's first packet was sent to, from the content of
    an NFULA_CT attribute; port 0 when its protocol has none (ICMP). None when the entry
    has no original tuple with an address."""
    tuple_orig = attributes(conntrack).get(CTA_TUPLE_ORIG)
    if tuple_orig is None:
        return None
    parts = attributes(tuple_orig)
    ip = attributes(parts.get(CTA_TUPLE_IP, b""))
    address: IPv4Address | IPv6Address
    if len(ip.get(CTA_IP_V4_DST, b"")) == 4:
        address = IPv4Address(ip[CTA_IP_V4_DST])
    elif len(ip.get(CTA_IP_V6_DST, b"")) == 16:
        address = IPv6Address(ip[CTA_IP_V6_DST])
    else:
        return None
    port = attributes(parts.get(CTA_TUPLE_PROTO, b"")).get(CTA_PROTO_DST_PORT)
    return address, struct.unpack("!H", port)[0] if port and len(port) == 2 else 0
