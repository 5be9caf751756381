"""What an attacker in a pod sends, with raw sockets in the pod's namespace, and what
the receiving pod's kernel counted (its own /proc/net/snmp and snmp6, never Picket's
counters). Each function takes addresses of either family and works in theirs.

setns(2) switches one thread: sockets are made in the pod's namespace (lab.netns) and
the counters are read through /proc/thread-self, which is the calling thread's.

IPv6 packets go out whole through an AF_INET6 raw socket of protocol IPPROTO_RAW,
which implies IPV6_HDRINCL: the kernel sends them as they are, so the UDP and ICMPv6
checksums (over a pseudo-header, RFC 8200 8.1) are computed here."""

from __future__ import annotations

import socket
import struct
import time

from lab.cluster import family_of
from lab.netns import entered, socket_in

IP_MTU_DISCOVER, IP_PMTUDISC_DONT = 10, 0  # <linux/in.h>; Python 3.11's socket has neither
IPV6_DONTFRAG = 62  # <linux/in6.h>: 0 (the default) lets the sender fragment
HOP_BY_HOP, ROUTING, FRAGMENT, DESTINATION = 0, 43, 44, 60  # IPv6 extension headers
ICMP = {4: socket.IPPROTO_ICMP, 6: socket.IPPROTO_ICMPV6}
AF = {4: socket.AF_INET, 6: socket.AF_INET6}


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _with_checksum(src: str, dst: str, protocol: int, segment: bytes, at: int) -> bytes:
    """`segment` with the checksum at byte `at` over the pseudo-header of its family
    (ICMP over IPv4 has none)."""
    if protocol == socket.IPPROTO_ICMP:
        pseudo = b""
    elif family_of(dst) == 4:
        pseudo = struct.pack("!4s4sBBH", _packed(src), _packed(dst), 0, protocol, len(segment))
    else:
        pseudo = _packed(src) + _packed(dst) + struct.pack("!I3xB", len(segment), protocol)
    value = checksum(pseudo + segment[:at] + b"\0\0" + segment[at + 2 :])
    return segment[:at] + struct.pack("!H", value) + segment[at + 2 :]


def _packed(address: str) -> bytes:
    return socket.inet_pton(AF[family_of(address)], address)


def icmp_message(
    kind: int, code: int = 0, rest: bytes = b"\0\x01\0\x01", body: bytes = b""
) -> bytes:
    """An ICMP message of `kind` (its 4 bytes after the checksum, then `body`) with
    ICMP's checksum: an ICMPv6 socket fills its own (which covers the addresses)."""
    header = struct.pack("!BBH", kind, code, 0) + rest + body
    return header[:2] + struct.pack("!H", checksum(header)) + header[4:]


def send_icmp(netns: str, dst: str, kind: int, count: int, code: int = 0) -> None:
    """`count` ICMP (ICMPv6, to an IPv6 `dst`) messages of type `kind` from the pod's
    own address to `dst`, each with its own identifier, so that conntrack sees each
    request as its own (the kernel fills an ICMPv6 checksum itself)."""
    family = family_of(dst)
    with socket_in(netns, AF[family], socket.SOCK_RAW, ICMP[family]) as sock:
        for n in range(count):
            rest = struct.pack("!HH", 0x5000 + n, n)
            sock.sendto(icmp_message(kind, code, rest, b"picket-abuse"), (dst, 0))


def snmp(netns: str) -> dict[str, dict[str, int]]:
    """The pod's /proc/net/snmp as {section: {counter: value}} (IcmpMsg's InType<N>
    counters appear once one such message arrived: absent reads as 0). TCP's counters
    are here for both families."""
    with entered(netns), open("/proc/thread-self/net/snmp") as f:
        lines = f.read().splitlines()
    out: dict[str, dict[str, int]] = {}
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        section, _, keys = names.partition(": ")
        out[section] = dict(zip(keys.split(), map(int, values.split(": ")[1].split()), strict=True))
    return out


def snmp6(netns: str, device: str | None = None) -> dict[str, int]:
    """The namespace's /proc/net/snmp6 ({counter: value}; Icmp6InType<N> appears once
    one such message arrived), or one device's (/proc/net/dev_snmp6/<device>)."""
    path = f"dev_snmp6/{device}" if device else "snmp6"
    with entered(netns), open(f"/proc/thread-self/net/{path}") as f:
        pairs = (line.split() for line in f if line.strip())
        return {name: int(value) for name, value in pairs if value.isdigit()}


