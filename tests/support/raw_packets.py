"""What an attacker in a pod sends, with raw sockets in the pod's namespace, and what
the receiving pod's kernel counted (its own /proc/net/snmp, never Picket's counters).

setns(2) switches one thread: sockets are made in the pod's namespace (lab.netns) and
the counters are read through /proc/thread-self, which is the calling thread's."""

from __future__ import annotations

import socket
import struct

from lab.netns import entered, socket_in


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
    the pod's own address is (IP_HDRINCL: the kernel fills length and checksum)."""
    payload = b"picket-abuse"
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload  # no UDP checksum
    with socket_in(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        for n in range(count):
            header = struct.pack(
                "!BBHHHBBH4s4s",
                0x45, 0, 20 + len(udp), 0x6000 + n, 0, 64, socket.IPPROTO_UDP, 0,
                socket.inet_aton(src), socket.inet_aton(dst),
            )  # fmt: skip
            sock.sendto(header + udp, (dst, 0))


def udp_in(netns: str) -> int:
    """UDP datagrams the pod's kernel received, to a listening port or not."""
    udp = snmp(netns)["Udp"]
    return udp["InDatagrams"] + udp["NoPorts"]
