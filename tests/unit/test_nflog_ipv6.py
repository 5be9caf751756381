"""NFLOG payloads of IPv6 packets (what ip6tables' NFLOG rules hand over): the fixed
header's addresses, the transport header found past extension headers (bounded), and
the same drop record an IPv4 packet gets, naming both pods and the policy; the
conntrack attributes' IPv6 original destination."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv6Address

import pytest

from agent.compiler.compile import compile_node
from agent.droplog.ct_attrs import original_destination
from agent.droplog.enrich import describe, record_fields
from agent.droplog.events import DROP, PacketEvent
from agent.droplog.nflog_wire import (
    MAX_EXTENSIONS,
    NFULA_PAYLOAD,
    NFULA_PREFIX,
    NFULNL_MSG_PACKET,
    parse_ipv6,
    parse_packet_message,
    parse_payload,
)
from agent.model.live import LiveState
from tests.support.builders import model_cluster, policy, state_of

SRC, DST = IPv6Address("2001:2:0:1::1"), IPv6Address("2001:2:0:1::12")  # x/a, y/b
TCP, UDP, ICMPV6 = 6, 17, 58
HOP, ROUTING, FRAGMENT, DEST, AUTH, NO_NEXT = 0, 43, 44, 60, 51, 59


def ipv6(next_header: int, rest: bytes, src: IPv6Address = SRC, dst: IPv6Address = DST) -> bytes:
    """An IPv6 header (version 6, traffic class 0, flow 0) and what follows it."""
    return (
        struct.pack("!IHBB", 6 << 28, len(rest), next_header, 64) + src.packed + dst.packed + rest
    )


def options(next_header: int, length_units: int = 0) -> bytes:
    """A hop-by-hop / destination options / routing header of (1 + units) * 8 bytes."""
    return bytes([next_header, length_units]) + b"\x01\x04\0\0\0\0" + b"\0" * (8 * length_units)


def fragment(next_header: int, offset: int, more: bool) -> bytes:
    return struct.pack("!BBHI", next_header, 0, (offset << 3) | int(more), 0x1234)


def auth(next_header: int) -> bytes:
    """An AH header with a 12-byte ICV: 24 bytes, its length field (24 / 4) - 2 = 4."""
    return bytes([next_header, 4]) + b"\0\0" + struct.pack("!II", 0x100, 1) + b"\0" * 12


TCP_SYN = struct.pack("!HHIIBBHHH", 41234, 80, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
UDP_53 = struct.pack("!HHHH", 5353, 53, 8, 0)
ECHO = struct.pack("!BBHHH", 128, 0, 0, 7, 1)


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (ipv6(TCP, TCP_SYN), (TCP, 41234, 80)),
        (ipv6(UDP, UDP_53), (UDP, 5353, 53)),
        (ipv6(ICMPV6, ECHO), (ICMPV6, 0, 0)),  # no ports: policed as its own protocol
        (ipv6(HOP, options(TCP) + TCP_SYN), (TCP, 41234, 80)),
        (ipv6(HOP, options(DEST, 1) + options(ROUTING) + options(UDP) + UDP_53), (UDP, 5353, 53)),
        (ipv6(AUTH, auth(TCP) + TCP_SYN), (TCP, 41234, 80)),
        (ipv6(FRAGMENT, fragment(UDP, 0, True) + UDP_53), (UDP, 5353, 53)),  # the first
        (ipv6(FRAGMENT, fragment(UDP, 185, False) + b"\0" * 8), (UDP, 0, 0)),  # a later one
        (ipv6(NO_NEXT, b""), (NO_NEXT, 0, 0)),
        (ipv6(TCP, TCP_SYN[:3]), (TCP, 0, 0)),  # the copy ends before the ports
        (ipv6(HOP, options(TCP)[:5]), (HOP, 0, 0)),  # ... or inside an extension header
    ],
    ids=[
        "tcp",
        "udp",
        "icmpv6-echo",
        "hop-by-hop",
        "three-extension-headers",
        "auth-header",
        "first-fragment",
        "non-first-fragment",
        "no-next-header",
        "cut-before-ports",
        "cut-in-extension",
    ],
)
def test_ipv6_payloads_give_protocol_addresses_and_ports(packet, expected):
    protocol, sport, dport = expected
    assert parse_ipv6(packet) == (protocol, SRC, sport, DST, dport)
    assert parse_payload(packet) == parse_ipv6(packet)


def test_the_extension_header_walk_is_bounded():
    chain = b""
    for _ in range(MAX_EXTENSIONS + 3):
        chain += options(DEST)
    packet = ipv6(DEST, chain[:-8] + options(TCP) + TCP_SYN)
    protocol, _, sport, _, dport = parse_ipv6(packet)
    assert (protocol, sport, dport) == (DEST, 0, 0)  # named, not walked to the end
    within = ipv6(DEST, options(DEST) * (MAX_EXTENSIONS - 2) + options(TCP) + TCP_SYN)
    assert parse_ipv6(within)[::2] == (TCP, 41234, 80)


def test_what_is_not_ip_is_nothing():
    assert parse_ipv6(b"\x60" + b"\0" * 38) is None  # shorter than the fixed header
    assert parse_ipv6(ipv6(TCP, TCP_SYN)[:39]) is None
    assert parse_payload(b"") is None
    assert parse_payload(b"\x10" + b"\0" * 60) is None  # version 1
    v4 = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 24, 1, 0, 64, UDP, 0, bytes(4), bytes(4))
    assert parse_payload(v4 + UDP_53[:4]) == (UDP, IPv4Address(0), 5353, IPv4Address(0), 53)


def nflog_message(prefix: str, payload: bytes) -> bytes:
    """An NFULNL_MSG_PACKET as nfnetlink_log sends it (attributes host-order headers)."""

    def nla(kind: int, value: bytes) -> bytes:
        raw = struct.pack("=HH", 4 + len(value), kind) + value
        return raw + b"\0" * (-len(raw) % 4)

    body = struct.pack("!BBH", socket.AF_INET6, 0, 100)  # nfgenmsg: the packet's family
    body += nla(NFULA_PREFIX, prefix.encode() + b"\0") + nla(NFULA_PAYLOAD, payload)
    return struct.pack("=IHHII", 16 + len(body), NFULNL_MSG_PACKET, 0, 0, 0) + body


def test_an_ipv6_denial_is_recorded_with_both_pods_and_the_policy():
    objs = [*model_cluster(), policy("y", "default-deny", {"podSelector": {}})]
    for obj in objs:
        if obj["kind"] == "Pod":
            _, _, node, n = obj["status"]["podIP"].split(".")
            obj["status"]["podIPs"].append({"ip": f"2001:2:0:{node}::{n}"})
    live, ir = LiveState.from_state(state_of(objs)), compile_node(state_of(objs), "node-1")
    packet = parse_packet_message(nflog_message("picket drop ingress", ipv6(TCP, TCP_SYN)))
    assert packet is not None and packet.prefix == "picket drop ingress"
    protocol, src, sport, dst, dport = parse_payload(packet.payload)
    event = PacketEvent("ingress", DROP, protocol, src, sport, dst, dport)
    fields = record_fields(event, describe(event, live, ir), 1, "node-1")
    assert fields["MESSAGE"].startswith(
        "DROP ingress TCP x/a:41234 -> y/b:80; y/b is isolated by y/default-deny"
    )
    assert fields["PICKET_SRC_POD"] == "a" and fields["PICKET_DST_POD"] == "b"
    assert fields["PICKET_SRC_IP"] == "2001:2:0:1::1"
    assert fields["PICKET_DST_IP"] == "2001:2:0:1::12"
    assert fields["PICKET_POLICIES"] == "y/default-deny"


def _nla(kind: int, value: bytes, nested: bool = False) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind | (0x8000 if nested else 0)) + value
    return raw + b"\0" * (-len(raw) % 4)


def test_the_original_destination_of_an_ipv6_connection():
    """CTA_TUPLE_ORIG with CTA_IP_V6_SRC (3) and CTA_IP_V6_DST (4), as ctnetlink
    writes an IPv6 entry: where the client sent it (a ClusterIP) before DNAT."""
    cluster_ip = IPv6Address("2001:2:0:ff00::10")
    ip = _nla(3, SRC.packed) + _nla(4, cluster_ip.packed)
    proto = _nla(1, bytes([TCP])) + _nla(2, struct.pack("!H", 41234)) + _nla(3, b"\0\x50")
    orig = _nla(1, ip, nested=True) + _nla(2, proto, nested=True)
    assert original_destination(_nla(1, orig, nested=True)) == (cluster_ip, 80)
    cut = _nla(1, _nla(1, _nla(4, cluster_ip.packed[:8]), nested=True), nested=True)
    assert original_destination(cut) is None  # 8 bytes are no address
