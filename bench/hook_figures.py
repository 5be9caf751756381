"""Pure arithmetic and formatting for bench/datapath_hook.py: BPF run-time counters
from `bpftool -j prog show`, packet counters from `ip -j -s link show`, medians with
their range, and the Markdown tables. No I/O, so tests/unit can check it."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

# Entry points of every eBPF datapath: round 1's two TC programs on each pod's host-side
# veth, the BPF netfilter program at FORWARD, and since issue #17 one per family there.
# bpftool shows names cut at 15 bytes.
PICKET_PROGRAMS = frozenset(
    {"picket_from_pod", "picket_to_pod", "picket_forward", "picket_forward4", "picket_forward6"}
)


@dataclass(frozen=True)
class RunStats:
    """What the kernel counts for a program while kernel.bpf_stats_enabled is 1."""

    run_time_ns: int = 0
    run_cnt: int = 0

    def __sub__(self, other: RunStats) -> RunStats:
        return RunStats(self.run_time_ns - other.run_time_ns, self.run_cnt - other.run_cnt)

    def __add__(self, other: RunStats) -> RunStats:
        return RunStats(self.run_time_ns + other.run_time_ns, self.run_cnt + other.run_cnt)


def program_stats(
    progs: Iterable[Mapping[str, Any]], names: frozenset[str] = PICKET_PROGRAMS
) -> dict[str, RunStats]:
    """Run time and count per program name, summed over every loaded copy (each node's
    agent loads its own). bpftool leaves both fields out while a program never ran."""
    out: dict[str, RunStats] = {}
    for prog in progs:
        name = prog.get("name")
        if name in names:
            seen = RunStats(int(prog.get("run_time_ns", 0)), int(prog.get("run_cnt", 0)))
            out[name] = out.get(name, RunStats()) + seen
    return out


def stats_delta(after: Mapping[str, RunStats], before: Mapping[str, RunStats]) -> RunStats:
    """Run time and count all programs added between two readings."""
    total = RunStats()
    for name, stats in after.items():
        total += stats - before.get(name, RunStats())
    return total


def link_packets(links: Iterable[Mapping[str, Any]]) -> int:
    """Packets received plus sent by every interface but loopback (a pod has one)."""
    return sum(
        link["stats64"]["rx"]["packets"] + link["stats64"]["tx"]["packets"]
        for link in links
        if link.get("link_type") != "loopback"
    )


class BpfCost(NamedTuple):
    ns_per_run: float
    runs_per_packet: float
    ns_per_packet: float


def bpf_cost(delta: RunStats, packets: int) -> BpfCost:
    """Per program run, and per packet the pod sent or received (one packet runs one
    program per hook it crosses: FORWARD once per node, TC at both ends)."""
    if delta.run_cnt <= 0 or packets <= 0:
        raise ValueError(f"nothing measured: {delta.run_cnt} runs over {packets} packets")
    return BpfCost(
        delta.run_time_ns / delta.run_cnt,
        delta.run_cnt / packets,
        delta.run_time_ns / packets,
    )


def spread(values: Sequence[float], digits: int = 0) -> str:
    """Median with the range of the runs: '9.4 (9.1-9.8)'; one run: its value."""
    if not values:
        return "-"
    med, low, high = statistics.median(values), min(values), max(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def rates_table(
    rates: Mapping[tuple[str, str], Sequence[float]],
    backends: Sequence[str],
    loads: Sequence[str],
) -> str:
    """One row per backend, one column per load; Gbit/s to 2 decimals, rates whole."""
    return markdown_table(
        ["backend", *loads],
        (
            [b, *(spread(rates.get((b, n), []), 2 if "Gbit" in n else 0) for n in loads)]
            for b in backends
        ),
    )


def costs_table(
    costs: Mapping[str, Sequence[BpfCost]], per_connection_ns: Mapping[str, Sequence[float]]
) -> str:
    """One row per load the eBPF programs were timed under."""
    return markdown_table(
        ["load", "program runs per packet", "ns per run", "ns per packet", "ns per connection"],
        (
            [
                name,
                spread([c.runs_per_packet for c in runs], 2),
                spread([c.ns_per_run for c in runs]),
                spread([c.ns_per_packet for c in runs]),
                spread(per_connection_ns.get(name, [])),
            ]
            for name, runs in costs.items()
        ),
    )
