"""The transit mark for the eBPF backend (agent/dataplane/transit_mark.py says what it
is): one mangle chain, PICKET-TRANSIT, jumped from FORWARD, and its two ipsets.

Why iptables here: a BPF netfilter program cannot change the packet (no DSCP to set)
nor the connection (no mark to set), and both are what the mark is. The chain runs in
mangle FORWARD (priority -150), before the program (priority 10/11): it marks what the
program then judges (a denied packet is dropped, mark and all) and records the trust
the program then reads (the connection mark). The same rules, rendered by
transit_mark.py, are what the iptables backend jumps to from its own chain.

Per address family, as the programs are (one per family's FORWARD hook): IPv4's chain
in iptables with the `picket-` sets, IPv6's in ip6tables with the `picket6-` sets
(DSCP is the top six bits of IPv6's traffic class; connection marks are per
connection, whatever its family), each table in its own family's flavour."""

from __future__ import annotations

import subprocess

from agent.compiler.ir import NodeIR
from agent.dataplane.errors import DataplaneError
from agent.dataplane.first_jump import FirstJump
from agent.dataplane.ipset_render import (
    IpSet,
    destroy_script,
    ipset_create,
    script_text,
    swap_script,
)
from agent.dataplane.iptables_render import Ruleset, cleanup_text, restore_text
from agent.dataplane.iptables_tools import detect_mode, tool
from agent.dataplane.transit_mark import CHAIN, STANDALONE_JUMP, chain_rules, render_sets, sets

TABLE = "mangle"
JUMP = STANDALONE_JUMP


def _run(argv: list[str], stdin: str | None = None, check: bool = True) -> bool:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise DataplaneError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()}")
    return proc.returncode == 0


class TransitChain:
    """The chains of `families` and what is programmed, so that an unchanged chain or
    set is not written again."""

    def __init__(self, dscp: int, families: tuple[int, ...] = (4,)) -> None:
        self.dscp = dscp
        self._chains = {f: _FamilyChain(f) for f in families}

    @property
    def restored(self) -> int:
        """Times a jump was found displaced (both families'; picket_jump_restored_total)."""
        return sum(c.jump.restored for c in self._chains.values())

    def before_maps(self, ir: NodeIR, uplinks: tuple[str, ...], full: bool) -> None:
        """The peer nodes' set and the chain, before the maps are written: trust needs
        only the set; the transit set is created (the rule names it) but filled after."""
        if self.dscp:
            for chain in self._chains.values():
                chain.before_maps(ir, uplinks, self.dscp, full)

    def after_maps(self, ir: NodeIR, full: bool) -> None:
        """The transit set, once the program judges every address in it: a pod is
        marked for its own node only once this node judges its ingress."""
        if self.dscp:
            for chain in self._chains.values():
                chain.swap(render_sets(ir, chain.family)[1], full)

    def remove(self) -> list[str]:
        """Every family's jump, chain and sets (cleanup)."""
        return [what for chain in self._chains.values() for what in chain.remove()]


class _FamilyChain:
    """One family's chain, its jump and its sets."""

    def __init__(self, family: int) -> None:
        self.family = family
        self._mode: str | None = None
        self._rules: list[str] | None = None
        self._sets: dict[str, IpSet] = {}
        # First in FORWARD, checked on every sync.
        self.jump = FirstJump(TABLE, JUMP, family)

    def _tool(self, name: str = "") -> str:
        if self._mode is None:
            self._mode = detect_mode(self.family)
        return tool(self.family, self._mode, name)

    def before_maps(self, ir: NodeIR, uplinks: tuple[str, ...], dscp: int, full: bool) -> None:
        peers, transit = render_sets(ir, self.family)
        self.swap(peers, full)
        # An incremental sync that changes none of this runs no command.
        missing = [ipset_create(s) for s in transit if full or s.name not in self._sets]
        if missing:
            _run(["ipset", "restore"], script_text(missing))
        rules = chain_rules(ir, uplinks, dscp, self.family)
        if full or rules != self._rules:
            first = self._rules is None
            text = restore_text(Ruleset({CHAIN: rules}, {}), table=TABLE)
            _run([self._tool("restore"), "--noflush", "-w"], text)
            self._rules = rules
            if full or first:  # a full sync also repairs a removed jump
                self.jump.keep(self._tool())
        self._destroy_unused({s.name for s in (*peers, *transit)}, full)

    def swap(self, wanted: list[IpSet], full: bool) -> None:
        changed = [s for s in wanted if full or self._sets.get(s.name) != s]
        if changed:
            _run(["ipset", "restore"], script_text(swap_script(changed)))
            self._sets.update({s.name: s for s in changed})

    def _destroy_unused(self, wanted: set[str], full: bool) -> None:
        """After the chain that used them was rewritten without them (on a full sync
        also those an earlier agent left)."""
        mine = sets(self.family)
        for name in [n for n in mine if n not in wanted and (full or n in self._sets)]:
            _run(["ipset", "restore"], script_text(destroy_script([name])), check=False)
            self._sets.pop(name, None)

    def remove(self) -> list[str]:
        removed = []
        ipv6 = " (IPv6)" if self.family == 6 else ""
        iptables = [self._tool(), "-w", "-t", TABLE]
        while _run([*iptables, "-D", *JUMP], check=False):
            removed.append(f"jump from FORWARD to {CHAIN}{ipv6}")
        if _run([*iptables, "-S", CHAIN], check=False):
            _run([self._tool("restore"), "--noflush", "-w"], cleanup_text([CHAIN], TABLE))
            removed.append(f"chain {CHAIN} ({TABLE}{', IPv6' if ipv6 else ''})")
        for name in sets(self.family):
            if _run(["ipset", "restore"], script_text(destroy_script([name])), check=False):
                removed.append(f"set {name}")
        self._rules, self._sets = None, {}
        return removed
