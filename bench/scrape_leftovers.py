#!/usr/bin/env python3
"""What 10 s of bench/scrape_load.py's 50 scrapers leave behind (iptables): the agents'
CPU while idle before and after, each node's conntrack entries after, and 20 relabels'
median latency and the agents' CPU share before the scrapers, after them, and after the
scrape connections' conntrack entries are deleted. Run as root from the repository:

    .venv/bin/python bench/scrape_leftovers.py

Prints one line per figure (docs/benchmarks.md, "Scrapes against programming"). Leaves
no lab behind."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.programming import PICKET, Bench, latency_pair, run, time_relabels, wait_ready  # noqa: E402
from bench.scrape_load import NODES, Scrapers, agent_cpu  # noqa: E402
from lab.config import LabNode  # noqa: E402


def relabels(bench: Bench, netns: str, ip: str) -> str:
    cpu, started = agent_cpu(), time.monotonic()
    latencies = sorted(time_relabels(bench, netns, ip, 20))
    share = (agent_cpu() - cpu) / (time.monotonic() - started)
    return f"p50 {1000 * latencies[10]:.0f} ms, agents' CPU {100 * share:.0f} %"


def idle_cpu(seconds: float = 10) -> str:
    cpu, started = agent_cpu(), time.monotonic()
    time.sleep(seconds)
    return f"{100 * (agent_cpu() - cpu) / (time.monotonic() - started):.1f} %"


def in_node(node: LabNode, *cmd: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", node.netns, *cmd], capture_output=True, text=True, check=False
    ).stdout.strip()


def main() -> None:
    run(PICKET, "lab", "down")
    try:
        up = run(
            PICKET, "lab", "up", "--nodes", "2", "--backend", "iptables", "--virtual-nodes", "10"
        )
        bench = Bench(up.strip().splitlines()[-1])
        bench.namespaces()
        bench.grow_pods(1000, 10)
        wait_ready(bench.core, 1000)
        bench.grow_policies(100)
        netns, ip = latency_pair(bench)
        time.sleep(10)
        print("relabels before the scrapers:", relabels(bench, netns, ip))
        print("agents idle before:", idle_cpu())
        with Scrapers():
            time.sleep(10)
        print("agents idle after:", idle_cpu())
        for node in NODES:
            print(f"{node.name} conntrack entries after:", in_node(node, "conntrack", "-C"))
        print("relabels after the scrapers:", relabels(bench, netns, ip))
        for node in NODES:
            in_node(node, "conntrack", "-D", "-p", "tcp", "--dport", "9402")
        print("relabels after deleting the scrape entries:", relabels(bench, netns, ip))
    finally:
        run(PICKET, "lab", "down")


if __name__ == "__main__":
    main()
