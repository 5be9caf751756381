"""NodeIR and its diff -> the contents of the eBPF maps (pure; the kernel I/O is in
`maps` and `backend`).

- Identities (`identities`): pods with equal (namespace labels, pod labels) share one;
  ipBlock prefixes (cidrs and excepts) get their own.
- Address map (LPM): a pod address (/32, /128) -> (its identity, the identity of the
  longest ipBlock prefix of its family holding it); a prefix -> (WORLD, its identity);
  this node's addresses -> HOST. Both families in one map (IPv4 mapped: codec.py), every
  address of a pod with the pod's one identity.
- Policy map (LPM over endpoint, direction, identity, protocol, port): per isolated
  direction of a local endpoint, one entry per (identity a clause's peers select, port
  block of the clause). Port ranges are aligned blocks, never one entry per port.
- Named map: egress named ports, exact (endpoint, destination address, protocol, port).
- Transit map: a transit endpoint (a pod of another node this node DNATs outside
  clients to) by its address; its ingress entries are an endpoint's, its own node's
  addresses are home entries (endpoint, address).

`update` plans from the IR diff the compiler already computed, and touches only what it
names: a relabel to a label set that already has an identity is one address-map update;
a new identity updates the sets that select it and the entries of the endpoints using
those sets. `rebuild` plans from scratch (keeping the numbering) and returns the delta
from what was planned before; the backend repairs the kernel against it on full syncs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from ipaddress import IPv6Address, ip_address, ip_network
from typing import Any

from agent.compiler.diff import IRDiff, diff_ir
from agent.compiler.ir import (
    CIDRSet,
    IdentityKey,
    LocalEndpoint,
    NamedPortSet,
    NodeIR,
    SelectorSet,
    TransitEndpoint,
    sets_used,
)
from agent.dataplane.ebpf.entries import (
    AddrKey,
    HomeEntry,
    MapDelta,
    MapState,
    NamedEntry,
    PolicyEntry,
    endpoint_entries,
    endpoint_flags,
    state_delta,
)
from agent.dataplane.ebpf.identities import Allocations
from agent.dataplane.ebpf_layout import IDENTITY_HOST, IDENTITY_WORLD
from agent.model.objects import IPAddress, IPNetwork

# Where the maps keep IPv4 (codec.py): an IPv6 ipBlock this wide would hold every IPv4
# address there. The whole IPv4 space then gets an entry of its own, so that an IPv4
# address no IPv4 prefix holds is WORLD rather than in the IPv6 block.
IPV4_MAPPED = IPv6Address("::ffff:0:0")
IPV4_SPACE: tuple[str, int] = ("0.0.0.0", 0)


class EbpfPlanner:
    def __init__(self, allocations: dict[str, Any] | None = None) -> None:
        self.numbers = Allocations(allocations)
        self.identities = self.numbers.identities
        self.prefixes = self.numbers.prefixes
        self.endpoint_ids = self.numbers.endpoints
        self._reset()

    def _reset(self) -> None:
        self.state = MapState()
        self._key_of: dict[IPAddress, IdentityKey] = {}
        self._key_users: Counter[IdentityKey] = Counter()
        self._set_ids: dict[str, frozenset[int]] = {}  # peer set -> identities selected
        self._set_users: dict[str, set[str]] = {}  # set -> endpoints whose rules name it
        self._by_endpoint: dict[str, tuple[set[PolicyEntry], set[NamedEntry]]] = {}
        self._policy_users: Counter[PolicyEntry] = Counter()
        self._named_users: Counter[NamedEntry] = Counter()
        self._host: frozenset[str] = frozenset()
        self._prefix_list: list[IPNetwork] = []  # by family, shortest first
        self._prefix_set: frozenset[IPNetwork] = frozenset()
        self._guard_ipv4 = False  # an IPv6 prefix holds where IPv4 sits (IPV4_SPACE)
        self._uses: dict[str, set[str]] = {}  # endpoint -> sets its rules name
        # transit endpoint -> (its addresses, its home entries)
        self._transit_keys: dict[str, tuple[frozenset[str], frozenset[HomeEntry]]] = {}

    def entry_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Policy and named entries per endpoint (local or transit) of the last plan."""
        policy = {ref: len(p) for ref, (p, _) in self._by_endpoint.items()}
        named = {ref: len(n) for ref, (_, n) in self._by_endpoint.items()}
        return policy, named

    def allocations(self) -> dict[str, Any]:
        """What a restarted agent needs to number everything the same way."""
        return self.numbers.to_json()

    def rebuild(self, ir: NodeIR, host_addresses: Iterable[IPAddress]) -> MapDelta:
        """Plan `ir` from scratch; the delta is from what was planned before."""
        old = self.state
        self._reset()
        self.update(ir, diff_ir(None, ir), host_addresses)
        self.identities.keep_only(self._key_users)
        self.prefixes.keep_only(self._prefix_list)
        self.endpoint_ids.keep_only([*ir.endpoints, *ir.transit])
        return state_delta(old, self.state)

    def update(
        self, ir: NodeIR, change: IRDiff, host_addresses: Iterable[IPAddress] | None = None
    ) -> MapDelta:
        """Plan the change from the IR planned last to `ir`; `host_addresses` None: the
        node's addresses did not change."""
        delta = MapDelta()
        new_keys, gone_keys = self._count_keys(change.addresses)
        for key in sorted(new_keys):  # numbered in a stable order, whatever the IR's
            self.identities.get(key)
        prefixes_changed = bool(change.sets_added or change.sets_removed) and self._prefixes(
            ir, delta
        )
        changed_sets = self._sets(ir, change, new_keys, gone_keys, prefixes_changed)
        self._endpoints(ir, change, changed_sets, delta)
        if host_addresses is not None:
            self._host_entries(ir, host_addresses, delta)
        changed_ips = set(change.addresses)
        if prefixes_changed:  # every pod's prefix identity may have changed
            changed_ips |= set(ir.addresses)
        self._address_entries(ir, changed_ips, delta)
        for key in sorted(gone_keys):
            self.identities.release(key)
        return delta

    # --- identities -------------------------------------------------------------------

    def _count_keys(
        self, changes: dict[IPAddress, IdentityKey | None]
    ) -> tuple[set[IdentityKey], set[IdentityKey]]:
        """Label sets that got their first pod, and those that lost their last."""
        before: dict[IdentityKey, int] = {}
        for ip, after in changes.items():
            old = self._key_of.get(ip)
            for key in (old, after):
                if key is not None and key not in before:
                    before[key] = self._key_users[key]
            if old is not None:
                self._key_users[old] -= 1
            if after is None:
                self._key_of.pop(ip, None)
            else:
                self._key_of[ip] = after
                self._key_users[after] += 1
        new_keys = {k for k, n in before.items() if n == 0 and self._key_users[k] > 0}
        gone_keys = {k for k, n in before.items() if n > 0 and self._key_users[k] <= 0}
        for key in [k for k in before if self._key_users[k] <= 0]:
            del self._key_users[key]
        return new_keys, gone_keys

    def _prefixes(self, ir: NodeIR, delta: MapDelta) -> bool:
        """Every ipBlock prefix of both families (an except of another family than its
        cidr matches nothing: the compiler's CIDRSet.contains)."""
        wanted = sorted(
            {n for s in ir.sets.values() if isinstance(s, CIDRSet) for n in (s.cidr, *s.excepts)},
            key=lambda n: (n.version, n.prefixlen, int(n.network_address)),
        )
        if wanted == self._prefix_list:
            return False
        gone = set(self._prefix_list) - set(wanted)
        self._prefix_list, self._prefix_set = wanted, frozenset(wanted)
        self._guard_ipv4 = any(n.version == 6 and IPV4_MAPPED in n for n in wanted)
        for prefix in gone:
            self.prefixes.release(prefix)
        for prefix in [*gone, *wanted]:
            self._refresh_address(ir, (str(prefix.network_address), prefix.prefixlen), delta)
        self._refresh_address(ir, IPV4_SPACE, delta)
        return True

    # --- peer sets -> identities ------------------------------------------------------

    def _sets(
        self,
        ir: NodeIR,
        change: IRDiff,
        new_keys: set[IdentityKey],
        gone_keys: set[IdentityKey],
        prefixes_changed: bool,
    ) -> set[str]:
        """The peer sets whose selected identities changed."""
        for sid in change.sets_removed:
            self._set_ids.pop(sid, None)
        gone_ids = {self.identities.by_thing.get(k) for k in gone_keys} - {None}
        changed: set[str] = set()
        # Without new or gone identities or prefixes, only new sets need selecting.
        candidates = ir.sets if new_keys or gone_ids or prefixes_changed else change.sets_added
        for sid, peer_set in candidates.items():
            current = self._set_ids.get(sid)
            if isinstance(peer_set, NamedPortSet):
                continue
            if current is None or (prefixes_changed and isinstance(peer_set, CIDRSet)):
                fresh = self.numbers.selected(peer_set, self._key_users, self._prefix_list)
            elif isinstance(peer_set, SelectorSet) and (new_keys or gone_ids):
                fresh = (current - gone_ids) | self.numbers.selected(
                    peer_set, new_keys, self._prefix_list
                )
            else:
                continue
            if fresh != current:
                self._set_ids[sid] = fresh
                changed.add(sid)
        return changed

    # --- endpoints and their entries ----------------------------------------------------

    def _endpoints(
        self, ir: NodeIR, change: IRDiff, changed_sets: set[str], delta: MapDelta
    ) -> None:
        # Removals first: a ref may go from transit to local (a pod recreated on this
        # node) within one change.
        for ref in change.endpoints_removed:
            self._forget_endpoint(ref, delta)
        for ref in change.transit_removed:
            self._forget_endpoint(ref, delta)
            self._forget_transit(ref, delta)
        named = {s for s in change.members if isinstance(ir.sets.get(s), NamedPortSet)}
        touched = {
            *change.endpoints_added,
            *change.endpoints_changed,
            *change.transit_added,
            *change.transit_changed,
        }
        for sid in changed_sets | named:
            touched |= self._set_users.get(sid, set())
        for ref in sorted(touched):
            if ref in ir.endpoints:
                self._plan_endpoint(ir, ir.endpoints[ref], delta)
            elif ref in ir.transit:
                self._plan_endpoint(ir, ir.transit[ref], delta)

    def _plan_endpoint(self, ir: NodeIR, endpoint: LocalEndpoint, delta: MapDelta) -> None:
        ref = endpoint.pod
        number = self.endpoint_ids.get(ref)
        policy, named = endpoint_entries(number, endpoint, self._set_ids, ir.members)
        self._add_entries(policy, named, delta)
        cached = self._by_endpoint.get(ref)
        if cached is not None:
            self._drop_entries(*cached, delta)
        self._by_endpoint[ref] = (policy, named)
        self._index_users(ref, sets_used(endpoint))
        value = (number, endpoint_flags(endpoint))
        if isinstance(endpoint, TransitEndpoint):
            self._plan_transit(endpoint, value, delta)
        elif self.state.endpoints.get(ref) != value:
            self.state.endpoints[ref] = value
            delta.endpoint_set[ref] = value

    def _plan_transit(
        self, endpoint: TransitEndpoint, value: tuple[int, int], delta: MapDelta
    ) -> None:
        """A transit endpoint's address entries and home entries."""
        ips = frozenset(str(ip) for ip in endpoint.ips)
        homes = frozenset((value[0], str(ip)) for ip in endpoint.node_ips)
        old_ips, old_homes = self._transit_keys.get(endpoint.pod, (frozenset(), frozenset()))
        self._transit_keys[endpoint.pod] = (ips, homes)
        self._change_homes(homes - old_homes, old_homes - homes, delta)
        for ip in ips:
            if self.state.transit.get(ip) != value:
                self.state.transit[ip] = value
                delta.transit_set[ip] = value
                delta.transit_del.discard(ip)
        self._drop_transit_ips(old_ips - ips, delta)

    def _forget_transit(self, ref: str, delta: MapDelta) -> None:
        ips, homes = self._transit_keys.pop(ref, (frozenset(), frozenset()))
        self._change_homes(frozenset(), homes, delta)
        self._drop_transit_ips(ips, delta)

    def _drop_transit_ips(self, ips: Iterable[str], delta: MapDelta) -> None:
        for ip in ips:
            if self.state.transit.pop(ip, None) is not None:
                delta.transit_del.add(ip)
            delta.transit_set.pop(ip, None)

    def _change_homes(
        self, added: frozenset[HomeEntry], removed: frozenset[HomeEntry], delta: MapDelta
    ) -> None:
        for entry in removed:
            self.state.homes.discard(entry)
            if entry in delta.home_add:
                delta.home_add.discard(entry)
            else:
                delta.home_del.add(entry)
        for entry in added:
            self.state.homes.add(entry)
            if entry in delta.home_del:
                delta.home_del.discard(entry)
            else:
                delta.home_add.add(entry)

    def _forget_endpoint(self, ref: str, delta: MapDelta) -> None:
        cached = self._by_endpoint.pop(ref, None)
        if cached is not None:
            self._drop_entries(*cached, delta)
        self._index_users(ref, set())
        if ref in self.endpoint_ids.by_thing:
            delta.endpoint_del[ref] = self.endpoint_ids.by_thing[ref]
        delta.endpoint_set.pop(ref, None)
        self.state.endpoints.pop(ref, None)
        self.endpoint_ids.release(ref)

    def _index_users(self, ref: str, used: set[str]) -> None:
        for sid in self._uses.pop(ref, set()) - used:
            users = self._set_users[sid]
            users.discard(ref)
            if not users:
                del self._set_users[sid]
        for sid in used:
            self._set_users.setdefault(sid, set()).add(ref)
        if used:
            self._uses[ref] = used

    def _add_entries(
        self, policy: set[PolicyEntry], named: set[NamedEntry], delta: MapDelta
    ) -> None:
        for users, entries, added, removed, state in (
            (self._policy_users, policy, delta.policy_add, delta.policy_del, self.state.policy),
            (self._named_users, named, delta.named_add, delta.named_del, self.state.named),
        ):
            for entry in entries:
                if users[entry] == 0:
                    state.add(entry)
                    # An entry dropped earlier in this delta (a removed endpoint whose
                    # number a new one reuses) stays in the kernel: neither add nor delete.
                    if entry in removed:
                        removed.discard(entry)
                    else:
                        added.add(entry)
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

    def _address_entries(self, ir: NodeIR, ips: set[IPAddress], delta: MapDelta) -> None:
        for ip in ips:
            self._refresh_address(ir, (str(ip), ip.max_prefixlen), delta)

    def _host_entries(
        self, ir: NodeIR, host_addresses: Iterable[IPAddress], delta: MapDelta
    ) -> None:
        # Not IPv6 link-local or loopback ones (every veth of the node has an fe80::
        # address): the kernel forwards no packet from or to them, so they would only
        # fill the map.
        host = frozenset(
            str(ip)
            for ip in host_addresses
            if ip.version == 4 or not (ip.is_link_local or ip.is_loopback)
        )
        changed, self._host = self._host ^ host, host
        for address in changed:
            self._refresh_address(ir, (address, ip_address(address).max_prefixlen), delta)

    def _refresh_address(self, ir: NodeIR, key: AddrKey, delta: MapDelta) -> None:
        """One address-map key as the IR wants it: the node's own address is HOST, a pod
        address its identities, an ipBlock prefix WORLD and its identity."""
        address, bits = key
        ip = ip_address(address)
        prefix = ip_network(f"{address}/{bits}")
        value: tuple[int, int] | None = None
        if bits == ip.max_prefixlen and address in self._host:
            value = (IDENTITY_HOST, 0)
        elif bits == ip.max_prefixlen and ip in ir.addresses:
            value = (self.identities.get(ir.addresses[ip]), self._cidr_identity(ip))
        elif prefix in self._prefix_set:
            value = (IDENTITY_WORLD, self.prefixes.get(prefix))
        elif key == IPV4_SPACE and self._guard_ipv4:
            value = (IDENTITY_WORLD, 0)
        if value is None:
            if self.state.addresses.pop(key, None) is not None:
                delta.addr_del.add(key)
            delta.addr_set.pop(key, None)
        elif self.state.addresses.get(key) != value:
            self.state.addresses[key] = value
            delta.addr_set[key] = value
            delta.addr_del.discard(key)

    def _cidr_identity(self, ip: IPAddress) -> int:
        for prefix in reversed(self._prefix_list):  # longest first; `in` checks the family
            if ip in prefix:
                return self.prefixes.get(prefix)
        return 0
