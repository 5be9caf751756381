"""Stale UDP conntrack entries, removed as kube-proxy removes them: UDP has no
connection to end, so an entry made before the Service had endpoints (no DNAT) or
pointing at an endpoint that is gone would keep a client's flow (a resolver reusing
its source port) going nowhere until it times out. TCP and SCTP end on their own.

Judged from the state, not a diff: an entry to a Service's cluster IP and port, or to
a node port on one of this node's addresses, is stale when its reply does not come
from one of the endpoints programmed now."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyroute2 import Conntrack, IPRoute
from pyroute2.conntrack import NFCTAttrTuple

log = logging.getLogger("picket.lab.kubeproxy")


@dataclass(frozen=True)
class UdpFrontends:
    """Where UDP clients send to, and the endpoints (ip:port) that may answer."""

    by_address: dict[tuple[str, int], frozenset[str]]
    by_node_port: dict[int, frozenset[str]]

    @classmethod
    def of(cls, programmed: Mapping[str, Any]) -> UdpFrontends:
        by_address, by_node_port = {}, {}
        for service in programmed.values():
            for key, port in service["ports"].items():
                number, _, protocol = key.partition("/")
                if protocol != "UDP":
                    continue
                endpoints = frozenset(port["endpoints"])
                for cluster_ip in service.get("clusterIPs") or [service["clusterIP"]]:
                    by_address[(cluster_ip, int(number))] = endpoints
                if port["nodePort"] is not None:
                    by_node_port[port["nodePort"]] = endpoints
        return cls(by_address, by_node_port)

    def is_stale(
        self, dst: str, dport: int, reply_src: str, reply_sport: int, local: frozenset[str]
    ) -> bool:
        allowed = self.by_address.get((dst, dport))
        if allowed is None and dst in local:
            allowed = self.by_node_port.get(dport)
        source = f"[{reply_src}]" if ":" in reply_src else reply_src
        return allowed is not None and f"{source}:{reply_sport}" not in allowed


def _local_addresses() -> frozenset[str]:
    with IPRoute() as ipr:
        return frozenset(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr())


def remove_stale_udp(programmed: Mapping[str, Any]) -> int:
    """Delete the stale UDP entries of this namespace; returns how many went."""
    frontends = UdpFrontends.of(programmed)
    if not frontends.by_address:
        return 0
    local, removed = _local_addresses(), 0
    for family in (socket.AF_INET, socket.AF_INET6):
        removed += _remove_stale(frontends, local, family)
    return removed


def _remove_stale(frontends: UdpFrontends, local: frozenset[str], family: int) -> int:
    # A conntrack socket dumps the entries of its own family (pyroute2's nfgen_family).
    removed = 0
    with Conntrack(nfgen_family=family) as ct:
        for entry in list(ct.dump_entries()):
            orig, reply = entry.tuple_orig, entry.tuple_reply
            if orig.proto != socket.IPPROTO_UDP:
                continue
            if not frontends.is_stale(orig.daddr, orig.dport, reply.saddr, reply.sport, local):
                continue
            key = NFCTAttrTuple(
                family=family,
                saddr=orig.saddr,
                daddr=orig.daddr,
                proto=orig.proto,
                sport=orig.sport,
                dport=orig.dport,
            )
            try:
                ct.entry("del", tuple_orig=key)
                removed += 1
            except Exception as exc:  # gone meanwhile
                log.debug("conntrack delete %s: %s", orig, exc)
    return removed
