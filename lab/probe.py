"""Probes: can pod A open a connection to B on port P? Run from A's network namespace
with a socket created there, so thousands of probes share one process and event loop.

Outcomes: `connected` (with the identity the responder sent), `refused` (TCP RST, ICMP
port unreachable for UDP, SCTP ABORT), or `timeout` (what a policy DROP looks like).
"""

from __future__ import annotations

import asyncio
import errno
import secrets
import socket
from dataclasses import dataclass
from ipaddress import ip_address

from lab import sctp
from lab.netns import socket_in

IPPROTO_SCTP = 132
IPV6_FREEBIND = 78  # linux/in6.h; Python 3.11's socket module lacks the constant
RESEND = 0.25  # seconds between datagram retries within the timeout
CONNECTED, REFUSED, TIMEOUT = "connected", "refused", "timeout"
# An answer that says no: RST or ICMP port unreachable, or ICMP host/net unreachable
# (no route, or a policy configured to reject).
REFUSING_ERRNOS = {
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EACCES,
    errno.EPERM,
}


@dataclass(frozen=True)
class ProbeResult:
    outcome: str
    peer: str | None = None

    @property
    def connected(self) -> bool:
        return self.outcome == CONNECTED

    def __str__(self) -> str:
        return f"{self.outcome} {self.peer}" if self.peer else self.outcome


def _identity(data: bytes) -> str:
    return data.split(b"\n", 1)[0].decode(errors="replace").strip() or "?"


async def probe(
    netns: str | None,
    ip: str,
    port: int,
    protocol: str,
    timeout: float = 1.0,
    source_ip: str | None = None,
) -> ProbeResult:
    """One new connection attempt from namespace `netns` (from `source_ip` when given,
    e.g. a node's underlay address or an outside address) to ip:port/protocol."""
    run = {"TCP": _tcp, "UDP": _udp, "SCTP": _sctp}[protocol.upper()]
    try:
        return await asyncio.wait_for(run(netns, ip, port, source_ip), timeout)
    except TimeoutError:
        return ProbeResult(TIMEOUT)


def _socket(
    netns: str | None, kind: int, proto: int, source_ip: str | None, target: str
) -> socket.socket:
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    sock = socket_in(netns, family, kind, proto)
    if source_ip is not None and family == socket.AF_INET6:
        # An outside address is owned by a `local` route, not assigned: IPv6 binds to it
        # only with freebind (IPv4 takes a local route's address as it is).
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
    if source_ip is not None:
        sock.bind((source_ip, 0))
    return sock


async def _tcp(netns: str | None, ip: str, port: int, source_ip: str | None) -> ProbeResult:
    loop = asyncio.get_running_loop()
    sock = _socket(netns, socket.SOCK_STREAM, 0, source_ip, ip)
    try:
        try:
            await loop.sock_connect(sock, (ip, port))
        except OSError as exc:
            if exc.errno in REFUSING_ERRNOS:
                return ProbeResult(REFUSED)
            raise
        data = await loop.sock_recv(sock, 4096)
        return ProbeResult(CONNECTED, _identity(data))
    finally:
        sock.close()


async def _udp(netns: str | None, ip: str, port: int, source_ip: str | None) -> ProbeResult:
    loop = asyncio.get_running_loop()
    sock = _socket(netns, socket.SOCK_DGRAM, 0, source_ip, ip)
    try:
        sock.connect((ip, port))
        while True:
            try:
                sock.send(b"probe")
            except OSError as exc:
                if exc.errno in REFUSING_ERRNOS:
                    return ProbeResult(REFUSED)
                raise
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), RESEND)
                return ProbeResult(CONNECTED, _identity(data))
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno in REFUSING_ERRNOS:
                    return ProbeResult(REFUSED)
                raise
    finally:
        sock.close()


async def _sctp(netns: str | None, ip: str, port: int, source_ip: str | None) -> ProbeResult:
    loop = asyncio.get_running_loop()
    sock = _socket(netns, socket.SOCK_RAW, IPPROTO_SCTP, source_ip, ip)
    tag = secrets.randbits(32) or 1
    src_port = 32768 + secrets.randbelow(28000)
    init = sctp.init_packet(src_port, port, tag, secrets.randbits(32))
    try:
        while True:
            try:
                sock.sendto(init, (ip, 0))
            except OSError as exc:
                if exc.errno in REFUSING_ERRNOS:
                    return ProbeResult(REFUSED)
                raise
            try:
                reply = await asyncio.wait_for(
                    _sctp_reply(loop, sock, ip, port, src_port, tag), RESEND
                )
                return reply
            except TimeoutError:
                continue
    finally:
        sock.close()


async def _sctp_reply(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    ip: str,
    port: int,
    src_port: int,
    tag: int,
) -> ProbeResult:
    """Wait for the INIT-ACK or ABORT that answers our INIT (a raw socket sees every
    SCTP packet of the namespace, so filter on addresses, ports and our tag)."""
    while True:
        if sock.family == socket.AF_INET6:
            # An IPv6 raw socket gets the SCTP packet alone, its source as the address.
            payload, address = await loop.sock_recvfrom(sock, 65535)
            src = address[0]
        else:
            datagram = await loop.sock_recv(sock, 65535)
            try:
                src, _, payload = sctp.split_ipv4(datagram)
            except ValueError:
                continue
        try:
            packet = sctp.decode_packet(payload)
        except ValueError:
            continue
        if (ip_address(src), packet.src_port, packet.dst_port) != (ip_address(ip), port, src_port):
            continue
        if packet.verification_tag != tag:
            continue
        for chunk in packet.chunks:
            if chunk.type == sctp.INIT_ACK:
                cookie = sctp.state_cookie(chunk)
                return ProbeResult(CONNECTED, (cookie or b"?").decode(errors="replace"))
            if chunk.type == sctp.ABORT:
                return ProbeResult(REFUSED)
