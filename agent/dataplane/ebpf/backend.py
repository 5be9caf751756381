"""The eBPF backend: loads the FORWARD programs (`loader`; one per address family, one
verdict), hooks them into the node namespace's IPv4 and IPv6 netfilter FORWARD hooks,
and writes what the planner says into the pinned maps (`maps`, in the order `writes`
gives), which hold both families' addresses. Endpoints are keyed by the ifindex of the
pod's host-side interface: the program finds the pod a packet leaves by the hook's
input device and the pod it enters by the output device.

It takes what every backend takes (`Backend.apply`): the target IR and the diff from the
IR it programmed last. An incremental sync plans from the diff alone, reads interfaces
only when endpoints appeared or changed (or one is not wired yet) and node addresses
only when the node's changed; a full sync plans from scratch and repairs the maps
against what the kernel holds.

A restarted agent finds its maps and its link pinned and its identity numbering in a
state file (written when the numbering changes), computes the same contents, and hooks
its programs in before the old links go: enforcement never stops. Connections are the
kernel's (conntrack): a narrowing change removes the entries it forbids, as the
iptables backend does. `cleanup` unhooks the programs and unpins the maps.

Counters: the programs count every verdict by family, direction and reason (a per-CPU
array) and every drop by endpoint, direction, reason and family (a hash the metrics read
to name the namespace). An endpoint's drop entries are read once more and deleted when
the endpoint goes, so a reused endpoint number starts from zero.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
from pathlib import Path
from typing import Any

from agent.compiler.diff import IRDiff
from agent.compiler.ir import NodeIR
from agent.dataplane import conntrack, transit_mark
from agent.dataplane.capacity import (
    Overflow,
    Overflows,
    closed,
    overflowing,
    policies_of,
    without_addresses,
    without_endpoints,
)
from agent.dataplane.counters import AUDIT_REASON, DatapathCounters, MonotonicTotals, split_audit
from agent.dataplane.ebpf import codec, conntrack_hold, loader, tc_retired
from agent.dataplane.ebpf.entries import MapDelta, MapState
from agent.dataplane.ebpf.maps import Maps
from agent.dataplane.ebpf.planner import EbpfPlanner
from agent.dataplane.ebpf.settings import EbpfSettings
from agent.dataplane.ebpf.transit_chain import TransitChain
from agent.dataplane.ebpf.writes import EndpointWrites, ordered_writes
from agent.dataplane.ebpf_layout import (
    CONFIG_ENDPOINT_EVENTS_BURST,
    CONFIG_ENDPOINT_EVENTS_PER_SECOND,
    CONFIG_EVENTS_BURST,
    CONFIG_EVENTS_PER_SECOND,
    DIR_EGRESS,
    DIR_INGRESS,
    FAMILY_IPV4,
    FAMILY_IPV6,
    IDENTITY_POD_FIRST,
    PICKET_POD_CIDR_ENTRIES,
    REASON_ALLOWED_CT,
    REASON_ALLOWED_HOST,
    REASON_ALLOWED_NOT_ISOLATED,
    REASON_ALLOWED_OTHER,
    REASON_ALLOWED_POLICY,
    REASON_ALLOWED_UPSTREAM,
    REASON_AUDIT_POLICY,
    REASON_DROP_FRAGMENT,
    REASON_DROP_INVALID,
    REASON_DROP_NO_SYN,
    REASON_DROP_POLICY,
    REASON_DROP_SPOOFED,
    REASON_DROP_UNPARSED,
    REASON_DROP_UNPROGRAMMED,
    REASON_NAMES,
    verdict_slot,
)
from agent.dataplane.errors import DataplaneError
from agent.dataplane.pod_interfaces import host_interfaces, node_addresses, uplink_interfaces
from agent.model.objects import IPAddress

log = logging.getLogger("picket.ebpf")


class EbpfBackend:
    name = "ebpf"
    mode = "netfilter"

    def __init__(
        self,
        node: str,
        pin_root: Path = Path("/sys/fs/bpf/picket"),
        state_file: Path | None = None,
        settings: EbpfSettings | None = None,
        load: bool = True,
        transit_dscp: int = transit_mark.DEFAULT_DSCP,
    ) -> None:
        self.node = node
        self.transit = TransitChain(transit_dscp, conntrack_hold.families())
        self._uplinks: tuple[str, ...] = ()
        self.settings = settings or EbpfSettings()
        self.pin_dir = pin_root / node
        self.state_file = state_file or Path(f"/run/picket/ebpf-{node}.json")
        self.planner = EbpfPlanner(self._saved_allocations())
        self._interfaces: dict[str, str] = {}  # endpoint -> host-side interface
        self._indexes: dict[str, int] = {}  # endpoint -> that interface's index
        self._ifindex: dict[str, int] = {}  # endpoint -> the ifindex programmed
        self._sources: dict[str, set[bytes]] = {}  # endpoint -> its source keys programmed
        self._programmed: MapState | None = None
        self._pod_cidrs: set[bytes] | None = None  # the pod CIDR keys programmed
        self._overflows = Overflows(log, "maps")  # what the last plan did not fit
        self._hooked = False
        self._drops = MonotonicTotals()
        self._lock = threading.Lock()  # metrics scrapes read counters and plan state
        self.bpf: Any = None
        if load:
            self._load()

    # --- loading ------------------------------------------------------------------------

    def _load(self) -> None:
        self.bpf, self.programs = loader.load(self.pin_dir, self.settings)
        self.maps = Maps(self.bpf)
        s = self.settings
        config = {
            CONFIG_EVENTS_PER_SECOND: s.events_per_second,
            CONFIG_EVENTS_BURST: s.events_burst,
            CONFIG_ENDPOINT_EVENTS_PER_SECOND: s.endpoint_events_per_second,
            CONFIG_ENDPOINT_EVENTS_BURST: s.endpoint_events_burst,
        }
        for slot, value in config.items():
            self.maps.put("picket_config", *codec.config_entry(slot, value))

    def _saved_allocations(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _save_allocations(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        temp = self.state_file.with_suffix(".tmp")
        temp.write_text(json.dumps(self.planner.allocations()))
        temp.replace(self.state_file)

    # --- applying -----------------------------------------------------------------------

    def apply(self, ir: NodeIR, change: IRDiff | None = None, full: bool = True) -> bool:
        """Program `ir`: from `change` (the diff from the IR programmed last), or, on a
        full sync, from scratch, repairing the maps against the kernel's. Returns
        whether entries or endpoint flags, not only addresses, changed."""
        # A capped plan (capacity.py) is not the IR the change is from: plan it whole.
        repair = full or change is None or self._programmed is None
        repair = repair or bool(self._overflows.latest())
        rewire = repair or self._needs_interfaces(ir, change)
        if rewire:
            self._interfaces = host_interfaces(ir)
            self._indexes = _ifindexes(self._interfaces)
        if repair or change is None or change.node_ips is not None:
            self._uplinks = uplink_interfaces(ir.node_ips)
        self.transit.before_maps(ir, self._uplinks, repair)
        with self._lock:
            if repair or change is None:
                delta = self.planner.rebuild(ir, self._host_addresses(ir))
            else:
                host = self._host_addresses(ir) if change.node_ips is not None else None
                delta = self.planner.update(ir, change, host)
            released = dict(delta.endpoint_del)
            # Checked before any kernel write: what does not fit is denied, not stale.
            planned, overflows = self._fit(ir)
            if overflows:
                released |= self.planner.rebuild(planned, self._host_addresses(ir)).endpoint_del
                repair = True
            self._overflows.report(overflows)
            if self.planner.numbers.take_changed():
                self._save_allocations()
            stale: dict[str, list[bytes]] = {}
            if repair:
                delta, stale = self._repair_delta()
            # Until the write succeeded, the plan is not what the kernel holds: a failed
            # write leaves the next apply to repair from the kernel's maps.
            self._programmed = None
            self._write(planned, delta, stale, every_endpoint=rewire)
            # After the endpoints: with the pod CIDRs in place, a pod no endpoint entry
            # names is dropped (bpf/lib/verdict.h, unprogrammed_drop).
            self._write_pod_cidrs(ir, repair)
            self._retire_drop_counts(released, every_stale=repair)
            self._programmed = self.planner.state
        if not self._hooked or (repair and not loader.is_hooked(self.pin_dir)):
            self._hook()
        self.transit.after_maps(ir, repair)
        return bool(delta.policy_add or delta.policy_del or delta.endpoint_set or delta.transit_set)

    def _hook(self) -> None:
        """After the first write (a restarted agent's program starts on the maps it just
        repaired, a new one on complete maps), and again on a full sync that finds the
        link gone."""
        if self._hooked:
            log.warning("a FORWARD program was unhooked; hooking the programs again")
        conntrack_hold.hold()
        loader.hook(self.programs, self.pin_dir)
        tc_retired.detach_everywhere()
        self._hooked = True

    def _needs_interfaces(self, ir: NodeIR, change: IRDiff | None) -> bool:
        """New or changed endpoints, or one whose interface was not there yet."""
        if change is None or change.endpoints_added or change.endpoints_changed:
            return True
        return any(ref not in self._indexes for ref in ir.endpoints)

    @staticmethod
    def _host_addresses(ir: NodeIR) -> set[IPAddress]:
        return set(node_addresses()) | set(ir.node_ips)

    def _repair_delta(self) -> tuple[MapDelta, dict[str, list[bytes]]]:
        """What makes the kernel's maps equal the plan, read back from the kernel (and
        the raw keys it holds that no plan has): after a restart this is (nearly)
        nothing, so enforcement carries on untouched."""
        want = self.planner.state
        delta = MapDelta()
        addr_keys = {codec.addr_key(k) for k in want.addresses}
        for raw in self.maps.keys("picket_addr"):
            if raw not in addr_keys:
                delta.addr_del.add(codec.addr_key_from_bytes(raw))
        delta.addr_set = dict(want.addresses)
        delta.endpoint_set = dict(want.endpoints)
        policy_keys = {codec.policy_key(e): e for e in want.policy}
        present = set(self.maps.keys("picket_policy"))
        delta.policy_add = {e for k, e in policy_keys.items() if k not in present}
        named_keys = {codec.named_key(e): e for e in want.named}
        present_named = set(self.maps.keys("picket_named"))
        delta.named_add = {e for k, e in named_keys.items() if k not in present_named}
        delta.transit_set = dict(want.transit)
        transit_keys = {codec.transit_key(ip) for ip in want.transit}
        home_keys = {codec.transit_home_key(e): e for e in want.homes}
        present_homes = set(self.maps.keys("picket_transit_home"))
        delta.home_add = {e for k, e in home_keys.items() if k not in present_homes}
        self._ifindex = {}  # every endpoint entry is rewritten by ifindex
        self._sources = {}
        stale = {
            "picket_policy": [k for k in present if k not in policy_keys],
            "picket_named": [k for k in present_named if k not in named_keys],
            "picket_endpoints": self.maps.keys("picket_endpoints"),
            "picket_sources": self.maps.keys("picket_sources"),
            "picket_transit": [
                k for k in self.maps.keys("picket_transit") if k not in transit_keys
            ],
            "picket_transit_home": [k for k in present_homes if k not in home_keys],
        }
        return delta, stale

    def _endpoint_writes(self, ir: NodeIR, delta: MapDelta, every_endpoint: bool) -> EndpointWrites:
        """Endpoint entries by interface index; all of them after interfaces were read
        again (an index may have changed), else those the delta names."""
        wanted = self.planner.state.endpoints
        refs = wanted if every_endpoint else [r for r in delta.endpoint_set if r in wanted]
        out = EndpointWrites()
        for ref in refs:
            index = self._indexes.get(ref)
            if index is None:
                continue
            old = self._ifindex.get(ref)
            if ref in delta.endpoint_set or old != index:
                out.put[index] = wanted[ref]
                if old is not None and old != index:
                    out.delete.append(old)
                self._ifindex[ref] = index
            endpoint = ir.endpoints.get(ref)
            ips = endpoint.ips if endpoint is not None else ()
            keys = {codec.source_key(index, str(ip)) for ip in ips}  # every family's
            old_keys = self._sources.get(ref, set())
            out.sources_put += sorted(keys - old_keys)
            out.sources_delete += sorted(old_keys - keys)
            self._sources[ref] = keys
        gone = self._ifindex if every_endpoint else delta.endpoint_del
        for ref in [r for r in gone if r not in wanted and r in self._ifindex]:
            out.delete.append(self._ifindex.pop(ref))
            out.sources_delete += sorted(self._sources.pop(ref, set()))
        return out

    def _write(
        self, ir: NodeIR, delta: MapDelta, stale: dict[str, list[bytes]], every_endpoint: bool
    ) -> None:
        endpoints = self._endpoint_writes(ir, delta, every_endpoint)
        live = {codec.endpoint_key(i) for i in self._ifindex.values()}
        stale["picket_endpoints"] = [r for r in stale.get("picket_endpoints", []) if r not in live]
        sources = set().union(*self._sources.values())
        stale["picket_sources"] = [r for r in stale.get("picket_sources", []) if r not in sources]
        for name, key, value in ordered_writes(delta, endpoints, stale):
            if value is None:
                self.maps.delete(name, key)
            else:
                self.maps.put(name, key, value)

    def _fit(self, ir: NodeIR) -> tuple[NodeIR, list[Overflow]]:
        """The IR to program, and the tables the plan of `ir` overflows: the endpoints
        whose policy or named entries do not fit deny everything (capacity.py)."""
        policy, named = self.planner.entry_counts()
        overflows, refs = [], set()
        for table, sizes, capacity in (
            ("policy", policy, self.settings.policy_entries),
            ("named", named, self.settings.named_entries),
        ):
            wanted = sum(sizes.values())
            if wanted > capacity:
                over = overflowing(sizes, capacity)
                refs.update(over)
                overflows.append(Overflow(table, capacity, wanted, over, policies_of(ir, over)))
        planned = closed(ir, refs)
        cap = self.settings.endpoint_entries
        planned, left = without_endpoints(planned, cap)
        if left:  # no entry: dropped as not programmed (where the node has a pod CIDR)
            wanted = len(ir.endpoints)
            overflows.append(Overflow("endpoints", cap, wanted, left, policies_of(ir, left)))
        # The address map also holds the node's own addresses and the ipBlock prefixes.
        state, cap = self.planner.state, self.settings.addr_entries
        if len(state.addresses) > cap:
            pods = sum(1 for pod, _ in state.addresses.values() if pod >= IDENTITY_POD_FIRST)
            planned, out = without_addresses(planned, cap - (len(state.addresses) - pods))
            overflows.append(Overflow("addr", cap, len(state.addresses), (), (), out))
        return planned, overflows

    def capacity_exceeded(self) -> list[Overflow]:
        return self._overflows.latest()

    def _write_pod_cidrs(self, ir: NodeIR, repair: bool) -> None:
        """The node's pod CIDRs of both families, when they changed (read back on a full
        sync)."""
        want = {
            codec.addr_key((str(cidr.network_address), cidr.prefixlen)) for cidr in ir.pod_cidrs
        }
        if not repair and want == self._pod_cidrs:
            return
        if len(want) > PICKET_POD_CIDR_ENTRIES:
            raise DataplaneError(
                f"node {ir.node}: {len(want)} pod CIDRs, the map holds {PICKET_POD_CIDR_ENTRIES}"
            )
        present = set(self.maps.keys("picket_pod_cidrs"))
        for key in sorted(want - present):
            self.maps.put("picket_pod_cidrs", key, b"\x01")
        for key in sorted(present - want):
            self.maps.delete("picket_pod_cidrs", key)
        self._pod_cidrs = want

    # --- connections, counters, cleanup ---------------------------------------------------

    def remove_denied(
        self,
        ir: NodeIR,
        gone: frozenset[IPAddress] = frozenset(),
        touching: frozenset[IPAddress] | None = None,
    ) -> int:
        """Delete the conntrack entries of connections the IR no longer admits, and of
        addresses whose pod went."""
        return conntrack.remove_denied(ir, frozenset(self._host_addresses(ir)), gone, touching)

    def counters(self) -> dict[str, int]:
        """Packets by verdict reason, both directions and families."""
        return {
            name: sum(
                self._verdicts(f, d, reason) for f in BOTH_FAMILIES for d, _ in DIRECTION_NAMES
            )
            for reason, name in REASON_NAMES.items()
        }

    def _verdicts(self, family: int, direction: int, reason: int) -> int:
        table = self.maps.tables["picket_verdicts"]
        return int(sum(table[table.Key(verdict_slot(family, direction, reason))]))

    def _read_drop_counts(self, namespaces: dict[int, str]) -> None:
        """Feeds the totals from the entries of endpoints in `namespaces` (number ->
        namespace). Callers hold the lock."""
        for key, value in self.maps.tables["picket_drop_counts"].items():
            namespace = namespaces.get(key.endpoint)
            if namespace is None:
                continue
            labels = (
                "egress" if key.direction == DIR_EGRESS else "ingress",
                DROP_REASON_LABELS.get(key.reason, str(key.reason)),
                namespace,
                key.family,
            )
            self._drops.observe(_drop_source(key), labels, value.value)

    def _retire_drop_counts(self, released: dict[str, int], every_stale: bool) -> None:
        """Removed endpoints: read their drop entries a last time, then delete them (and,
        on a full sync, entries of numbers no endpoint has, e.g. from before a restart)."""
        gone = {number: ref.partition("/")[0] for ref, number in released.items()}
        if not gone and not every_stale:
            return
        self._read_drop_counts(gone)
        live = set(self.planner.endpoint_ids.by_thing.values())
        table = self.maps.tables["picket_drop_counts"]
        for key in list(table.keys()):
            if key.endpoint in gone or (every_stale and key.endpoint not in live):
                del table[key]
                self._drops.forget([_drop_source(key)])

    def datapath_counters(self) -> DatapathCounters:
        with self._lock:
            # Local and transit endpoints (a transit endpoint's drops are its namespace's).
            self._read_drop_counts(
                {n: ref.partition("/")[0] for ref, n in self.planner.endpoint_ids.by_thing.items()}
            )
            totals = self._drops.totals()
            for family in BOTH_FAMILIES:
                for direction, name in DIRECTION_NAMES:
                    # No endpoint to count them under: the verdict counters, which only grow.
                    totals[(name, "unprogrammed", "", family)] = self._verdicts(
                        family, direction, REASON_DROP_UNPROGRAMMED
                    )
        allowed = {
            (name, family): sum(self._verdicts(family, direction, r) for r in ALLOWED_REASONS)
            for family in BOTH_FAMILIES
            for direction, name in DIRECTION_NAMES
        }
        return split_audit(totals, allowed)

    def map_entries(self) -> dict[str, int]:
        """Entries per map: the agent's own from its plan, the drop counts by walking
        them."""
        with self._lock:
            state = self._programmed or self.planner.state
            sizes = {
                "addr": len(state.addresses),
                "endpoints": len(self._ifindex),
                "policy": len(state.policy),
                "named": len(state.named),
                "transit": len(state.transit),
                "transit_home": len(state.homes),
            }
        sizes["drop_counts"] = sum(1 for _ in self.maps.tables["picket_drop_counts"])
        return sizes

    def conntrack_entries(self) -> int | None:
        return conntrack.entry_count()

    @property
    def jumps_restored(self) -> int:
        return self.transit.restored

    def rule_count(self) -> int:
        state = self._programmed or self.planner.state
        return len(state.policy) + len(state.named)

    def rules_by_family(self) -> dict[int, int]:
        return {}  # a pod's policy entries serve both its families (identities are per pod)

    def cleanup(self) -> list[str]:
        """Unhook our programs, drop the conntrack hold and unpin our maps."""
        removed = loader.unhook(self.pin_dir) + tc_retired.detach_everywhere()
        removed += conntrack_hold.release() + self.transit.remove()
        if self.pin_dir.exists():
            shutil.rmtree(self.pin_dir)
            removed.append(f"pinned maps {self.pin_dir}")
        if self.state_file.exists():
            self.state_file.unlink()
            removed.append(f"state {self.state_file}")
        return removed


DROP_REASON_LABELS = {
    REASON_DROP_POLICY: "policy",
    REASON_DROP_NO_SYN: "no_syn",
    REASON_DROP_INVALID: "invalid",
    REASON_DROP_SPOOFED: "spoofed",
    REASON_DROP_UNPARSED: "unparsed",
    REASON_DROP_FRAGMENT: "fragment",
    REASON_AUDIT_POLICY: AUDIT_REASON,
}
DIRECTION_NAMES = ((DIR_INGRESS, "ingress"), (DIR_EGRESS, "egress"))
BOTH_FAMILIES = (FAMILY_IPV4, FAMILY_IPV6)
ALLOWED_REASONS = (
    REASON_ALLOWED_POLICY,
    REASON_ALLOWED_CT,
    REASON_ALLOWED_NOT_ISOLATED,
    REASON_ALLOWED_HOST,
    REASON_ALLOWED_OTHER,
    REASON_ALLOWED_UPSTREAM,
)


def _drop_source(key: Any) -> tuple[int, int, int, int]:
    """A drop count entry's identity, as the totals know it."""
    return key.endpoint, key.direction, key.reason, key.family


def _ifindexes(interfaces: dict[str, str]) -> dict[str, int]:
    out = {}
    for ref, name in interfaces.items():
        try:
            out[ref] = socket.if_nametoindex(name)
        except OSError:
            continue
    return out
