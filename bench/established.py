#!/usr/bin/env python3
"""How soon an established connection stops after a policy forbids it (run as root):

    .venv/bin/python bench/established.py --backend iptables [--rounds 20]

On the 3x3 model over two nodes, a client in x/a keeps a TCP connection to y/b:80 and
sends a line every 10 ms; a policy admitting only x/c into y/b is written to the API.
The figure is the time from that write to the first line that got no answer. Prints
Markdown for docs/benchmarks.md. Leaves no lab behind."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.config import pod_netns  # noqa: E402
from lab.netns import socket_in  # noqa: E402

PICKET = str(Path(sys.executable).parent / "picket")
MODEL = ROOT / "tests" / "lab" / "manifests" / "model.yaml"
POLICY = {
    "metadata": {"name": "only-x-c"},
    "spec": {
        "podSelector": {"matchLabels": {"pod": "b"}},
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {"matchLabels": {"ns": "x"}},
                        "podSelector": {"matchLabels": {"pod": "c"}},
                    }
                ]
            }
        ],
    },
}


def run(*cmd: str, env: dict | None = None) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout


async def stop_time(netns: str, ip: str, written: list[float], write: callable) -> float:
    """Keep one connection busy; write the policy once it carries data; return how long
    after the write the first unanswered line was sent."""
    loop = asyncio.get_running_loop()
    sock = socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
    await loop.sock_connect(sock, (ip, 80))
    await loop.sock_recv(sock, 100)
    try:
        for i in range(100000):
            sent = time.monotonic()
            await loop.sock_sendall(sock, b"ping\n")
            try:
                await asyncio.wait_for(loop.sock_recv(sock, 100), 0.5)
            except TimeoutError:
                return sent - written[0]
            if i == 20:
                write()
            await asyncio.sleep(0.01)
        raise RuntimeError("the connection never stopped")
    finally:
        sock.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backend", default="iptables")
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    run(PICKET, "lab", "down")
    figures = []
    try:
        kubeconfig = (
            run(PICKET, "lab", "up", "--nodes", "2", "--backend", args.backend)
            .strip()
            .splitlines()[-1]
        )
        env = {**os.environ, "KUBECONFIG": kubeconfig}
        run("kubectl", "apply", "-f", str(MODEL), env=env)
        run(
            "kubectl",
            "wait",
            "--for=condition=Ready",
            "pod",
            "--all",
            "-A",
            "--timeout=60s",
            env=env,
        )
        api = config.new_client_from_config(kubeconfig)
        core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
        src = json.loads(core.read_namespaced_pod("a", "x", _preload_content=False).data)
        dst = json.loads(core.read_namespaced_pod("b", "y", _preload_content=False).data)
        netns, ip = pod_netns(src["metadata"]["uid"]), dst["status"]["podIP"]
        for _ in range(args.rounds):
            written = [0.0]

            def write(written: list[float] = written) -> None:
                written[0] = time.monotonic()
                net.create_namespaced_network_policy("y", POLICY, _preload_content=False)

            figures.append(asyncio.run(stop_time(netns, ip, written, write)))
            net.delete_namespaced_network_policy("only-x-c", "y", _preload_content=False)
            time.sleep(0.5)
    finally:
        run(PICKET, "lab", "down")
    ms = sorted(1000 * f for f in figures)
    print(
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
        f"Python {platform.python_version()}; backend {args.backend}; {len(ms)} rounds.\n"
    )
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    print(
        f"Established connection stopped after the policy write: p50 "
        f"{statistics.median(ms):.0f} ms, p99 {p99:.0f} ms, max {ms[-1]:.0f} ms "
        "(a line every 10 ms; API write to first unanswered line)."
    )


if __name__ == "__main__":
    main()
