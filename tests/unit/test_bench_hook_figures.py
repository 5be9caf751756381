"""bench/hook_figures.py: BPF run-time counters, packet counters and the tables that
bench/datapath_hook.py prints (the arithmetic, not the kernel)."""

from __future__ import annotations

import pytest

from bench.hook_figures import (
    BpfCost,
    RunStats,
    bpf_cost,
    costs_table,
    link_packets,
    markdown_table,
    program_stats,
    rates_table,
    spread,
    stats_delta,
)


def test_program_stats_sums_each_nodes_copy_and_ignores_other_programs():
    progs = [
        {"id": 1, "name": "picket_forward", "run_time_ns": 1000, "run_cnt": 4},
        {"id": 2, "name": "picket_forward", "run_time_ns": 500, "run_cnt": 1},
        {"id": 3, "name": "sd_fw_ingress", "run_time_ns": 99, "run_cnt": 9},
        {"id": 4, "name": "picket_to_pod"},  # never ran: bpftool leaves both fields out
        {"id": 5, "name": "picket_forward4", "run_time_ns": 70, "run_cnt": 2},  # issue #17
        {"id": 6, "name": "picket_forward6", "run_time_ns": 30, "run_cnt": 1},
    ]
    assert program_stats(progs) == {
        "picket_forward": RunStats(1500, 5),
        "picket_to_pod": RunStats(0, 0),
        "picket_forward4": RunStats(70, 2),
        "picket_forward6": RunStats(30, 1),
    }


def test_stats_delta_adds_every_program_and_counts_a_new_one_from_zero():
    before = {"picket_from_pod": RunStats(100, 1)}
    after = {"picket_from_pod": RunStats(400, 4), "picket_to_pod": RunStats(50, 2)}
    assert stats_delta(after, before) == RunStats(350, 5)


def test_link_packets_counts_both_directions_of_all_but_loopback():
    def link(kind: str, rx: int, tx: int) -> dict:
        return {"link_type": kind, "stats64": {"rx": {"packets": rx}, "tx": {"packets": tx}}}

    assert link_packets([link("loopback", 7, 7), link("ether", 10, 5)]) == 15


@pytest.mark.parametrize(
    ("delta", "packets", "want"),
    [
        (RunStats(1000, 10), 10, BpfCost(100.0, 1.0, 100.0)),  # FORWARD, one node
        (RunStats(1000, 20), 10, BpfCost(50.0, 2.0, 100.0)),  # two hooks per packet
    ],
)
def test_bpf_cost_per_run_and_per_packet(delta, packets, want):
    assert bpf_cost(delta, packets) == want


@pytest.mark.parametrize(("delta", "packets"), [(RunStats(0, 0), 10), (RunStats(5, 1), 0)])
def test_bpf_cost_refuses_an_empty_measurement(delta, packets):
    with pytest.raises(ValueError, match="nothing measured"):
        bpf_cost(delta, packets)


@pytest.mark.parametrize(
    ("values", "digits", "want"),
    [
        ([], 0, "-"),
        ([9.44], 2, "9.44"),
        ([3.0, 1.0, 2.0], 0, "2 (1-3)"),
        ([1.0, 4.0], 1, "2.5 (1.0-4.0)"),
    ],
)
def test_spread_is_the_median_and_the_range(values, digits, want):
    assert spread(values, digits) == want


def test_markdown_table():
    assert markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_rates_table_rounds_gbits_to_two_decimals_and_rates_to_whole_numbers():
    rates = {("none", "bulk (Gbit/s)"): [10.0, 12.345], ("none", "new connections/s"): [900.4]}
    table = rates_table(rates, ["none", "ebpf"], ["bulk (Gbit/s)", "new connections/s"])
    assert table.splitlines()[2:] == [
        "| none | 11.17 (10.00-12.35) | 900 |",
        "| ebpf | - | - |",
    ]


def test_costs_table_leaves_per_connection_empty_for_bulk_loads():
    costs = {"bulk": [BpfCost(400, 1, 400)], "connect": [BpfCost(450, 2, 900)]}
    table = costs_table(costs, {"connect": [3600.0]})
    assert table.splitlines()[2:] == [
        "| bulk | 1.00 | 400 | 400 | - |",
        "| connect | 2.00 | 450 | 900 | 3600 |",
    ]
