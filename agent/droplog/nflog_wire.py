"""The nfnetlink_log wire format of a logged packet (pure: bytes in, packet out), read
by `agent/droplog/nflog.py`'s reader (whose docstring tells the protocol) and by tests
with bytes the kernel sent.

A packet is one `NFULNL_MSG_PACKET` netlink message: nlmsghdr (host order), nfgenmsg,
then `NFULA_*` attributes (headers host order, values big-endian). Only the attributes
the drop log uses are copied out.

The payload starts at the network header: IPv4 from iptables' rules, IPv6 from
ip6tables' (the same NFLOG group and prefixes), told apart by the version nibble.
`parse_payload` reads either into the same tuple the drop log's events take."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from agent.droplog.events import PORTED_PROTOCOLS, parse_ipv4

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = (NFNL_SUBSYS_ULOG << 8) | 0

NFULA_IFINDEX_INDEV, NFULA_IFINDEX_OUTDEV = 4, 5
NFULA_PAYLOAD, NFULA_PREFIX, NFULA_SEQ = 9, 10, 12
NFULA_CT = 18  # the packet's conntrack entry: nested ctnetlink attributes (ct_attrs.py)
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, portid: host order
NLA = struct.Struct("=HH")  # len, type: host order
BE32 = struct.Struct("!I")  # attribute values: network order


@dataclass(frozen=True, slots=True)
class NflogPacket:
    """One logged packet. `payload` is the packet from its network header on, cut at the
    copy range; the sequence number is the instance's own counter (None only if the
    kernel left it out); interface indexes are None where the hook has no such device
    (no indev on OUTPUT, no outdev on INPUT); `conntrack` is the content of NFULA_CT
    (a reader that asked for it, a packet conntrack tracks), else None."""

    prefix: str
    payload: bytes
    seq: int | None
    indev: int | None
    outdev: int | None
    conntrack: bytes | None = None


def packet_from(
    buf: bytes | bytearray, start: int, stop: int, prefix_of: Callable[[bytes], str]
) -> NflogPacket:
    """The packet whose attributes lie in `buf[start:stop]` (an NFULNL_MSG_PACKET past
    its nlmsghdr and nfgenmsg); `prefix_of` turns NFULA_PREFIX's bytes into the prefix.
    Stops at the first malformed attribute, keeping what came before it."""
    view, unpack_nla, unpack_be32 = memoryview(buf), NLA.unpack_from, BE32.unpack_from
    prefix, payload, seq, indev, outdev, ct = "", b"", None, None, None, None
    attr = start
    while attr + 4 <= stop:
        alen, atype = unpack_nla(buf, attr)
        if alen < 4 or attr + alen > stop:
            break
        atype &= NLA_TYPE_MASK
        if atype == NFULA_PAYLOAD:
            payload = bytes(view[attr + 4 : attr + alen])
        elif atype == NFULA_PREFIX:
            prefix = prefix_of(bytes(view[attr + 4 : attr + alen]))
        elif atype == NFULA_SEQ:
            seq = unpack_be32(buf, attr + 4)[0]
        elif atype == NFULA_IFINDEX_OUTDEV:
            outdev = unpack_be32(buf, attr + 4)[0]
        elif atype == NFULA_IFINDEX_INDEV:
            indev = unpack_be32(buf, attr + 4)[0]
        elif atype == NFULA_CT:
            ct = bytes(view[attr + 4 : attr + alen])
        attr += (alen + 3) & ~3
    return NflogPacket(prefix, payload, seq, indev, outdev, ct)


def decode_prefix(raw: bytes) -> str:
    """NFULA_PREFIX's value: the rule's prefix with its trailing NUL."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_packet_message(message: bytes) -> NflogPacket | None:
    """One netlink message as the kernel sends it, if it is a logged packet."""
    if len(message) < 20:
        return None
    length, kind = NLMSGHDR.unpack_from(message)[:2]
    if kind != NFULNL_MSG_PACKET or not 20 <= length <= len(message):
        return None
    return packet_from(message, 20, length, decode_prefix)


# IPv6 extension headers that may stand between the fixed header and the transport
# header (RFC 8200 section 4, and AH, RFC 4302). ESP (50) hides what follows; 59 is "no
# next header". Each is walked by its length; a packet with more than MAX_EXTENSIONS is
# reported without ports (the datapath has judged it already: this only names it).
HOP_BY_HOP, ROUTING, FRAGMENT_HEADER, AUTH, DEST_OPTS = 0, 43, 44, 51, 60
EXTENSIONS = (HOP_BY_HOP, ROUTING, FRAGMENT_HEADER, AUTH, DEST_OPTS, 135, 139, 140)
MAX_EXTENSIONS = 8
IPV6_HEADER = 40

Addresses = tuple[int, IPv4Address | IPv6Address, int, IPv4Address | IPv6Address, int]


def _extension_length(packet: bytes, offset: int, kind: int) -> int:
    if kind == FRAGMENT_HEADER:
        return 8
    if kind == AUTH:  # in 4-octet units, less 2
        return (packet[offset + 1] + 2) * 4
    return (packet[offset + 1] + 1) * 8  # in 8-octet units, less the first


def parse_ipv6(packet: bytes) -> Addresses | None:
    """(protocol, source, source port, destination, destination port) from an IPv6
    packet's first bytes: the protocol is the transport header's, found by walking the
    extension headers (at most MAX_EXTENSIONS, each within the bytes copied); None when
    it is not IPv6 or shorter than its fixed header. Ports are 0 for port-less
    protocols, for a non-first fragment, and where the copy ends before them."""
    if len(packet) < IPV6_HEADER or packet[0] >> 4 != 6:
        return None
    src, dst = IPv6Address(packet[8:24]), IPv6Address(packet[24:40])
    kind, offset, first_fragment = packet[6], IPV6_HEADER, True
    for _ in range(MAX_EXTENSIONS):
        if kind not in EXTENSIONS or len(packet) < offset + 8:
            break
        if kind == FRAGMENT_HEADER:
            first_fragment = struct.unpack_from("!H", packet, offset + 2)[0] >> 3 == 0
        kind, offset = packet[offset], offset + _extension_length(packet, offset, kind)
    sport = dport = 0
    ported = kind in PORTED_PROTOCOLS and first_fragment
    if ported and len(packet) >= offset + 4:
        sport, dport = struct.unpack_from("!HH", packet, offset)
    return kind, src, sport, dst, dport


def parse_payload(payload: bytes) -> Addresses | None:
    """An NFLOG payload of either family (its first nibble says which); None when it is
    neither or too short to name its addresses."""
    if payload and payload[0] >> 4 == 6:
        return parse_ipv6(payload)
    return parse_ipv4(payload)