def icmp_in(netns: str, kind: int, family: int = 4) -> int:
    """ICMP (family 6: ICMPv6) messages of type `kind` the pod's kernel received."""
    if family == 6:
        return snmp6(netns).get(f"Icmp6InType{kind}", 0)
    return snmp(netns).get("IcmpMsg", {}).get(f"InType{kind}", 0)


def udp_in(netns: str, family: int = 4) -> int:
    """UDP datagrams of `family` the pod's kernel received, to a listening port or not."""
    if family == 6:
        udp6 = snmp6(netns)
        return udp6["Udp6InDatagrams"] + udp6["Udp6NoPorts"]
    udp = snmp(netns)["Udp"]
    return udp["InDatagrams"] + udp["NoPorts"]


def udp_errors_in(netns: str, family: int = 4) -> int:
    """UDP datagrams the pod's kernel received and dropped as bad (a truncated header)."""
    return snmp6(netns)["Udp6InErrors"] if family == 6 else snmp(netns)["Udp"]["InErrors"]


def fragments_in(netns: str, family: int = 4) -> tuple[int, int]:
    """(fragments received, datagrams reassembled) by the pod's kernel."""
    if family == 6:
        ip6 = snmp6(netns)
        return ip6["Ip6ReasmReqds"], ip6["Ip6ReasmOKs"]
    ip = snmp(netns)["Ip"]
    return ip["ReasmReqds"], ip["ReasmOKs"]


def ip_packet(
    src: str,
    dst: str,
    protocol: int,
    payload: bytes,
    ident: int = 0,
    fragment: tuple[int, bool] | None = None,
    extensions: tuple[int, ...] = (),
) -> bytes:
    """A whole IP packet of `dst`'s family carrying `payload` (already checksummed):
    IPv4 without options (IP_HDRINCL: the kernel fills the header checksum), its length
    what it carries; IPv6 with `extensions` (8 bytes each: PadN options, or a routing
    header with no segments left) in order. `fragment` (offset in bytes, more
    fragments) makes it a fragment of datagram `ident` (IPv6: a fragment header last)."""
    if family_of(dst) == 4:
        assert not extensions, "IPv4 options are not built here"
        offset, more = fragment or (0, False)
        frag = offset // 8 | (0x2000 if more else 0)
        return _ipv4_header(src, dst, protocol, 20 + len(payload), ident, frag) + payload
    chain = list(extensions) + ([FRAGMENT] if fragment else [])
    headers = b""
    for kind, following in zip(chain, [*chain[1:], protocol], strict=False):
        if kind == FRAGMENT:
            offset, more = fragment or (0, False)
            headers += struct.pack("!BBHI", following, 0, offset | more, ident)
        elif kind == ROUTING:  # type 0, segments left 0: the receiver skips it
            headers += struct.pack("!BBBB4x", following, 0, 0, 0)
        else:  # hop-by-hop or destination options: one PadN option of 4 bytes
            headers += struct.pack("!BBBB4x", following, 0, 1, 4)
    first = chain[0] if chain else protocol
    body = headers + payload
    fixed = struct.pack("!IHBB", 6 << 28, len(body), first, 64) + _packed(src) + _packed(dst)
    return fixed + body


def _ipv4_header(src: str, dst: str, protocol: int, length: int, ident: int, frag: int) -> bytes:
    return struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, length, ident, frag, 64, protocol, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip


