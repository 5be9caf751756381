"""The nfnetlink_log reader against the real kernel, in a namespace of its own.

Each test module run makes `nflogtest-<random>` with 198.18.250.1/32 on its loopback
and iptables rules there that NFLOG, then drop, what the namespace sends to that
address (UDP 9999, TCP 9998). Readers and senders are sockets created inside it from
this process (setns of one thread; a socket keeps its namespace), so nothing here
touches the host's firewall or the lab's namespaces."""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from agent.droplog.ct_attrs import original_destination
from agent.droplog.events import parse_ipv4
from agent.droplog.nflog import ConntrackUnavailable, NflogPacket, NflogReader
from lab.netns import entered

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, iptables)"),
    pytest.mark.skipif(
        shutil.which("ip") is None or shutil.which("iptables") is None,
        reason="needs ip and iptables",
    ),
]

GROUP = 77
PREFIX = "picket drop egress"
ADDR = "198.18.250.1"
UDP_PORT, TCP_PORT = 9999, 9998


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    name = f"nflogtest-{secrets.token_hex(4)}"
    _run("ip", "netns", "add", name)
    try:
        ns = ("ip", "netns", "exec", name)
        _run(*ns, "ip", "link", "set", "lo", "up")
        _run(*ns, "ip", "addr", "add", f"{ADDR}/32", "dev", "lo")
        for proto, port in (("udp", UDP_PORT), ("tcp", TCP_PORT)):
            match = ("-d", ADDR, "-p", proto, "--dport", str(port))
            _run(*ns, "iptables", "-A", "OUTPUT", *match, "-j", "NFLOG",
                 "--nflog-group", str(GROUP), "--nflog-prefix", PREFIX)  # fmt: skip
            _run(*ns, "iptables", "-A", "OUTPUT", *match, "-j", "DROP")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


def reader_in(netns: str, **kwargs: int | bool) -> NflogReader:
    with entered(netns):
        return NflogReader(GROUP, **kwargs)


def udp_sender(netns: str) -> socket.socket:
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ADDR, 0))
    return sock


def send_udp(sock: socket.socket, data: bytes) -> None:
    # The DROP after the NFLOG rule answers a local sender with EPERM.
    with contextlib.suppress(PermissionError):
        sock.sendto(data, (ADDR, UDP_PORT))


def collect(reader: NflogReader, count: int, timeout: float = 5.0) -> list[NflogPacket]:
    got: list[NflogPacket] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and (left := deadline - time.monotonic()) > 0:
        got += reader.read(left)
    return got


def lo_index(netns: str) -> int:
    with entered(netns):
        return socket.if_nametoindex("lo")


def netlink_drops(netns: str, reader: NflogReader) -> int:
    """The kernel's count of datagrams dropped for this socket (/proc/net/netlink)."""
    inode = os.fstat(reader.fileno()).st_ino
    with entered(netns), open("/proc/thread-self/net/netlink") as table:
        header, *rows = (line.split() for line in table)
    for row in rows:
        if int(row[header.index("Inode")]) == inode:
            return int(row[header.index("Drops")])
    raise AssertionError(f"socket inode {inode} not in /proc/net/netlink")


def test_udp_packets_arrive_with_prefix_headers_seq_and_device(netns: str) -> None:
    with reader_in(netns) as reader, udp_sender(netns) as sender:
        sport = sender.getsockname()[1]
        datas = [b"probe-%d" % i for i in range(5)] + [b"x" * 500]
        for data in datas:
            send_udp(sender, data)
        packets = collect(reader, len(datas))

        assert len(packets) == len(datas)
        addr = IPv4Address(ADDR)
        for packet, data in zip(packets, datas, strict=True):
            assert packet.prefix == PREFIX
            assert parse_ipv4(packet.payload) == (17, addr, sport, addr, UDP_PORT)
            assert packet.payload == packet.payload[:28] + data[: 128 - 28]  # copy range
            assert packet.outdev == lo_index(netns)
            assert packet.indev is None  # OUTPUT has no input device
        assert len(packets[-1].payload) == 128
        assert [p.seq for p in packets] == list(range(len(datas)))  # a fresh instance: 0..
        assert reader.lost == 0 and reader.overruns == 0


