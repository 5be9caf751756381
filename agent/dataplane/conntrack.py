"""Established connections that a change forbids: remove their conntrack entries, so
they stop within the programming latency instead of living on as ESTABLISHED.

Both backends use the kernel's connection tracking, and each entry is judged as a new
connection between its real ends: the client is the original direction's source (from
before any masquerade), the server is the reply direction's source (after kube-proxy's
DNAT), the port is the server's. A connection through a ClusterIP or NodePort is so
judged as the same connection to the backend pod, as the datapath judged it when it
began; one this node DNATed to a pod of another node (a transit endpoint) on that pod's
ingress, and one another node DNATed and judged (the transit mark's connection-mark
bit) as judged there. Only entries now denied are removed: a connection that stays
allowed is never disturbed. Entries of addresses whose pod went (deleted, or its address
now another pod's) go too, whatever policy says: a new pod at a reused address must
inherit nothing, so that a replayed old 5-tuple is a new connection, judged as one.

ctnetlink answers per address family (the nfgenmsg's family): IPv4's entries through an
AF_INET socket, IPv6's through an AF_INET6 one, each dump and delete naming its family,
so a dual-stack pod's connections of both families are judged and removed alike."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from pyroute2 import Conntrack
from pyroute2.conntrack import NFCTAttrTuple

from agent.compiler.evaluate import endpoints_by_ip, node_admits, transit_by_ip
from agent.compiler.ir import NodeIR
from agent.dataplane.transit_mark import trusted
from agent.model.objects import IPAddress

log = logging.getLogger("picket.conntrack")
PROTOCOLS = {6: "TCP", 17: "UDP", 132: "SCTP"}
ICMP_PROTOCOLS = (1, 58)  # ICMP, ICMPv6: their entries are keyed by id, type and code
AF = {4: socket.AF_INET, 6: socket.AF_INET6}
COUNT = Path("/proc/sys/net/netfilter/nf_conntrack_count")  # of the reader's namespace
IPV6 = Path("/proc/net/if_inet6")  # of the reader's namespace; absent: no IPv6 at all


def kernel_families() -> tuple[int, ...]:
    """The address families this namespace's kernel carries: IPv6 unless it has none
    (booted with ipv6.disable=1), when no IPv6 packet or connection can exist."""
    return (4, 6) if IPV6.exists() else (4,)


def entry_count() -> int | None:
    """Entries in this namespace's conntrack table; None without conntrack."""
    try:
        return int(COUNT.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class RealEnds:
    """A conntrack entry's connection as policy sees it."""

    client: IPAddress
    server: IPAddress
    protocol: str
    port: int | None
    dnat: bool = False  # the client sent it elsewhere (a ClusterIP, a NodePort)


def real_ends(orig: NFCTAttrTuple, reply: NFCTAttrTuple) -> RealEnds | None:
    """The client (original source) and the server (reply source) of an entry."""
    try:
        client, server = ip_address(orig.saddr), ip_address(reply.saddr)
        sent_to = ip_address(orig.daddr)
    except (TypeError, ValueError):
        return None
    protocol = PROTOCOLS.get(orig.proto, str(orig.proto))
    port = reply.sport if orig.proto in PROTOCOLS else None
    dnat = sent_to != server or (port is not None and orig.dport != port)
    return RealEnds(client, server, protocol, port, dnat)


def remove_denied(
    ir: NodeIR,
    node_addresses: frozenset[IPAddress],
    gone: frozenset[IPAddress] = frozenset(),
    touching: frozenset[IPAddress] | None = None,
) -> int:
    """Delete the entries of connections the IR no longer admits, and those with an end
    in `gone` (addresses whose pod went); returns how many. With `touching`, only the
    entries with an end in it or in `gone` are judged, asked of the kernel by address
    (the change's own addresses, agent/loop/narrowing.py); without it, the whole table.
    A node's table holds every connection of its host too (each scrape of the agent
    leaves one in TIME_WAIT for two minutes), and reading it whole in Python takes
    about a quarter of a millisecond per entry."""
    removed = 0
    for family in kernel_families():
        af = AF[family]
        wanted = None if touching is None else touching | gone
        if wanted is not None and not any(a.version == family for a in wanted):
            continue  # nothing of this family to ask about
        with Conntrack(nfgen_family=af) as ct:
            removed += _judge(ct, ir, node_addresses, gone, _entries(ct, af, wanted))
    return removed


def _entries(ct: Conntrack, af: int, wanted: frozenset[IPAddress] | None) -> list:
    """The whole table of `ct`'s family (wanted None), or the entries of those addresses."""
    if wanted is None:
        return list(ct.dump_entries())
    return _entries_of(ct, af, wanted)


def _judge(
    ct: Conntrack,
    ir: NodeIR,
    node_addresses: frozenset[IPAddress],
    gone: frozenset[IPAddress],
    entries: Iterable,
) -> int:
    """Deletes the entries the IR denies or that touch `gone`; returns how many."""
    local, transit = endpoints_by_ip(ir), transit_by_ip(ir)
    removed = 0
    for entry in entries:
        ends = real_ends(entry.tuple_orig, entry.tuple_reply)
        if ends is not None and gone and _touches(entry.tuple_orig, ends, gone):
            removed += _delete(ct, entry.tuple_orig)
            continue
        if ends is None or not (
            ends.client in local or ends.server in local or (ends.dnat and ends.server in transit)
        ):
            continue  # not a connection of this node's pods, nor one it DNATed
        if node_admits(
            ir,
            ends.client,
            ends.server,
            ends.protocol,
            ends.port,
            node_addresses,
            local,
            dnat=ends.dnat,
            transit=transit,
            judged_upstream=trusted(entry.mark or 0),
        ):
            continue
        removed += _delete(ct, entry.tuple_orig)
    return removed


def dump_filters(af: int, addresses: Iterable[IPAddress]) -> Iterator[dict[str, NFCTAttrTuple]]:
    """The CTA_FILTER dumps that find every entry with one of `addresses` (those of the
    socket's family `af`) as the client (original source), the server (reply source,
    after any DNAT) or the address the client sent to."""
    version = 4 if af == socket.AF_INET else 6
    for address in sorted(a for a in addresses if a.version == version):
        yield {"tuple_orig": NFCTAttrTuple(family=af, saddr=str(address))}
        yield {"tuple_orig": NFCTAttrTuple(family=af, daddr=str(address))}
        yield {"tuple_reply": NFCTAttrTuple(family=af, saddr=str(address))}


def touches(orig: NFCTAttrTuple, reply: NFCTAttrTuple, addresses: frozenset[IPAddress]) -> bool:
    """Whether the entry has an address of `addresses` where `dump_filters` looks: the
    client, the address it sent to, or the server."""
    try:
        ends = (ip_address(orig.saddr), ip_address(orig.daddr), ip_address(reply.saddr))
    except (TypeError, ValueError):
        return False
    return any(end in addresses for end in ends)


def _entries_of(ct: Conntrack, af: int, addresses: frozenset[IPAddress]) -> list:
    """The entries with an end in `addresses`, each once. IPv4: the kernel filters each
    dump (CTA_FILTER, Linux 5.8 and later), so the cost is per address, not per entry
    of the table. IPv6: Linux inverts CTA_FILTER's IPv6 address match (its
    ctnetlink_filter_match_tuple drops the entries whose address equals the filter's and
    returns the others; seen on 6.18), so the family's table is read whole and filtered
    here: correct on a kernel that fixes it too, at the cost of reading the IPv6 entries
    (a node's own connections, the scrapes, are IPv4 in the lab and most clusters)."""
    if af == socket.AF_INET6:
        return [e for e in ct.dump_entries() if touches(e.tuple_orig, e.tuple_reply, addresses)]
    found: dict[tuple, object] = {}
    for where in dump_filters(af, addresses):
        for entry in ct.dump_entries(**where):
            o = entry.tuple_orig
            key = (o.proto, o.saddr, o.daddr, o.sport, o.dport, o.icmp_id, o.icmp_type)
            found.setdefault(key, entry)
    return list(found.values())


def _touches(orig: NFCTAttrTuple, ends: RealEnds, gone: frozenset[IPAddress]) -> bool:
    """Either real end, or the address the client sent it to, is in `gone`."""
    if ends.client in gone or ends.server in gone:
        return True
    try:
        return ip_address(orig.daddr) in gone
    except (TypeError, ValueError):
        return False


def delete_tuple(orig: NFCTAttrTuple) -> NFCTAttrTuple:
    """The tuple that names the entry whose original tuple is `orig` to the kernel: of
    its family, with ports, or, for ICMP and ICMPv6, the id, type and code the kernel
    keys such an entry by (without them it refuses the delete)."""
    icmp = orig.proto in ICMP_PROTOCOLS
    return NFCTAttrTuple(
        family=orig.family,
        saddr=orig.saddr,
        daddr=orig.daddr,
        proto=orig.proto,
        sport=None if icmp else orig.sport,
        dport=None if icmp else orig.dport,
        icmp_id=orig.icmp_id if icmp else None,
        icmp_type=orig.icmp_type if icmp else None,
        icmp_code=getattr(orig, "icmp_code", None) if icmp else None,
    )


def _delete(ct: Conntrack, orig: NFCTAttrTuple) -> int:
    """1 when the entry was deleted."""
    try:
        ct.entry("del", tuple_orig=delete_tuple(orig))
        return 1
    except Exception as exc:  # gone meanwhile, or a race with the kernel
        log.debug("conntrack delete %s: %s", orig, exc)
        return 0
