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
        bind_address: str = "0.0.0.0",
        sctp_any_port: bool = False,
    ) -> None:
        self.identity = identity.encode()
        self.netns = netns
        self.ports = sorted(set(ports))
        self.bind_address = bind_address
        # The external host answers an SCTP INIT on every port, as it does TCP and UDP.
        self.sctp_any_port = sctp_any_port
        self._servers: list[asyncio.AbstractServer] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._raw: socket.socket | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for port, protocol in self.ports:
            if protocol == "TCP":
                sock = self._bound(socket.SOCK_STREAM, port)
                sock.listen(128)
                self._servers.append(await asyncio.start_server(self._serve_tcp, sock=sock))
            elif protocol == "UDP":
                sock = self._bound(socket.SOCK_DGRAM, port)
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpEcho(self.identity), sock=sock
                )
                self._transports.append(transport)
        if self.sctp_any_port or any(protocol == "SCTP" for _, protocol in self.ports):
            self._raw = socket_in(self.netns, socket.AF_INET, socket.SOCK_RAW, IPPROTO_SCTP)
            loop.add_reader(self._raw.fileno(), self._on_sctp)

    def _bound(self, kind: int, port: int) -> socket.socket:
        sock = socket_in(self.netns, socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.bind_address, port))
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

    def _on_sctp(self) -> None:
        assert self._raw is not None
        try:
            datagram, _ = self._raw.recvfrom(65535)
            src, dst, payload = sctp.split_ipv4(datagram)
            packet = sctp.decode_packet(payload)
        except (OSError, ValueError):
            return
        init = next((c for c in packet.chunks if c.type == sctp.INIT), None)
        if init is None or (self.bind_address != "0.0.0.0" and dst != self.bind_address):
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
            # whole /24, and routing alone would pick its underlay address).
            pktinfo = struct.pack("@i4s4s", 0, socket.inet_aton(dst), bytes(4))
            self._raw.sendmsg([reply], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)], 0, (src, 0))

    async def stop(self) -> None:
        """Close every socket, accepted connections too: they hold the namespace alive."""
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for transport in self._transports:
            transport.close()
        if self._raw is not None:
            asyncio.get_running_loop().remove_reader(self._raw.fileno())
            self._raw.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1)
