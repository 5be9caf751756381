"""Established connections that a change forbids: remove their conntrack entries, so
they stop within the programming latency instead of living on as ESTABLISHED.

Each entry's original direction is the connection's initiator; it is judged as a new
connection against the node's current IR. Only entries now denied are removed, so a
connection that stays allowed is never disturbed."""

from __future__ import annotations

import logging
from ipaddress import ip_address

from pyroute2 import Conntrack
from pyroute2.conntrack import NFCTAttrTuple

from agent.compiler.evaluate import endpoints_by_ip, node_admits
from agent.compiler.ir import NodeIR
from agent.model.objects import IPAddress

log = logging.getLogger("picket.conntrack")
PROTOCOLS = {6: "TCP", 17: "UDP", 132: "SCTP"}


def remove_denied(ir: NodeIR, node_addresses: frozenset[IPAddress]) -> int:
    """Delete the entries of connections the IR no longer admits; returns how many."""
    local = endpoints_by_ip(ir)
    removed = 0
    with Conntrack() as ct:
        for entry in list(ct.dump_entries()):
            orig = entry.tuple_orig
            try:
                src, dst = ip_address(orig.saddr), ip_address(orig.daddr)
            except (TypeError, ValueError):
                continue
            if src not in local and dst not in local:
                continue  # not a connection of this node's pods
            protocol = PROTOCOLS.get(orig.proto, str(orig.proto))
            port = orig.dport if orig.proto in PROTOCOLS else None
            if node_admits(ir, src, dst, protocol, port, node_addresses, local):
                continue
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
                removed += 1
            except Exception as exc:  # gone meanwhile, or a race with the kernel
                log.debug("conntrack delete %s: %s", orig, exc)
    return removed
