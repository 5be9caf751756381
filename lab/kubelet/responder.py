"""A pod's "containers": servers on every declared containerPort, inside the pod's
network namespace, that answer with the pod's identity (`namespace/name`).

- TCP: on connect, send the identity line, then echo what the client sends until it
  closes (long-lived connections are what the conntrack tests need).
- UDP: answer each datagram with the identity line followed by the datagram.
- SCTP: the kernel has no SCTP sockets, so a raw socket answers an INIT to a served
  port with an INIT-ACK whose State Cookie is the identity, and to any other port with
  an ABORT (what a real stack does for a port nobody listens on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import struct
from collections.abc import Iterable

from lab import sctp
from lab.netns import socket_in

log = logging.getLogger("picket.lab.responder")
IPPROTO_SCTP = 132
IP_PKTINFO = 8  # linux/in.h; Python 3.11's socket module lacks the constant
IPV6_FREEBIND = 78  # linux/in6.h; missing from Python 3.11 too
ANY_ADDRESS = {4: "0.0.0.0", 6: "::"}
ANY_ADDRESSES = ("0.0.0.0", "::")


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, identity: bytes) -> None:
        self.identity = identity
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  (selector transports)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(self.identity + b"\n" + data, addr)


class Responder:
    def __init__(
        self,
        identity: str,
        netns: str | None,
        ports: Iterable[tuple[int, str]],
        bind_addresses: tuple[str, ...] = ("0.0.0.0",),
        sctp_any_port: bool = False,
    ) -> None:
        self.identity = identity.encode()
        self.netns = netns
        self.ports = sorted(set(ports))
        # One socket per address and port: a wildcard per family the pod has, or the
        # node's own addresses for a hostNetwork pod.
        self.bind_addresses = bind_addresses
        # The external host answers an SCTP INIT on every port, as it does TCP and UDP.
        self.sctp_any_port = sctp_any_port
        self._servers: list[asyncio.AbstractServer] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._raw: list[socket.socket] = []
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for address in self.bind_addresses:
            for port, protocol in self.ports:
                if protocol == "TCP":
                    sock = self._bound(socket.SOCK_STREAM, address, port)
                    sock.listen(128)
                    server = await asyncio.start_server(self._serve_tcp, sock=sock)
                    self._servers.append(server)
                elif protocol == "UDP":
                    sock = self._bound(socket.SOCK_DGRAM, address, port)
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _UdpEcho(self.identity), sock=sock
                    )
                    self._transports.append(transport)
        if self.sctp_any_port or any(protocol == "SCTP" for _, protocol in self.ports):
            for family in sorted({_family(a) for a in self.bind_addresses}):
                raw = socket_in(self.netns, family, socket.SOCK_RAW, IPPROTO_SCTP)
                if family == socket.AF_INET6:
                    # An IPv6 raw socket gets no IP header: ask for the destination.
                    raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                    # And to answer from an address a `local` route owns (the outside
                    # host's prefix), which IPv6 checks against the assigned ones.
                    raw.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
                self._raw.append(raw)
                loop.add_reader(raw.fileno(), self._on_sctp, raw)

    def _bound(self, kind: int, address: str, port: int) -> socket.socket:
        family = _family(address)
        sock = socket_in(self.netns, family, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # IPv4 has its own
        sock.bind((address, port))
        return sock

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            writer.write(self.identity + b"\n")
            await writer.drain()
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def _on_sctp(self, raw: socket.socket) -> None:
        try:
            src, dst, payload = _receive_sctp(raw)
            packet = sctp.decode_packet(payload)
        except (OSError, ValueError):
            return
        init = next((c for c in packet.chunks if c.type == sctp.INIT), None)
        if init is None or not any(a in ANY_ADDRESSES or a == dst for a in self.bind_addresses):
            return
        peer_tag = sctp.parse_init(init).initiate_tag
        if self.sctp_any_port or (packet.dst_port, "SCTP") in self.ports:
            reply = sctp.init_ack_packet(
                packet.dst_port,
                packet.src_port,
                peer_tag,
                secrets.randbits(32) or 1,
                secrets.randbits(32),
                self.identity,
            )
        else:
            reply = sctp.abort_packet(packet.dst_port, packet.src_port, peer_tag)
        with contextlib.suppress(OSError):
            # Answer from the address the INIT was sent to (the external host owns a
            # whole prefix, and routing alone would pick its underlay address).
            if raw.family == socket.AF_INET6:
                pktinfo = struct.pack("@16sI", socket.inet_pton(socket.AF_INET6, dst), 0)
                ancillary = (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, pktinfo)
                # The checksum is SCTP's CRC32c, in the packet: nothing for the kernel.
                raw.sendmsg([reply], [ancillary], 0, (src, 0))
            else:
                pktinfo = struct.pack("@i4s4s", 0, socket.inet_aton(dst), bytes(4))
                raw.sendmsg([reply], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)], 0, (src, 0))

    async def stop(self) -> None:
        """Close every socket, accepted connections too: they hold the namespace alive."""
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for transport in self._transports:
            transport.close()
        for raw in self._raw:
            asyncio.get_running_loop().remove_reader(raw.fileno())
            raw.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1)


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _receive_sctp(raw: socket.socket) -> tuple[str, str, bytes]:
    """(source, destination, SCTP packet) of one datagram on a raw SCTP socket: an IPv4
    one starts with the IP header; an IPv6 one is the payload alone, its destination in
    the IPV6_PKTINFO ancillary data."""
    if raw.family == socket.AF_INET:
        datagram, _ = raw.recvfrom(65535)
        return sctp.split_ipv4(datagram)
    payload, ancillary, _, address = raw.recvmsg(65535, socket.CMSG_SPACE(20))
    dst = ""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            dst = socket.inet_ntop(socket.AF_INET6, data[:16])
    return address[0], dst, payload