def udp_datagram(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP header and `payload`, checksummed (IPv6 requires it)."""
    segment = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return _with_checksum(src, dst, socket.IPPROTO_UDP, segment, 6)


def udp_packets(
    src: str, dst: str, port: int, count: int, extensions: tuple[int, ...] = ()
) -> list[bytes]:
    """`count` UDP datagrams to `dst`:`port` carrying `src` as their source, whatever
    the sender's own address is, each from its own source port (its own flow)."""
    return [
        ip_packet(
            src, dst, socket.IPPROTO_UDP,
            udp_datagram(src, dst, 40000 + n, port, b"picket-abuse"), 0x6000 + n,
            extensions=extensions,
        )
        for n in range(count)
    ]  # fmt: skip


def send_udp_from(netns: str, src: str, dst: str, port: int, count: int) -> None:
    """`count` UDP datagrams to `dst`:`port` with source `src`, sent raw."""
    send_raw(netns, udp_packets(src, dst, port, count), dst)


def send_raw(netns: str, packets: list[bytes], dst: str) -> None:
    """Whole IP packets, header included, from the pod's namespace."""
    family = family_of(dst)
    with socket_in(netns, AF[family], socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        if family == 4:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        for packet in packets:
            sock.sendto(packet, (dst, 0))


def truncated(
    src: str, dst: str, protocol: int, transport: int, count: int, extensions: tuple[int, ...] = ()
) -> list[bytes]:
    """Packets whose transport header is cut to its first `transport` bytes (a TCP
    header needs 20, UDP 8), behind IPv6 `extensions` if any: conntrack cannot parse
    them and leaves them untracked."""
    head = struct.pack("!HHI", 40001, 80, 1)[:transport]  # ports, then (TCP) a sequence
    return [
        ip_packet(src, dst, protocol, head, 0x6100 + n, extensions=extensions) for n in range(count)
    ]


def lone_fragment(src: str, dst: str, ident: int) -> bytes:
    """The last fragment (offset 1480, no more) of a UDP datagram whose first is never
    sent: it carries no ports, and nothing can reassemble it."""
    return ip_packet(src, dst, socket.IPPROTO_UDP, b"f" * 64, ident, fragment=(1480, False))


def icmp_error_of_nothing(src: str, dst: str, count: int, too_big: bool = False) -> list[bytes]:
    """ICMP port unreachable (3/3, ICMPv6 1/4) or, `too_big`, ICMPv6 packet too big
    (2/0, an MTU of 1,280) from `src` to `dst` quoting a UDP datagram `dst` never sent
    (dst:40002 -> src:53): related to no connection anyone holds."""
    family = family_of(dst)
    kind, code, rest = {
        (4, False): (3, 3, b"\0\0\0\0"),
        (6, False): (1, 4, b"\0\0\0\0"),
        (6, True): (2, 0, struct.pack("!I", 1280)),
    }[family, too_big]
    packets = []
    for n in range(count):
        quoted = ip_packet(
            dst, src, socket.IPPROTO_UDP, udp_datagram(dst, src, 40002 + n, 53, b""), 0x6200 + n
        )
        message = _with_checksum(
            src, dst, ICMP[family], struct.pack("!BBH", kind, code, 0) + rest + quoted, 2
        )
        packets.append(ip_packet(src, dst, ICMP[family], message, 0x6300 + n))
    return packets


def send_router_solicitations(netns: str, count: int, device: str = "eth0") -> None:
    """`count` router solicitations (ICMPv6 133) from the pod to all routers (ff02::2)
    on its `device`, hop limit 255 as RFC 4861 wants, from its link-local address."""
    with entered(netns):
        index = socket.if_nametoindex(device)
    with socket_in(netns, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        for _ in range(count):
            sock.sendto(icmp_message(133, 0, b"\0\0\0\0"), ("ff02::2", 0, 0, index))


def send_large_udp(netns: str, dst: str, port: int, size: int) -> None:
    """One `size`-byte UDP datagram from the pod's own socket, fragmented by its kernel
    (IPv4: path-MTU discovery off for the socket, so DF is clear; IPv6 has no DF, the
    sender fragments what exceeds the path's MTU)."""
    family = family_of(dst)
    with socket_in(netns, AF[family], socket.SOCK_DGRAM) as sock:
        if family == 4:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 0)
        sock.sendto(b"d" * size, (dst, port))


def flood_udp(netns: str, dst: str, flows: int, deadline: float) -> int:
    """Up to `flows` one-datagram UDP flows to `dst` (a new destination port per
    datagram, a new socket and so source port every 60,000), within `deadline` seconds;
    returns how many were sent."""
    sent, started = 0, time.monotonic()
    while sent < flows and time.monotonic() - started < deadline:
        with socket_in(netns, AF[family_of(dst)], socket.SOCK_DGRAM) as sock:
            for port in range(1024, min(61024, 1024 + flows - sent)):
                try:
                    sock.sendto(b"f", (dst, port))
                except BlockingIOError:  # the socket's buffer is full: the next one
                    continue
                sent += 1
    return sent
