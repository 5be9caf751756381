"""NodeIR -> the contents of the eBPF maps (pure; the kernel I/O is in ebpf.py).

- Identities: pods with equal (namespace labels, pod labels) share one; ipBlock prefixes
  (cidrs and excepts) get their own. Numbers are allocated once and kept (persisted by
  the backend), so a restarted agent computes the very same maps.
- Address map (LPM): a pod /32 -> (its identity, the identity of the longest ipBlock
  prefix holding it); a prefix -> (WORLD, its identity); this node's addresses -> HOST.
- Policy map (LPM over endpoint, direction, identity, protocol, port): per isolated
  direction of a local endpoint, one entry per (identity a clause's peers select, port
  block of the clause). A selector selects the identities whose labels it matches; an
  ipBlock selects the prefix identities inside it and not inside one of its excepts (the
  longest prefix holding an address then decides exactly). Port ranges are aligned
  blocks, never one entry per port.
- Named map: egress named ports, exact (endpoint, destination address, protocol, port).

The planner is incremental: a relabel to a label set that already has an identity is
one address-map update; a new identity or policy adds policy-map entries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_network
from typing import Any

from agent.compiler.ir import (
    ALL_PORTS,
    CIDRSet,
    DirectionRules,
    IdentityKey,
    NamedPortClause,
    NodeIR,
    PeerPortClause,
    PortRange,
    SelectorSet,
    selects_identity,
)
from agent.dataplane.ebpf_layout import (
    DIR_EGRESS,
    DIR_INGRESS,
    EP_AUDIT,
    EP_EGRESS_ISOLATED,
    EP_INGRESS_ISOLATED,
    EP_NAMED_EGRESS,
    IDENTITY_ANY,
    IDENTITY_CIDR_FIRST,
    IDENTITY_HOST,
    IDENTITY_POD_FIRST,
    IDENTITY_WORLD,
    PROTOCOL_NUMBERS,
)
from agent.model.objects import IPAddress

AddrKey = tuple[str, int]  # (network address, prefix length)


@dataclass(frozen=True, order=True)
class PolicyEntry:
    endpoint: int
    direction: int
    identity: int
    protocol: int | None  # None: any protocol and port
    port: int = 0  # the block's first port
    bits: int = 0  # how many leading port bits are fixed (0: any port)

    @property
    def prefixlen(self) -> int:
        return 96 if self.protocol is None else 104 + self.bits


NamedEntry = tuple[int, str, int, int]  # endpoint, IPv4 address, protocol, port


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

    @property
    def empty(self) -> bool:
        return not any(vars(self).values())


@dataclass
class MapState:
    addresses: dict[AddrKey, tuple[int, int]] = field(default_factory=dict)
    endpoints: dict[str, tuple[int, int]] = field(default_factory=dict)
    policy: set[PolicyEntry] = field(default_factory=set)
    named: set[NamedEntry] = field(default_factory=set)


class _Ids:
    """Stable small numbers for things, reusing freed ones."""

    def __init__(self, first: int, known: dict[Any, int] | None = None) -> None:
        self.first = first
        self.by_thing: dict[Any, int] = dict(known or {})
        self._free: list[int] = []
        self._next = max(self.by_thing.values(), default=first - 1) + 1

    def get(self, thing: Any) -> int:
        if thing not in self.by_thing:
            if self._free:
                number = self._free.pop()
            else:
                number, self._next = self._next, self._next + 1
            self.by_thing[thing] = number
        return self.by_thing[thing]

    def release(self, thing: Any) -> None:
        if thing in self.by_thing:
            self._free.append(self.by_thing.pop(thing))


class EbpfPlanner:
    def __init__(self, allocations: dict[str, Any] | None = None) -> None:
        saved = allocations or {}
        self.identities = _Ids(
            IDENTITY_POD_FIRST, {_key_from_json(k): v for k, v in saved.get("identities", [])}
        )
        self.prefixes = _Ids(
            IDENTITY_CIDR_FIRST, {ip_network(k): v for k, v in saved.get("prefixes", [])}
        )
        self.endpoint_ids = _Ids(1, dict(saved.get("endpoints", [])))
        self.state = MapState()
        self._addresses: dict[IPAddress, IdentityKey] = {}
        self._key_users: Counter[IdentityKey] = Counter()
        self._set_ids: dict[str, frozenset[int]] = {}
        self._set_defs: dict[str, Any] = {}
        self._by_endpoint: dict[str, tuple[Any, set[PolicyEntry], set[NamedEntry]]] = {}
        self._policy_users: Counter[PolicyEntry] = Counter()
        self._named_users: Counter[NamedEntry] = Counter()
        self._host: frozenset[str] = frozenset()
        self._prefix_list: list[IPv4Network] = []

    def allocations(self) -> dict[str, Any]:
        """What a restarted agent needs to number everything the same way."""
        return {
            "identities": [[_key_to_json(k), v] for k, v in self.identities.by_thing.items()],
            "prefixes": [[str(k), v] for k, v in self.prefixes.by_thing.items()],
            "endpoints": [[k, v] for k, v in self.endpoint_ids.by_thing.items()],
        }

    def plan(self, ir: NodeIR, host_addresses: Iterable[IPAddress]) -> MapDelta:
        delta = MapDelta()
        new_keys, gone_keys, changed_ips = self._identities(ir)
        prefixes_changed = self._prefixes(ir, delta)
        changed_sets = self._sets(ir, new_keys, gone_keys, prefixes_changed)
        self._endpoints(ir, changed_sets, delta)
        self._address_entries(ir, host_addresses, prefixes_changed, changed_ips, delta)
        for key in gone_keys:
            self.identities.release(key)
        return delta

    # --- identities -------------------------------------------------------------------

    def _identities(self, ir: NodeIR) -> tuple[set[IdentityKey], set[IdentityKey], set[IPAddress]]:
        new_keys: set[IdentityKey] = set()
        gone_keys: set[IdentityKey] = set()
        changed_ips: set[IPAddress] = set()
        old = self._addresses
        if old is ir.addresses:
            return new_keys, gone_keys, changed_ips
        for ip in set(old) | set(ir.addresses):
            before, after = old.get(ip), ir.addresses.get(ip)
            if before == after:
                continue
            changed_ips.add(ip)
            if before is not None:
                self._key_users[before] -= 1
                if self._key_users[before] <= 0:
                    del self._key_users[before]
                    gone_keys.add(before)
            if after is not None:
                if self._key_users[after] == 0:
                    new_keys.add(after)
                self._key_users[after] += 1
        self._addresses = ir.addresses
        # A key that went and came back in one change is neither.
        both = new_keys & gone_keys
        return new_keys - both, gone_keys - both, changed_ips

    def _prefixes(self, ir: NodeIR, delta: MapDelta) -> bool:
        wanted = sorted(
            {
                n
                for s in ir.sets.values()
                if isinstance(s, CIDRSet)
                for n in (s.cidr, *s.excepts)
                if isinstance(n, IPv4Network)
            },
            key=lambda n: (n.prefixlen, int(n.network_address)),
        )
        if wanted == self._prefix_list:
            return False
        for old in set(self._prefix_list) - set(wanted):
            delta.addr_del.add((str(old.network_address), old.prefixlen))
            self.state.addresses.pop((str(old.network_address), old.prefixlen), None)
            self.prefixes.release(old)
        self._prefix_list = wanted
        return True

    # --- peer sets -> identities ------------------------------------------------------

    def _selected(self, peer_set: Any) -> frozenset[int]:
        if isinstance(peer_set, SelectorSet):
            return frozenset(
                self.identities.get(k) for k in self._key_users if selects_identity(peer_set, k)
            )
        assert isinstance(peer_set, CIDRSet)
        return frozenset(
            self.prefixes.get(p)
            for p in self._prefix_list
            if p.subnet_of(peer_set.cidr) and not any(p.subnet_of(e) for e in peer_set.excepts)
        )

    def _sets(
        self,
        ir: NodeIR,
        new_keys: set[IdentityKey],
        gone_keys: set[IdentityKey],
        prefixes_changed: bool,
    ) -> set[str]:
        changed: set[str] = set()
        for sid in set(self._set_ids) - set(ir.sets):
            del self._set_ids[sid]
            self._set_defs.pop(sid, None)
        gone_ids = {self.identities.by_thing[k] for k in gone_keys}
        for sid, peer_set in ir.sets.items():
            if not isinstance(peer_set, SelectorSet | CIDRSet):
                continue
            current = self._set_ids.get(sid)
            if current is None or (prefixes_changed and isinstance(peer_set, CIDRSet)):
                fresh = self._selected(peer_set)
            elif isinstance(peer_set, SelectorSet) and (new_keys or gone_ids):
                fresh = (current - gone_ids) | {
                    self.identities.get(k) for k in new_keys if selects_identity(peer_set, k)
                }
            else:
                continue
            if fresh != current:
                self._set_ids[sid] = fresh
                changed.add(sid)
        return changed

    # --- endpoints and their entries ----------------------------------------------------

    def _endpoints(self, ir: NodeIR, changed_sets: set[str], delta: MapDelta) -> None:
        for ref in set(self._by_endpoint) - set(ir.endpoints):
            _, policy, named = self._by_endpoint.pop(ref)
            self._drop_entries(policy, named, delta)
            delta.endpoint_del[ref] = self.endpoint_ids.by_thing[ref]
            self.state.endpoints.pop(ref, None)
            self.endpoint_ids.release(ref)
        for ref, endpoint in ir.endpoints.items():
            signature = (
                endpoint.ingress,
                endpoint.egress,
                endpoint.audit,
                self._named_members(ir, endpoint),
            )
            cached = self._by_endpoint.get(ref)
            uses = _sets_used(endpoint.ingress) | _sets_used(endpoint.egress)
            if cached is not None and cached[0] == signature and not uses & changed_sets:
                continue
            number = self.endpoint_ids.get(ref)
            policy, named = set(), set()
            for direction, rules in (
                (DIR_INGRESS, endpoint.ingress),
                (DIR_EGRESS, endpoint.egress),
            ):
                if rules is not None:
                    p, n = self._entries(ir, number, direction, rules)
                    policy |= p
                    named |= n
            self._add_entries(policy, named, delta)
            if cached is not None:
                self._drop_entries(cached[1], cached[2], delta)
            self._by_endpoint[ref] = (signature, policy, named)
            value = (number, _flags(endpoint.ingress, endpoint.egress, endpoint.audit))
            if self.state.endpoints.get(ref) != value:
                self.state.endpoints[ref] = value
                delta.endpoint_set[ref] = value

    @staticmethod
    def _named_members(ir: NodeIR, endpoint: Any) -> tuple:
        rules = endpoint.egress
        sids = [c.members for c in rules.clauses if isinstance(c, NamedPortClause)] if rules else []
        return tuple(ir.members.get(sid) for sid in sids)

    def _entries(
        self, ir: NodeIR, endpoint: int, direction: int, rules: DirectionRules
    ) -> tuple[set[PolicyEntry], set[NamedEntry]]:
        policy: set[PolicyEntry] = set()
        named: set[NamedEntry] = set()
        for clause in rules.clauses:
            if isinstance(clause, NamedPortClause):
                for ip, protocol, port in ir.members.get(clause.members, frozenset()):
                    if isinstance(ip, IPv4Address):
                        named.add((endpoint, str(ip), PROTOCOL_NUMBERS[protocol], port))
                continue
            assert isinstance(clause, PeerPortClause)
            identities = (
                {IDENTITY_ANY}
                if clause.peers is None
                else set().union(*(self._set_ids.get(sid, frozenset()) for sid in clause.peers))
            )
            for identity in identities:
                policy |= {
                    PolicyEntry(endpoint, direction, identity, *block)
                    for block in _port_entries(clause.ports)
                }
        return policy, named

    def _add_entries(
        self, policy: set[PolicyEntry], named: set[NamedEntry], delta: MapDelta
    ) -> None:
        for users, entries, added, state in (
            (self._policy_users, policy, delta.policy_add, self.state.policy),
            (self._named_users, named, delta.named_add, self.state.named),
        ):
            for entry in entries:
                if users[entry] == 0:
                    added.add(entry)
                    state.add(entry)
                users[entry] += 1

    def _drop_entries(
        self, policy: set[PolicyEntry], named: set[NamedEntry], delta: MapDelta
    ) -> None:
        for users, entries, added, removed, state in (
            (self._policy_users, policy, delta.policy_add, delta.policy_del, self.state.policy),
            (self._named_users, named, delta.named_add, delta.named_del, self.state.named),
        ):
            for entry in entries:
                users[entry] -= 1
                if users[entry] <= 0:
                    del users[entry]
                    state.discard(entry)
                    if entry in added:
                        added.discard(entry)
                    else:
                        removed.add(entry)

    # --- the address map ------------------------------------------------------------------

    def _address_entries(
        self,
        ir: NodeIR,
        host_addresses: Iterable[IPAddress],
        prefixes_changed: bool,
        changed_ips: set[IPAddress],
        delta: MapDelta,
    ) -> None:
        wanted: dict[AddrKey, tuple[int, int]] = {}
        if prefixes_changed:
            for prefix in self._prefix_list:
                wanted[(str(prefix.network_address), prefix.prefixlen)] = (
                    IDENTITY_WORLD,
                    self.prefixes.get(prefix),
                )
        if prefixes_changed:
            changed_ips = changed_ips | set(ir.addresses)
        for ip in changed_ips:
            key = (str(ip), 32)
            if ip in ir.addresses and isinstance(ip, IPv4Address):
                wanted[key] = (self.identities.get(ir.addresses[ip]), self._cidr_identity(ip))
            elif key in self.state.addresses and str(ip) not in self._host:
                delta.addr_del.add(key)
                self.state.addresses.pop(key, None)
        host = frozenset(str(ip) for ip in host_addresses if isinstance(ip, IPv4Address))
        for gone in self._host - host:
            if IPv4Address(gone) not in ir.addresses:
                delta.addr_del.add((gone, 32))
                self.state.addresses.pop((gone, 32), None)
        for ip in host:
            wanted[(ip, 32)] = (IDENTITY_HOST, 0)
        self._host = host
        for key, value in wanted.items():
            if self.state.addresses.get(key) != value:
                self.state.addresses[key] = value
                delta.addr_set[key] = value
                delta.addr_del.discard(key)

    def _cidr_identity(self, ip: IPv4Address) -> int:
        for prefix in reversed(self._prefix_list):  # longest first
            if ip in prefix:
                return self.prefixes.get(prefix)
        return 0


def _flags(ingress: DirectionRules | None, egress: DirectionRules | None, audit: bool) -> int:
    flags = EP_INGRESS_ISOLATED if ingress is not None else 0
    if audit:
        flags |= EP_AUDIT
    if egress is not None:
        flags |= EP_EGRESS_ISOLATED
        if any(isinstance(c, NamedPortClause) for c in egress.clauses):
            flags |= EP_NAMED_EGRESS
    return flags


def _sets_used(rules: DirectionRules | None) -> set[str]:
    used: set[str] = set()
    for clause in rules.clauses if rules else ():
        if isinstance(clause, PeerPortClause) and clause.peers:
            used.update(clause.peers)
    return used


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


def _key_to_json(key: IdentityKey) -> list:
    return [[list(kv) for kv in key[0]], [list(kv) for kv in key[1]]]


def _key_from_json(raw: list) -> IdentityKey:
    return tuple(tuple(kv) for kv in raw[0]), tuple(tuple(kv) for kv in raw[1])
