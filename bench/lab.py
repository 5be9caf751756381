#!/usr/bin/env python3
"""Lab timings (issue: the lab): up to a ready 3x3 model, and the full 9x9 matrix when
every pair connects and when every probe times out. Run as root from the repository:

    .venv/bin/python bench/lab.py [--runs 3]

Prints a Markdown table for docs/benchmarks.md. Leaves no lab behind."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PICKET = str(Path(sys.executable).parent / "picket")
MODEL = ROOT / "tests" / "lab" / "manifests" / "model.yaml"


def run(*cmd: str, env: dict | None = None) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout


def timed(*cmd: str, env: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    out = run(*cmd, env=env)
    return time.perf_counter() - start, out


def up_to_ready() -> tuple[float, dict]:
    run(PICKET, "lab", "down")
    start = time.perf_counter()
    kubeconfig = run(PICKET, "lab", "up", "--nodes", "2").strip().splitlines()[-1]
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    run("kubectl", "apply", "-f", str(MODEL), env=env)
    run("kubectl", "wait", "--for=condition=Ready", "pod", "--all", "-A", "--timeout=60s", env=env)
    return time.perf_counter() - start, env


def matrix(port: int, protocol: str) -> tuple[float, dict]:
    seconds, out = timed(
        PICKET,
        "lab",
        "matrix",
        "--namespaces",
        "x,y,z",
        "--port",
        str(port),
        "--protocol",
        protocol,
        "--json",
    )
    return seconds, json.loads(out)["results"]


def count(results: dict, value: bool) -> int:
    return sum(v == value for row in results.values() for v in row.values())


def blackhole(env: dict, port: int, add: bool) -> None:
    """Drop `port` inside every pod's own namespace, so that every probe times out."""
    pods = json.loads(run("kubectl", "get", "pods", "-A", "-o", "json", env=env))["items"]
    for pod in pods:
        ref = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        for proto in ("tcp", "udp", "sctp"):
            run(
                PICKET,
                "lab",
                "exec",
                ref,
                "--",
                "iptables",
                "-A" if add else "-D",
                "INPUT",
                "-p",
                proto,
                "--dport",
                str(port),
                "-j",
                "DROP",
            )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    rows: dict[str, list[float]] = {}
    try:
        for _ in range(args.runs):
            seconds, env = up_to_ready()
            rows.setdefault("lab up + 3x3 model applied and Ready", []).append(seconds)
            for protocol in ("TCP", "UDP", "SCTP"):
                seconds, results = matrix(80, protocol)
                assert count(results, True) == 72, results
                rows.setdefault(f"9x9 matrix, all connect ({protocol})", []).append(seconds)
            blackhole(env, 81, add=True)
            for protocol in ("TCP", "UDP", "SCTP"):
                seconds, results = matrix(81, protocol)
                assert count(results, False) == 72, results
                rows.setdefault(f"9x9 matrix, all time out, 1 s timeout ({protocol})", []).append(
                    seconds
                )
            blackhole(env, 81, add=False)
    finally:
        run(PICKET, "lab", "down")
    print(
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
        f"Python {platform.python_version()}; {args.runs} runs; wall-clock seconds of the "
        "whole command, process start included.\n"
    )
    print("| measurement | median s | max s |")
    print("|---|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.2f} | {max(values):.2f} |")


if __name__ == "__main__":
    main()
