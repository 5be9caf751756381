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
inherit nothing, so that a replayed old 5-tuple is a new connection, judged as one."""

from __future__ import annotations

import logging
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
COUNT = Path("/proc/sys/net/netfilter/nf_conntrack_count")  # of the reader's namespace


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
    local, transit = endpoints_by_ip(ir), transit_by_ip(ir)
    removed = 0
    with Conntrack() as ct:
        entries = list(ct.dump_entries()) if touching is None else _entries_of(ct, touching | gone)
        for entry in entries:
            ends = real_ends(entry.tuple_orig, entry.tuple_reply)
            if ends is not None and gone and _touches(entry.tuple_orig, ends, gone):
                removed += _delete(ct, entry.tuple_orig)
                continue
            if ends is None or not (
                ends.client in local
                or ends.server in local
                or (ends.dnat and ends.server in transit)
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


def _entries_of(ct: Conntrack, addresses: frozenset[IPAddress]) -> list:
    """The entries with `addresses` as the client (original source), the server (reply
    source, after any DNAT) or the address the client sent to, each once: the kernel
    filters each dump (CTA_FILTER, Linux 5.8 and later), so the cost is per address, not
    per entry of the table."""
    found: dict[tuple, object] = {}
    for address in sorted(a for a in addresses if a.version == 4):  # an IPv4 socket
        for where in (
            {"tuple_orig": NFCTAttrTuple(saddr=str(address))},
            {"tuple_orig": NFCTAttrTuple(daddr=str(address))},
            {"tuple_reply": NFCTAttrTuple(saddr=str(address))},
        ):
            for entry in ct.dump_entries(**where):
                o = entry.tuple_orig
                found.setdefault((o.proto, o.saddr, o.daddr, o.sport, o.dport), entry)
    return list(found.values())


def _touches(orig: NFCTAttrTuple, ends: RealEnds, gone: frozenset[IPAddress]) -> bool:
    """Either real end, or the address the client sent it to, is in `gone`."""
    if ends.client in gone or ends.server in gone:
        return True
    try:
        return ip_address(orig.daddr) in gone
    except (TypeError, ValueError):
        return False


def _delete(ct: Conntrack, orig: NFCTAttrTuple) -> int:
    """1 when the entry was deleted."""
    try:
        ct.entry(
            "del",
            tuple_orig=NFCTAttrTuple(
                saddr=orig.saddr,
                daddr=orig.daddr,
                proto=orig.proto,
                sport=orig.sport,
                dport=orig.dport,
            ),
        )
        return 1
    except Exception as exc:  # gone meanwhile, or a race with the kernel
        log.debug("conntrack delete %s: %s", orig, exc)
        return 0
