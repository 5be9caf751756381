"""The iptables+ipset backend: programs what iptables_render and ipset_render say,
atomically; every text it hands the kernel comes from them.

- Chains go in one `iptables-restore --noflush` transaction (declaring a chain replaces
  it whole); one jump from the mangle table's FORWARD (iptables_render says why
  mangle); nothing else is touched. Chains an older agent left in the filter table
  are removed once ours are in place.
- Sets are created and filled before rules use them, changed by membership (`ipset
  restore` batches of add/del, so a relabel costs set updates, not a chain rewrite),
  rebuilt through a temporary set and `swap` on a full sync, destroyed after the rules
  that used them are gone.
- Both address families, from the same IR (iptables_render.py): IPv4 through
  iptables-restore, IPv6 through ip6tables-restore, each with its jump kept first and
  its own sets (`family inet6`, named `picket6-...`) in the same `ipset restore`
  batches, so each step of the order above holds for both before the next begins. A
  kernel without IPv6 (no /proc/net/if_inet6) gets IPv4 only: no IPv6 packet exists.
- The iptables flavour (legacy or nft) is the host's, per family: the one holding more
  rules (iptables-legacy-save against iptables-nft-save, ip6tables-... for IPv6).
- Drop counters are the rules' packet counters, read (`iptables-save -c`,
  `ip6tables-save -c`) at each metrics reading (agent/metrics/readings.py) and just
  before a restore zeroes them, and kept as totals that only grow, each family's
  under its own `family` label.
- Errors raise DataplaneError; the agent logs them and retries, it never crashes.
"""

from __future__ import annotations

import logging
import subprocess
import threading

from agent.compiler.diff import IRDiff
from agent.compiler.ir import NodeIR
from agent.dataplane import conntrack, source_check, transit_mark
from agent.dataplane.capacity import Overflow, Overflows, closed, policies_of, sets_users
from agent.dataplane.counters import DatapathCounters, MonotonicTotals, split_audit
from agent.dataplane.first_jump import FirstJump
from agent.dataplane.ipset_render import (
    DEFAULT_MAX_SET_ELEMENTS,
    DEFAULT_MAXELEM,
    IpSet,
    destroy_script,
    family_count,
    family_sets,
    ipset_create,
    ours,
    render_set,
    render_sets,
    script_text,
    set_name,
    swap_script,
    update_script,
)
from agent.dataplane.iptables_render import (
    DEFAULT_NFLOG_GROUP,
    JUMP_RULE,
    TABLE,
    Ruleset,
    cleanup_text,
    counted_rules,
    render_chains,
    restore_text,
)
from agent.dataplane.iptables_tools import chains_in, detect_mode, tool
from agent.dataplane.iptables_tools import run as _run
from agent.dataplane.pod_interfaces import host_interfaces, node_addresses, uplink_interfaces
from agent.model.objects import IPAddress

log = logging.getLogger("picket.iptables")
JUMP = list(JUMP_RULE)
RETIRED_TABLE = "filter"  # where agents before the move to mangle put their chains


