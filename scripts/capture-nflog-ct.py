"""Captures the kernel bytes tests/unit/test_droplog_services.py parses: one NFLOG packet
message and one ctnetlink entry of the same DNATed UDP connection, in a throwaway network
namespace (198.18.250.3:5000 -> 198.18.250.1:53, DNAT to 198.18.250.2:5353), and prints
them as hex. Run as root, under the lab lock (it makes a network namespace):

    flock /tmp/picket-lab.lock unshare -n .venv/bin/python scripts/capture-nflog-ct.py

Why a ctnetlink entry: NFULA_CT holds what nf_conntrack_netlink's glue builds, the same
CTA_* attributes a ctnetlink dump gives (ctnetlink_dump_tuples serves both). A kernel
with CONFIG_NETFILTER_NETLINK_GLUE_CT also prints the NFLOG message with its NFULA_CT;
one without it (the machine the tests were written on) refuses the flag, and this says so.
"""

from __future__ import annotations

import select
import socket
import struct
import subprocess

from agent.droplog.nflog import ConntrackUnavailable, NflogReader

SETUP = """
ip link set lo up
ip link add d0 type veth peer name d1
ip addr add 198.18.250.3/24 dev d0
ip link set d0 up; ip link set d1 up
iptables-legacy -t nat -A OUTPUT -d 198.18.250.1 -p udp --dport 53 \
    -j DNAT --to-destination 198.18.250.2:5353
iptables-legacy -A OUTPUT -d 198.18.250.2 -j NFLOG --nflog-group 77 \
    --nflog-prefix 'picket drop egress'
"""


def reader() -> NflogReader:
    try:
        return NflogReader(77, conntrack=True)
    except ConntrackUnavailable as exc:
        print(f"# {exc}")
        return NflogReader(77)


def nflog_message(nflog: NflogReader) -> bytes:
    """The first datagram the kernel sends (one packet: one message)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("198.18.250.3", 5000))
        client.sendto(b"q", ("198.18.250.1", 53))
    select.select([nflog.fileno()], [], [], 5.0)
    with socket.socket(fileno=socket.dup(nflog.fileno())) as sock:
        data = sock.recv(65536)
    return data[: struct.unpack_from("=I", data)[0]]


def ctnetlink_entries() -> list[bytes]:
    """IPCTNL_MSG_CT_GET dump, AF_INET: every entry's message."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12) as ct:
        ct.bind((0, 0))
        body = struct.pack("!BBH", socket.AF_INET, 0, 0)
        ct.send(struct.pack("=IHHII", 16 + len(body), (1 << 8) | 1, 0x301, 1, 0) + body)
        found = []
        while True:
            data, offset = ct.recv(65536), 0
            while offset < len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == 3:  # NLMSG_DONE
                    return found
                found.append(data[offset : offset + length])
                offset += (length + 3) & ~3


def main() -> None:
    subprocess.run(SETUP, shell=True, check=True)
    with reader() as nflog:
        print("NFLOG", nflog_message(nflog).hex())
    for entry in ctnetlink_entries():
        print("CTNETLINK", entry.hex())


if __name__ == "__main__":
    main()
