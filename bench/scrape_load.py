#!/usr/bin/env python3
"""Scrapes against programming (issue #16: a scrape must cost the node nothing it can be
made to repeat). Run as root from the repository:

    .venv/bin/python bench/scrape_load.py [--backends iptables,ebpf] [--rounds 40]

Per backend, a 2-node lab holding 1,000 pods (on virtual nodes) and 100 policies, and
the relabel-to-enforced pair of bench/programming.py. Three phases of `--rounds`
relabels each: quiet, then with 50 scrapers each fetching every agent's /metrics every
100 ms, then quiet again (the run-to-run noise); for each, the relabel latency p50/p99
and the agents' CPU (percent of one CPU, over the phase), and for the scraped phase the
scrapes' own latency and how many were answered 503 (the server's caps). Prints
Markdown for docs/benchmarks.md. Leaves no lab behind."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.programming import (  # noqa: E402
    PICKET,
    Bench,
    latency_pair,
    percentile,
    run,
    time_relabels,
    wait_ready,
)
from lab import processes  # noqa: E402
from lab.config import LabNode, state_dir  # noqa: E402

SCRAPERS, EVERY = 50, 0.1
NODES = (LabNode(1), LabNode(2))


def agent_cpu() -> float:
    """CPU seconds both agents have used (utime + stime)."""
    total = 0.0
    for node in NODES:
        pid = processes.running(state_dir(), f"agent-{node.name}")
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Scrapers:
    """SCRAPERS threads, each fetching every agent's /metrics every EVERY seconds."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.seconds: list[float] = []
        self.busy = self.failed = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(SCRAPERS)]

    def _run(self) -> None:
        while not self.stop.is_set():
            for node in NODES:
                started = time.monotonic()
                try:
                    with urllib.request.urlopen(node.metrics_url, timeout=5) as resp:
                        resp.read()
                    self.seconds.append(time.monotonic() - started)
                except urllib.error.HTTPError as exc:
                    if exc.code == 503:
                        self.busy += 1
                    else:
                        self.failed += 1
                except OSError:
                    self.failed += 1
            self.stop.wait(EVERY)

    def __enter__(self) -> Scrapers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def phase(bench: Bench, netns: str, ip: str, rounds: int) -> tuple[list[float], float]:
    """The relabel latencies, and the share of one CPU the agents used meanwhile."""
    cpu, started = agent_cpu(), time.monotonic()
    latencies = time_relabels(bench, netns, ip, rounds)
    return latencies, (agent_cpu() - cpu) / (time.monotonic() - started)


def measure(backend: str, rounds: int) -> list[tuple[str, list[float], float, Scrapers | None]]:
    run(PICKET, "lab", "down")
    try:
        up = run(PICKET, "lab", "up", "--nodes", "2", "--backend", backend, "--virtual-nodes", "10")
        bench = Bench(up.strip().splitlines()[-1])
        bench.namespaces()
        bench.grow_pods(1000, 10)
        wait_ready(bench.core, 1000)
        bench.grow_policies(100)
        netns, ip = latency_pair(bench)
        time.sleep(10)  # the policies' syncs are done
        rows = [("quiet", *phase(bench, netns, ip, rounds), None)]
        with Scrapers() as scrapers:
            time.sleep(1)
            rows.append(("50 scrapers every 100 ms", *phase(bench, netns, ip, rounds), scrapers))
        rows.append(("quiet again", *phase(bench, netns, ip, rounds), None))
        return rows
    finally:
        run(PICKET, "lab", "down")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backends", default="iptables,ebpf")
    p.add_argument("--rounds", type=int, default=40, help="relabels per phase (even)")
    args = p.parse_args()
    started = time.monotonic()
    load = os.getloadavg()[0]
    results = {b: measure(b, args.rounds) for b in args.backends.split(",")}
    print(
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}; "
        f"{args.rounds} relabels per phase; the run took {time.monotonic() - started:.0f} s; "
        f"load average {load:.2f} before it.\n"
    )
    print(
        "| backend | phase | relabel to enforced p50 ms | p99 ms | agents' CPU % | "
        "scrapes | scrape p50 ms | p99 ms | 503 busy | failed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for backend, rows in results.items():
        for name, latencies, cpu, scrapers in rows:
            ms = [1000 * v for v in latencies]
            p50, p99 = percentile(ms, 0.5), percentile(ms, 0.99)
            cells = f"| {backend} | {name} | {p50:.0f} | {p99:.0f} | {100 * cpu:.0f} |"
            if scrapers is None or not scrapers.seconds:
                cells += " - | - | - | - | - |"
            else:
                s = [1000 * v for v in scrapers.seconds]
                cells += (
                    f" {len(s)} | {percentile(s, 0.5):.1f} | {percentile(s, 0.99):.1f} | "
                    f"{scrapers.busy} | {scrapers.failed} |"
                )
            print(cells)


if __name__ == "__main__":
    main()
