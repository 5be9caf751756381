"""DNS queries from inside a pod's network namespace, with dnspython over a socket made
there (lab/netns.py), so the query leaves the pod as its own resolver's would: to a
server of either family, for the addresses of either family (an A or an AAAA query)."""

from __future__ import annotations

import socket
from ipaddress import ip_address

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from lab.dns.search import ANSWER, NODATA, TIMEOUT, UNREACHABLE, Reply, Resolution, walk
from lab.netns import socket_in
from lab.probe import REFUSING_ERRNOS

DNS_PORT = 53
QUERY_TYPES = {4: dns.rdatatype.A, 6: dns.rdatatype.AAAA}  # by the family asked for


def reply_of(response: dns.message.Message, rdtype: dns.rdatatype.RdataType) -> Reply:
    """The outcome of a response: its code, or the addresses of the type asked (`rdtype`)."""
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        return Reply(dns.rcode.to_text(rcode))
    addresses = tuple(
        item.address for rrset in response.answer if rrset.rdtype == rdtype for item in rrset
    )
    return Reply(ANSWER, addresses) if addresses else Reply(NODATA)


def _socket_family(server: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ip_address(server).version == 6 else socket.AF_INET


def _udp(netns: str | None, server: str, query: dns.message.Message, timeout: float):
    sock = socket_in(netns, _socket_family(server), socket.SOCK_DGRAM)
    try:
        # Connected, so an ICMP port unreachable comes back as ECONNREFUSED.
        sock.connect((server, DNS_PORT))
        return dns.query.udp(query, server, timeout=timeout, sock=sock)
    finally:
        sock.close()


def _tcp(netns: str | None, server: str, query: dns.message.Message, timeout: float):
    sock = socket_in(netns, _socket_family(server), socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect((server, DNS_PORT))
        except TimeoutError as exc:
            raise dns.exception.Timeout from exc
        sock.setblocking(False)  # what dnspython asks of a socket it is handed
        return dns.query.tcp(query, server, timeout=timeout, sock=sock)
    finally:
        sock.close()


def ask(
    netns: str | None, server: str, name: str, tcp: bool, timeout: float, family: int = 4
) -> Reply:
    """One query for the addresses of `family` `name` has (A for 4, AAAA for 6) to
    `server`, an address of either family; a truncated UDP answer is asked again over
    TCP. Raises ValueError if `server` is not an address."""
    rdtype = QUERY_TYPES[family]
    query = dns.message.make_query(name, rdtype)
    try:
        response = (_tcp if tcp else _udp)(netns, server, query, timeout)
        if not tcp and response.flags & dns.flags.TC:
            response = _tcp(netns, server, query, timeout)
    except dns.exception.Timeout:
        return Reply(TIMEOUT)
    except OSError as exc:
        if exc.errno in REFUSING_ERRNOS:
            return Reply(UNREACHABLE)
        raise
    return reply_of(response, rdtype)


def resolve(
    netns: str | None,
    server: str,
    names: list[str],
    tcp: bool = False,
    timeout: float = 2.0,
    family: int = 4,
) -> Resolution:
    """Walk the candidate names (lab/dns/search.py) against `server`, asking for the
    addresses of `family`."""
    return walk(names, lambda name: ask(netns, server, name, tcp, timeout, family))