def test_tcp_syn_is_logged_with_its_ports(netns: str) -> None:
    with reader_in(netns) as reader:
        with entered(netns):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with client:
            client.setblocking(False)
            client.bind((ADDR, 0))
            sport = client.getsockname()[1]
            client.connect_ex((ADDR, TCP_PORT))  # the SYN is logged, then dropped
            packets = collect(reader, 1)
        # Closed before the 1 s retransmit, but tolerate a retransmitted SYN all the same.
        assert packets
        for packet in packets:
            addr = IPv4Address(ADDR)
            assert packet.prefix == PREFIX
            assert parse_ipv4(packet.payload) == (6, addr, sport, addr, TCP_PORT)
            header_len = (packet.payload[0] & 0x0F) * 4
            assert packet.payload[header_len + 13] & 0x02  # SYN
        seqs = [p.seq for p in packets]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_overflow_is_counted_as_lost(netns: str) -> None:
    """2,000 packets into an 8 KiB buffer (4096, doubled by the kernel) unread: most are
    dropped. Right after the burst, `lost` counts the ENOBUFS as one packet (nothing has
    shown the gap yet); one more packet reveals the exact number."""
    sent = 2000
    with reader_in(netns, rcvbuf=4096) as reader, udp_sender(netns) as sender:
        for i in range(sent):
            send_udp(sender, i.to_bytes(4, "big"))
        time.sleep(0.1)  # past the flush timer: the kernel has sent (or dropped) it all
        received: list[NflogPacket] = []
        while batch := reader.read(0.2):
            received += batch
        assert 0 < len(received) < sent
        assert reader.overruns >= 1
        assert reader.lost == reader.overruns  # a lower bound until a later packet
        assert [p.seq for p in received] == list(range(len(received)))

        send_udp(sender, b"after")
        sent += 1
        received += collect(reader, 1)
        assert received[-1].payload.endswith(b"after")
        assert received[-1].seq == sent - 1
        assert reader.lost > 0
        assert len(received) + reader.lost == sent
        # The kernel counts dropped datagrams; a datagram holds one or more packets.
        assert 1 <= netlink_drops(netns, reader) <= reader.lost


def test_read_times_out_without_traffic(netns: str) -> None:
    with reader_in(netns) as reader:
        start = time.monotonic()
        assert reader.read(0.2) == []
        assert 0.15 <= time.monotonic() - start < 0.5
        assert reader.read(0) == []


def test_a_second_reader_for_the_group_fails_clearly(netns: str) -> None:
    with reader_in(netns) as first:
        with pytest.raises(OSError, match="already bound") as raised:
            reader_in(netns)
        assert raised.value.errno == errno.EBUSY
        assert str(GROUP) in str(raised.value)
        assert first.read(0) == []  # the first reader is unharmed
    with reader_in(netns):  # closing released the group
        pass


def _kernel_has_conntrack_glue() -> bool:
    config = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    return "CONFIG_NETFILTER_NETLINK_GLUE_CT=y" in config


def test_a_reader_asking_for_conntrack_gets_the_original_destination_or_why_not(netns: str):
    """A datagram to 198.18.250.9:9997, DNATed in nat OUTPUT to the logged UDP port: with
    the kernel's conntrack glue the packet carries its entry, whose original tuple says
    where it was sent; without it the reader is refused with the missing option named."""
    sent_to = "198.18.250.9"
    ns = ("ip", "netns", "exec", netns)
    _run(*ns, "ip", "addr", "add", f"{sent_to}/32", "dev", "lo")
    _run(*ns, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", sent_to, "-p", "udp",
         "--dport", "9997", "-j", "DNAT", "--to-destination", f"{ADDR}:{UDP_PORT}")  # fmt: skip
    if not _kernel_has_conntrack_glue():
        with pytest.raises(ConntrackUnavailable, match="CONFIG_NETFILTER_NETLINK_GLUE_CT"):
            reader_in(netns, conntrack=True)
        with reader_in(netns) as reader:  # nothing was left bound
            assert reader.read(0) == []
        return
    with reader_in(netns, conntrack=True) as reader, udp_sender(netns) as sender:
        with contextlib.suppress(PermissionError):
            sender.sendto(b"via", (sent_to, 9997))
        (packet,) = collect(reader, 1)
        assert parse_ipv4(packet.payload)[3:] == (IPv4Address(ADDR), UDP_PORT)
        assert packet.conntrack is not None
        assert original_destination(packet.conntrack) == (IPv4Address(sent_to), 9997)
