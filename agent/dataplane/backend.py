"""The small interface every backend implements; backends know nothing of the API.
Both consume the IR diff the loop computes (docs/agent.md, "The backend contract")."""

from __future__ import annotations

from typing import Protocol

from agent.compiler.diff import IRDiff
from agent.compiler.ir import NodeIR
from agent.dataplane.capacity import Overflow
from agent.dataplane.counters import DatapathCounters
from agent.model.objects import IPAddress


class Backend(Protocol):
    name: str
    mode: str

    def apply(self, ir: NodeIR, change: IRDiff | None = None, full: bool = True) -> bool:
        """Program `ir`. `change` is the diff from the IR programmed last, and all an
        incremental apply works from; a full apply (or one without `change`) rebuilds
        from `ir` and repairs drift against the kernel. Returns whether rules, not only
        set members or addresses, changed."""
        ...

    def remove_denied(
        self,
        ir: NodeIR,
        gone: frozenset[IPAddress] = frozenset(),
        touching: frozenset[IPAddress] | None = None,
    ) -> int:
        """Forget the connections `ir` no longer admits, and those with an end in `gone`
        (addresses whose pod went); returns how many. With `touching`, only connections
        with an end in it or in `gone` are judged (agent/compiler/narrowing.py)."""
        ...

    def rule_count(self) -> int: ...

    def rules_by_family(self) -> dict[int, int]:
        """Rules per address family (4, 6) where each family has rules of its own
        (iptables: each family's chains); empty where rules serve both families (eBPF:
        its policy entries, counted among its map entries)."""
        ...

    def capacity_exceeded(self) -> list[Overflow]:
        """The tables the last plan did not fit (capacity.py), each with the endpoints
        denied everything for it; empty when all fits. Safe to call from another thread."""
        ...

    @property
    def jumps_restored(self) -> int:
        """Times the jump into Picket's chain was displaced or removed and put back
        first (agent/dataplane/first_jump.py); safe to read from another thread."""
        ...

    def datapath_counters(self) -> DatapathCounters:
        """Packets dropped (by direction, reason, namespace, family) and allowed (by
        direction, family), since the agent started; safe to call from another thread."""
        ...

    def map_entries(self) -> dict[str, int]:
        """Entries per kernel map (eBPF); empty for backends without maps."""
        ...

    def conntrack_entries(self) -> int | None:
        """Connections in the kernel's table for this namespace (both backends use it)."""
        ...

    def cleanup(self) -> list[str]:
        """Remove everything the backend programmed; say what went."""
        ...
