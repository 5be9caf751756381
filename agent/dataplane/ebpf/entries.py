"""The map contents as values (pure): address, endpoint, policy and named entries, the
delta between two contents, and the entries of one endpoint's rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from agent.compiler.ir import (
    ALL_PORTS,
    LocalEndpoint,
    NamedPortClause,
    PeerPortClause,
    PortRange,
)
from agent.dataplane.ebpf_layout import (
    DIR_EGRESS,
    DIR_INGRESS,
    EP_AUDIT,
    EP_EGRESS_ISOLATED,
    EP_INGRESS_ISOLATED,
    EP_NAMED_EGRESS,
    IDENTITY_ANY,
    POLICY_EXACT_BITS,
    POLICY_PROTOCOL_BITS,
    PROTOCOL_NUMBERS,
)

AddrKey = tuple[str, int]  # (network address, prefix length), in its own family's notation


class PolicyEntry(NamedTuple):
    """A tuple rather than a dataclass: a full sync plans hundreds of thousands."""

    endpoint: int
    direction: int
    identity: int
    protocol: int | None  # None: any protocol and port
    port: int = 0  # the block's first port
    bits: int = 0  # how many leading port bits are fixed (0: any port)

    @property
    def prefixlen(self) -> int:
        return POLICY_EXACT_BITS if self.protocol is None else POLICY_PROTOCOL_BITS + self.bits


NamedEntry = tuple[int, str, int, int]  # endpoint, address (either family), protocol, port
HomeEntry = tuple[int, str]  # transit endpoint, an address of its own node (either family)


@dataclass
class MapDelta:
    addr_set: dict[AddrKey, tuple[int, int]] = field(default_factory=dict)
    addr_del: set[AddrKey] = field(default_factory=set)
    endpoint_set: dict[str, tuple[int, int]] = field(default_factory=dict)
    endpoint_del: dict[str, int] = field(default_factory=dict)  # ref -> number it had
    policy_add: set[PolicyEntry] = field(default_factory=set)
    policy_del: set[PolicyEntry] = field(default_factory=set)
    named_add: set[NamedEntry] = field(default_factory=set)
    named_del: set[NamedEntry] = field(default_factory=set)
    # Transit endpoints by address, each family's (released numbers go in endpoint_del).
    transit_set: dict[str, tuple[int, int]] = field(default_factory=dict)
    transit_del: set[str] = field(default_factory=set)
    home_add: set[HomeEntry] = field(default_factory=set)
    home_del: set[HomeEntry] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not any(vars(self).values())


@dataclass
class MapState:
    addresses: dict[AddrKey, tuple[int, int]] = field(default_factory=dict)
    endpoints: dict[str, tuple[int, int]] = field(default_factory=dict)
    policy: set[PolicyEntry] = field(default_factory=set)
    named: set[NamedEntry] = field(default_factory=set)
    transit: dict[str, tuple[int, int]] = field(default_factory=dict)  # by address
    homes: set[HomeEntry] = field(default_factory=set)


def state_delta(old: MapState, new: MapState) -> MapDelta:
    """What turns the maps holding `old` into maps holding `new`."""
    return MapDelta(
        addr_set=_changed(old.addresses, new.addresses),
        addr_del=set(old.addresses) - set(new.addresses),
        endpoint_set=_changed(old.endpoints, new.endpoints),
        endpoint_del={r: v[0] for r, v in old.endpoints.items() if r not in new.endpoints},
        policy_add=new.policy - old.policy,
        policy_del=old.policy - new.policy,
        named_add=new.named - old.named,
        named_del=old.named - new.named,
        transit_set=_changed(old.transit, new.transit),
        transit_del=set(old.transit) - set(new.transit),
        home_add=new.homes - old.homes,
        home_del=old.homes - new.homes,
    )


def _changed(old: Mapping, new: Mapping) -> dict:
    return {k: v for k, v in new.items() if old.get(k) != v}


def port_blocks(first: int, last: int) -> list[tuple[int, int]]:
    """[first, last] as aligned blocks (start, fixed bits): at most 30 for 16-bit ports."""
    blocks = []
    while first <= last:
        size = first & -first if first else 1 << 16
        while first + size - 1 > last:
            size >>= 1
        blocks.append((first, 16 - size.bit_length() + 1))
        first += size
    return blocks


def endpoint_flags(endpoint: LocalEndpoint) -> int:
    flags = EP_INGRESS_ISOLATED if endpoint.ingress is not None else 0
    if endpoint.audit:
        flags |= EP_AUDIT
    if endpoint.egress is not None:
        flags |= EP_EGRESS_ISOLATED
        if any(isinstance(c, NamedPortClause) for c in endpoint.egress.clauses):
            flags |= EP_NAMED_EGRESS
    return flags


def endpoint_entries(
    number: int,
    endpoint: LocalEndpoint,
    set_identities: Mapping[str, frozenset[int]],
    members: Mapping[str, frozenset],
) -> tuple[set[PolicyEntry], set[NamedEntry]]:
    """The policy and named entries of endpoint `number`'s isolated directions, given the
    identities each peer set selects and the members of named-port sets."""
    policy: set[PolicyEntry] = set()
    named: set[NamedEntry] = set()
    for direction, rules in ((DIR_INGRESS, endpoint.ingress), (DIR_EGRESS, endpoint.egress)):
        for clause in rules.clauses if rules else ():
            if isinstance(clause, NamedPortClause):
                named |= _named_entries(number, members.get(clause.members, frozenset()))
            else:
                policy |= _clause_entries(number, direction, clause, set_identities)
    return policy, named


def _named_entries(number: int, members: frozenset) -> set[NamedEntry]:
    return {(number, str(ip), PROTOCOL_NUMBERS[protocol], port) for ip, protocol, port in members}


def _clause_entries(
    number: int,
    direction: int,
    clause: PeerPortClause,
    set_identities: Mapping[str, frozenset[int]],
) -> set[PolicyEntry]:
    identities = (
        {IDENTITY_ANY}
        if clause.peers is None
        else set().union(*(set_identities.get(sid, frozenset()) for sid in clause.peers))
    )
    return {
        PolicyEntry(number, direction, identity, *block)
        for identity in identities
        for block in _port_entries(clause.ports)
    }


def _port_entries(ports: tuple[PortRange, ...] | None) -> list[tuple[int | None, int, int]]:
    """(protocol, first port, fixed bits) per block; one any-protocol entry for None."""
    if ports is None:
        return [(None, 0, 0)]
    out: list[tuple[int | None, int, int]] = []
    for r in ports:
        protocol = PROTOCOL_NUMBERS[r.protocol]
        if (r.first, r.last) == ALL_PORTS:
            out.append((protocol, 0, 0))
        else:
            out += [(protocol, start, bits) for start, bits in port_blocks(r.first, r.last)]
    return out