class IptablesBackend:
    name = "iptables"

    def __init__(
        self,
        nflog_group: int = DEFAULT_NFLOG_GROUP,
        mode: str | None = None,
        transit_dscp: int = transit_mark.DEFAULT_DSCP,
        max_set_elements: int = DEFAULT_MAX_SET_ELEMENTS,
        families: tuple[int, ...] | None = None,
    ) -> None:
        self.families = families or conntrack.kernel_families()
        if 6 not in self.families:
            log.info("this kernel has no IPv6: only IPv4 is programmed")
        # `mode` forces both families' flavour (tests); else each is detected.
        self.modes = {f: mode or detect_mode(f) for f in self.families}
        modes = set(self.modes.values())
        self.mode = modes.pop() if len(modes) == 1 else f"{self.modes[4]}, IPv6 {self.modes[6]}"
        self.max_set_elements = max_set_elements
        self.nflog_group = nflog_group
        self.transit_dscp = transit_dscp
        self._uplinks: tuple[str, ...] = ()
        self._chains: dict[int, dict[str, list[str]]] | None = None  # what is programmed
        self._interfaces: dict[str, str] = {}
        self._set_names: set[str] = set()  # the sets that exist (ours)
        self._sizes: dict[str, int] = {}  # peer set -> the maxelem it was built with
        self._overflows = Overflows(log, "sets")  # what the last plan did not fit
        self._counters = MonotonicTotals()
        self._counters_lock = threading.Lock()  # the metrics reader reads them from its thread
        self._retired = False  # an older agent's filter-table chains are gone
        # Checked first in each family's FORWARD on every sync.
        self.jumps = {f: FirstJump(TABLE, JUMP, f) for f in self.families}

    def _tool(self, family: int, name: str = "") -> str:
        return tool(family, self.modes[family], name)

    def apply(self, ir: NodeIR, change: IRDiff | None = None, full: bool = True) -> bool:
        """Program `ir`. A full apply rebuilds every set and chain, which also repairs
        drift (flushed chains, a removed jump, edited sets); otherwise only what `change`
        (the diff from the previous IR) touched. Returns whether the chains changed.
        A set bigger than `max_set_elements` is not built: the endpoints whose rules use
        it deny everything instead (capacity.py)."""
        ir, overflows = self._fit(ir)
        if overflows or self._overflows.latest():  # a capped plan is not what changed
            full, change = True, None
        self._overflows.report(overflows)
        peers, transit = self._transit_sets(ir)
        if full or change is None or self._chains is None:
            self._interfaces = host_interfaces(ir)
            self._uplinks = uplink_interfaces(ir.node_ips)
            self._set_names = set(self._existing_sets())
            built = [*self._peer_sets(ir), *peers]
            self._ipset(swap_script(built, self._set_names))
            self._sizes = {s.name: s.maxelem for s in built}
        else:
            if change.endpoints_added or change.endpoints_changed:
                self._interfaces = host_interfaces(ir)
            if change.node_ips is not None:
                self._uplinks = uplink_interfaces(ir.node_ips)
            for family in self.families:
                grown = self._grown(ir, change, family)
                self._ipset(update_script(ir, change, grown, self._set_names, family))
                for sid in {*change.sets_added, *grown}:
                    if sid in family_sets(ir, family):
                        self._sizes[set_name(sid, family)] = render_set(ir, sid, family).maxelem
            if change.peer_node_ips is not None:
                self._ipset(swap_script(peers, self._set_names))
        transit_changed = (
            full
            or change is None
            or change.transit_added
            or change.transit_changed  # a pod recreated under its name has a new address
            or change.transit_removed
        )
        if transit_changed:  # the rules name it: it must exist before them
            self._ipset([ipset_create(s) for s in transit])
        sources = [
            s for f in self.families for s in source_check.render_sets(ir, self._interfaces, f)
        ]
        sources_changed = (
            full
            or change is None
            or change.endpoints_added
            or change.endpoints_changed
            or change.endpoints_removed
            or change.pod_cidrs is not None
        )
        if sources_changed:  # the rules name them: they must exist before them
            self._ipset([ipset_create(s) for s in sources])
        chains = {
            f: render_chains(
                ir, self._interfaces, self.nflog_group, self._uplinks, self.transit_dscp, f
            )
            for f in self.families
        }
        rules_changed = self._apply_chains(chains, full or self._chains is None)
        if sources_changed:
            # After the chains: a pod in the sources set passes the unprogrammed check
            # (unprogrammed.py), so it goes in only once its own rules are in place. And
            # a pod's address before its interface: an interface in the links set whose
            # pod's address is not yet in the sources set would have its traffic dropped.
            self._ipset(swap_script(reversed(sources)))
        # After the chains: a transit pod is marked (so trusted by its own node) only
        # once its ingress is judged here.
        if transit_changed:
            self._ipset(swap_script(transit))
        wanted = {s.name for s in (*self._peer_sets(ir), *peers, *transit, *sources)}
        self._destroy_stale_sets(wanted)
        return rules_changed

    def _peer_sets(self, ir: NodeIR) -> list[IpSet]:
        """Every peer set of every family, with its members."""
        return [s for f in self.families for s in render_sets(ir, f).values()]

    def _fit(self, ir: NodeIR) -> tuple[NodeIR, list[Overflow]]:
        """The IR to program, and the peer sets bigger than `max_set_elements`: the
        endpoints whose rules use one deny everything (capacity.py)."""
        too_big = {
            (sid, family): wanted
            for sid, members in ir.members.items()
            for family in self.families
            if (wanted := family_count(members, family)) > self.max_set_elements
        }
        if not too_big:
            return ir, []
        users = sets_users(ir)
        overflows = []
        for (sid, family), wanted in sorted(too_big.items()):
            refs = tuple(sorted(users.get(sid, ())))
            overflows.append(
                Overflow(
                    f"ipset {set_name(sid, family)}",
                    self.max_set_elements,
                    wanted,
                    refs,
                    policies_of(ir, refs),
                )
            )
        return closed(ir, {r for o in overflows for r in o.endpoints}), overflows

    def capacity_exceeded(self) -> list[Overflow]:
        return self._overflows.latest()

    def _grown(self, ir: NodeIR, change: IRDiff, family: int) -> list[str]:
        """`family`'s sets the change grows past the size they were built with: rebuilt
        whole."""
        present = set(family_sets(ir, family))
        return sorted(
            sid
            for sid in change.members
            if sid in present
            and render_set(ir, sid, family).maxelem
            > self._sizes.get(set_name(sid, family), DEFAULT_MAXELEM)
        )

    def _transit_sets(self, ir: NodeIR) -> tuple[list[IpSet], list[IpSet]]:
        """The transit mark's sets (transit_mark.py) of every family: (peer nodes,
        transit pods)."""
        if not self.transit_dscp:
            return [], []
        both = [transit_mark.render_sets(ir, f) for f in self.families]
        return [s for p, _ in both for s in p], [s for _, t in both for s in t]

    @staticmethod
    def _ipset(lines: list[str]) -> None:
        if lines:
            _run(["ipset", "restore"], script_text(lines))

    def _apply_chains(self, chains: dict[int, dict[str, list[str]]], full: bool) -> bool:
        """Each family's chains in one (ip6)iptables-restore transaction, when they
        changed (or on a full sync, which also deletes chains we no longer use and
        restores the jump): IPv4's, then IPv6's."""
        before = self._chains or {}
        changed = chains != before
        for family, family_chains in chains.items():
            if family_chains != before.get(family) or full:
                self._restore(family, family_chains, full, before.get(family))
        self._chains = chains
        if (changed or full) and not self._retired:
            # Ours are in place first: enforcement never pauses across the upgrade.
            for what in self._remove_chains(4, RETIRED_TABLE):
                log.info("removed %s, left by an older agent", what)
            self._retired = True
        return changed

    def _restore(
        self,
        family: int,
        chains: dict[str, list[str]],
        full: bool,
        before: dict[str, list[str]] | None,
    ) -> None:
        with self._counters_lock:
            save = self._read_counters(family)  # the restore zeroes every chain it declares
            stale = chains_in(save) if full else set(before or ())
            _run(
                [self._tool(family, "restore"), "--noflush", "-w"],
                restore_text(Ruleset(chains, {}), stale),
            )
            self._counters.forget((family, source) for source, _, _ in counted_rules(save))
        self.jumps[family].keep(self._tool(family))

    def _read_counters(self, family: int) -> str:
        """Feeds the totals; returns the `iptables-save -c` (`ip6tables-save -c`) text
        it read."""
        save = _run([self._tool(family, "save"), "-c", "-t", TABLE])
        for source, labels, packets in counted_rules(save):
            self._counters.observe((family, source), (*labels, family), packets)
        return save

    def datapath_counters(self) -> DatapathCounters:
        """Drops by direction, reason, namespace and family; allowed packets are not
        counted (no rule sees every admitted packet: replies pass the shared ESTABLISHED
        rule)."""
        with self._counters_lock:
            for family in self.families:
                self._read_counters(family)
            totals = self._counters.totals()
        return split_audit(totals)

    def map_entries(self) -> dict[str, int]:
        return {}

    def conntrack_entries(self) -> int | None:
        return conntrack.entry_count()

    def remove_denied(
        self,
        ir: NodeIR,
        gone: frozenset[IPAddress] = frozenset(),
        touching: frozenset[IPAddress] | None = None,
    ) -> int:
        """Conntrack entries of connections the IR no longer admits (netfilter's), and
        of addresses whose pod went."""
        return conntrack.remove_denied(ir, node_addresses(), gone, touching)

    def rule_count(self) -> int:
        """Both families' rules."""
        return sum(self.rules_by_family().values())

    def rules_by_family(self) -> dict[int, int]:
        chains = self._chains or {}
        return {f: sum(map(len, chains.get(f, {}).values())) for f in self.families}

    def _existing_chains(self, family: int, table: str = TABLE) -> set[str]:
        return chains_in(_run([self._tool(family, "save"), "-t", table]))

    @property
    def jumps_restored(self) -> int:
        return sum(jump.restored for jump in self.jumps.values())

    def _ebpf_transit(self, family: int) -> bool:
        """Whether the eBPF backend's jump to the transit chain is in `family`'s FORWARD."""
        check = [self._tool(family), "-w", "-t", TABLE, "-C", *transit_mark.STANDALONE_JUMP]
        return subprocess.run(check, capture_output=True).returncode == 0

    def _remove_chains(self, family: int, table: str, keep_transit: bool = False) -> list[str]:
        """Our jump and chains in `family`'s `table`: what cleanup removes, and what an
        agent from before the move to mangle left in filter."""
        removed = []
        where = table if family == 4 else f"{table}, IPv6"
        iptables = [self._tool(family), "-w", "-t", table]
        while subprocess.run([*iptables, "-D", *JUMP], capture_output=True).returncode == 0:
            removed.append(f"jump from FORWARD ({where})")
        chains = sorted(
            self._existing_chains(family, table) - ({transit_mark.CHAIN} if keep_transit else set())
        )
        if chains:
            _run([self._tool(family, "restore"), "--noflush", "-w"], cleanup_text(chains, table))
            removed += [f"chain {c} ({where})" for c in chains]
        return removed

    def _destroy_stale_sets(self, wanted: set[str]) -> None:
        # A full apply read the kernel's sets as it began; every set made since is wanted.
        present = self._set_names
        stale = sorted(n for n in present - wanted if ours(n))
        self._set_names = set(wanted)
        for line in destroy_script(stale):
            # One at a time: a set still in use (a rule of another chain) must not stop
            # the others going.
            proc = subprocess.run(
                ["ipset", "restore"],
                input=script_text([line]),
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                log.warning("cannot %s: %s", line, proc.stderr.strip())

    @staticmethod
    def _existing_sets() -> list[str]:
        return [n for n in _run(["ipset", "list", "-n"]).split() if ours(n)]

    def cleanup(self) -> list[str]:
        """Remove everything this backend added, in both families: the jumps, the
        chains, the sets. A family's transit chain and its sets stay while the eBPF
        backend's own jump to them does: they are that backend's (its DaemonSet's init
        container runs this cleanup on every start, with the eBPF agent's rules in
        place)."""
        removed, kept_sets = [], set()
        for family in self.families:
            kept = self._ebpf_transit(family)
            removed += self._remove_chains(family, TABLE, kept)
            if kept:
                kept_sets.update(transit_mark.sets(family))
        removed += self._remove_chains(4, RETIRED_TABLE)
        sets = sorted(set(self._existing_sets()) - kept_sets)
        self._ipset(destroy_script(sets))
        removed += [f"set {name}" for name in sets]
        self._chains, self._set_names = None, set()
        return removed
