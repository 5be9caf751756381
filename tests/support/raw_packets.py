"""What an attacker in a pod sends, with raw sockets in the pod's namespace, and what
the receiving pod's kernel counted (its own /proc/net/snmp, never Picket's counters).

setns(2) switches one thread: sockets are made in the pod's namespace (lab.netns) and
the counters are read through /proc/thread-self, which is the calling thread's."""

from __future__ import annotations

import socket
import struct
import time

from lab.netns import entered, socket_in

IP_MTU_DISCOVER, IP_PMTUDISC_DONT = 10, 0  # <linux/in.h>; Python 3.11's socket has neither


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_message(
    kind: int, code: int = 0, rest: bytes = b"\0\x01\0\x01", body: bytes = b""
) -> bytes:
    """An ICMP message of `kind` (its 4 bytes after the checksum, then `body`)."""
    header = struct.pack("!BBH", kind, code, 0) + rest + body
    return header[:2] + struct.pack("!H", checksum(header)) + header[4:]


def send_icmp(netns: str, dst: str, kind: int, count: int, code: int = 0) -> None:
    """`count` ICMP messages of type `kind` from the pod's own address to `dst` (each
    with its own identifier, so that conntrack sees each request as its own)."""
    with socket_in(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        for n in range(count):
            rest = struct.pack("!HH", 0x5000 + n, n)
            sock.sendto(icmp_message(kind, code, rest, b"picket-abuse"), (dst, 0))


def snmp(netns: str) -> dict[str, dict[str, int]]:
    """The pod's /proc/net/snmp as {section: {counter: value}} (IcmpMsg's InType<N>
    counters appear once one such message arrived: absent reads as 0)."""
    with entered(netns), open("/proc/thread-self/net/snmp") as f:
        lines = f.read().splitlines()
    out: dict[str, dict[str, int]] = {}
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        section, _, keys = names.partition(": ")
        out[section] = dict(zip(keys.split(), map(int, values.split(": ")[1].split()), strict=True))
    return out


def icmp_in(netns: str, kind: int) -> int:
    """ICMP messages of type `kind` the pod's kernel received."""
    return snmp(netns).get("IcmpMsg", {}).get(f"InType{kind}", 0)


def send_udp_from(netns: str, src: str, dst: str, port: int, count: int) -> None:
    """`count` UDP datagrams to `dst`:`port` carrying `src` as their source, whatever
    the pod's own address is."""
    payload = b"picket-abuse"
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload  # no UDP checksum
    packets = [
        _ip_header(src, dst, socket.IPPROTO_UDP, 20 + len(udp), 0x6000 + n) + udp
        for n in range(count)
    ]
    send_raw(netns, packets, dst)


def udp_in(netns: str) -> int:
    """UDP datagrams the pod's kernel received, to a listening port or not."""
    udp = snmp(netns)["Udp"]
    return udp["InDatagrams"] + udp["NoPorts"]


def _ip_header(src: str, dst: str, protocol: int, length: int, ident: int, frag: int = 0) -> bytes:
    """An IPv4 header without options (IP_HDRINCL: the kernel fills the checksum).
    `length` goes into tot_len as given: a truncated packet says what it carries."""
    return struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, length, ident, frag, 64, protocol, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip


def send_raw(netns: str, packets: list[bytes], dst: str) -> None:
    """Whole IP packets, header included, from the pod's namespace."""
    with socket_in(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        for packet in packets:
            sock.sendto(packet, (dst, 0))


def truncated(src: str, dst: str, protocol: int, transport: int, count: int) -> list[bytes]:
    """Packets whose transport header is cut to its first `transport` bytes (a TCP
    header needs 20, UDP 8): conntrack cannot parse them and leaves them untracked."""
    head = struct.pack("!HHI", 40001, 80, 1)[:transport]  # ports, then (TCP) a sequence
    return [_ip_header(src, dst, protocol, 20 + len(head), 0x6100 + n) + head for n in range(count)]


def lone_fragment(src: str, dst: str, ident: int) -> bytes:
    """The last fragment (offset 1480, no MF) of a UDP datagram whose first is never
    sent: it carries no ports, and nothing can reassemble it."""
    body = b"f" * 64
    return _ip_header(src, dst, socket.IPPROTO_UDP, 20 + len(body), ident, 1480 // 8) + body


def icmp_error_of_nothing(src: str, dst: str, count: int) -> list[bytes]:
    """ICMP port unreachable (3/3) from `src` to `dst` quoting a UDP datagram `dst`
    never sent (dst:40002 -> src:53): related to no connection anyone holds."""
    packets = []
    for n in range(count):
        quoted = _ip_header(dst, src, socket.IPPROTO_UDP, 28, 0x6200 + n) + struct.pack(
            "!HHHH", 40002 + n, 53, 8, 0
        )
        icmp = icmp_message(3, 3, b"\0\0\0\0", quoted)
        packets.append(_ip_header(src, dst, socket.IPPROTO_ICMP, 20 + len(icmp), 0x6300 + n) + icmp)
    return packets


def send_large_udp(netns: str, dst: str, port: int, size: int) -> None:
    """One `size`-byte UDP datagram from the pod's own socket, fragmented by its kernel
    (path-MTU discovery off for the socket, so DF is clear)."""
    with socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        sock.sendto(b"d" * size, (dst, port))


def flood_udp(netns: str, dst: str, flows: int, deadline: float) -> int:
    """Up to `flows` one-datagram UDP flows to `dst` (a new destination port per
    datagram, a new socket and so source port every 60,000), within `deadline` seconds;
    returns how many were sent."""
    sent, started = 0, time.monotonic()
    while sent < flows and time.monotonic() - started < deadline:
        with socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for port in range(1024, min(61024, 1024 + flows - sent)):
                try:
                    sock.sendto(b"f", (dst, port))
                except BlockingIOError:  # the socket's buffer is full: the next one
                    continue
                sent += 1
    return sent
