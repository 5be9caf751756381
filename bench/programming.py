#!/usr/bin/env python3
"""Programming figures for both backends, in the lab, in one run (root, repository root):

    .venv/bin/python bench/programming.py [--backends iptables,ebpf] [--ip-families 4,6 ...]

For 10 / 100 / 1,000 policies over 1,000 and 10,000 pods (most of them on virtual
nodes: API objects with addresses, no namespaces) it reports each agent's full-sync
duration (snapshot + compile + program, from node-1's log of its periodic full syncs)
and the rules or map entries it programmed; then, per backend, the relabel-to-enforced
latency (from the API write of a pod relabel to the first probe that observes the new
verdict) and the agent's own sync time for those relabels, p50/p99. All of it once per
lab address-family setting (`--ip-families`, repeatable: by default an IPv4-only lab and
a dual-stack one, where every pod has two addresses and every set, rule or map entry
of an address exists per family; the dual-stack relabel probes go over IPv6). Prints
Markdown for docs/benchmarks.md. Leaves no lab behind."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.config import pod_netns  # noqa: E402
from lab.probe import probe  # noqa: E402

PICKET = str(Path(sys.executable).parent / "picket")
NAMESPACES = 50
APPS = 20
LOG = Path("/run/picket-lab/logs/agent-node-1.log")
SERVER_LOG = Path("/run/picket-lab/logs/agent-node-2.log")  # the latency server's node
SYNC_LINE = re.compile(r"full sync: (\d+) endpoints, (\d+) sets, (\d+) rules \(([\d.]+) ms\)")
INCREMENTAL_LINE = re.compile(r"incremental sync: .*\(([\d.]+) ms\)")


def run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def pod(ns: str, name: str, node: str, labels: dict[str, str]) -> dict:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "agnhost", "ports": [{"containerPort": 80}]}],
        },
    }


def policy(j: int) -> dict:
    """Policy j selects app a<j%20> in namespace bench-<j%50> and admits two peers."""
    return {
        "metadata": {"name": f"p{j}"},
        "spec": {
            "podSelector": {"matchLabels": {"app": f"a{j % APPS}"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"team": f"t{j % 10}"}},
                            "podSelector": {"matchLabels": {"app": f"a{(j + 1) % APPS}"}},
                        },
                        {"podSelector": {"matchLabels": {"tier": f"t{j % 7}"}}},
                    ],
                    "ports": [{"port": 80}, {"port": 8000, "endPort": 8100}],
                }
            ],
            "egress": [
                {
                    "to": [{"namespaceSelector": {"matchLabels": {"team": f"t{(j + 3) % 10}"}}}],
                    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 443}],
                }
            ],
        },
    }


class Bench:
    def __init__(self, kubeconfig: str) -> None:
        api = config.new_client_from_config(kubeconfig)
        self.core, self.net = client.CoreV1Api(api), client.NetworkingV1Api(api)
        self.pool = ThreadPoolExecutor(16)
        self.pods = 0
        self.policies = 0

    def namespaces(self) -> None:
        for k in range(NAMESPACES):
            self.core.create_namespace(
                {"metadata": {"name": f"bench-{k}", "labels": {"team": f"t{k % 10}"}}}
            )

    def grow_pods(self, total: int, virtual_nodes: int) -> None:
        """Real-node pods first (20 of them, the ones policies are enforced on), then
        virtual ones."""

        def make(i: int) -> None:
            ns = f"bench-{i % NAMESPACES}"
            node = f"node-{1 + i % 2}" if i < 20 else f"vnode-{1 + i % virtual_nodes}"
            labels = {"app": f"a{i % APPS}", "tier": f"t{i % 7}"}
            self.core.create_namespaced_pod(
                ns, pod(ns, f"p{i}", node, labels), _preload_content=False
            )

        list(self.pool.map(make, range(self.pods, total)))
        self.pods = total

    def grow_policies(self, total: int) -> None:
        def make(j: int) -> None:
            self.net.create_namespaced_network_policy(
                f"bench-{j % NAMESPACES}", policy(j), _preload_content=False
            )

        list(self.pool.map(make, range(self.policies, total)))
        self.policies = total


def full_syncs_after(mark: int, count: int, timeout: float = 300) -> list[tuple[int, ...]]:
    """The next `count` full-sync log lines of node-1's agent after byte offset `mark`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = SYNC_LINE.findall(LOG.read_text()[mark:])
        if len(found) >= count:
            return [(int(e), int(s), int(r), float(ms)) for e, s, r, ms in found[:count]]
        time.sleep(1)
    raise TimeoutError("the agent logged no full sync")


def wait_ready(core: client.CoreV1Api, total: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = json.loads(
            core.list_pod_for_all_namespaces(label_selector="app", _preload_content=False).data
        )["items"]
        if sum(bool((p.get("status") or {}).get("podIP")) for p in items) >= total:
            return
        time.sleep(1)
    raise TimeoutError("pods did not get addresses")


async def wait_verdict(netns: str, ip: str, want: bool, timeout: float = 10.0) -> float:
    """Probe until the verdict is `want`; returns when the deciding probe started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = time.monotonic()
        result = await probe(netns, ip, 80, "TCP", timeout=0.05)
        if result.connected == want:
            return started
    raise TimeoutError("verdict did not change")


def relabel_latency(bench: Bench, rounds: int, family: int) -> list[float]:
    """In a namespace of its own (no bench policy selects its pods), a client on node-1
    and a server on node-2 that admits only peers labelled picket-bench=allowed: flip the
    client's label and time the new verdict over `family`, while the cluster holds every
    bench pod and policy."""
    netns, ip = latency_pair(bench, family)
    return time_relabels(bench, netns, ip, rounds)


def latency_pair(bench: Bench, family: int) -> tuple[str, str]:
    """The client's namespace and the server's address of `family` of relabel_latency's
    pair, the server's policy enforced (the client is denied)."""
    bench.core.create_namespace({"metadata": {"name": "latency"}})
    for name, node in (("client", "node-1"), ("server", "node-2")):
        bench.core.create_namespaced_pod(
            "latency", pod("latency", name, node, {"role": name}), _preload_content=False
        )
    bench.net.create_namespaced_network_policy(
        "latency",
        {
            "metadata": {"name": "server"},
            "spec": {
                "podSelector": {"matchLabels": {"role": "server"}},
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"picket-bench": "allowed"}}}]}
                ],
            },
        },
    )
    deadline = time.monotonic() + 60
    while True:
        pods = {
            p["metadata"]["name"]: p
            for p in json.loads(
                bench.core.list_namespaced_pod("latency", _preload_content=False).data
            )["items"]
        }
        if all((p.get("status") or {}).get("podIP") for p in pods.values()) and len(pods) == 2:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("latency pods did not start")
        time.sleep(0.5)
    netns = pod_netns(pods["client"]["metadata"]["uid"])
    ips = [a["ip"] for a in pods["server"]["status"]["podIPs"]]
    ip = next(a for a in ips if (6 if ":" in a else 4) == family)
    asyncio.run(wait_verdict(netns, ip, False, 30))
    return netns, ip


def time_relabels(bench: Bench, netns: str, ip: str, rounds: int) -> list[float]:
    """Seconds from each relabel's API write to the probe that sees its verdict; the
    client starts and ends denied (`rounds` even)."""
    latencies = []
    for i in range(rounds):
        allowed = i % 2 == 0
        value = "allowed" if allowed else None
        written = time.monotonic()
        bench.core.patch_namespaced_pod(
            "client",
            "latency",
            {"metadata": {"labels": {"picket-bench": value}}},
            _preload_content=False,
        )
        latencies.append(asyncio.run(wait_verdict(netns, ip, allowed)) - written)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(
    backend: str,
    families: str,
    pod_steps: list[int],
    policy_steps: list[int],
    rounds: int,
    virtual: int,
) -> tuple[list[tuple], list[float], list[float]]:
    """One backend's rows in a lab of `families`, relabel-to-enforced latencies (over
    the last family), and the agent's own sync durations for those relabels."""
    rows = []
    run(PICKET, "lab", "down")
    try:
        up = run(
            PICKET,
            "lab",
            "up",
            "--nodes",
            "2",
            "--backend",
            backend,
            "--virtual-nodes",
            str(virtual),
            "--ip-families",
            families,
        )
        bench = Bench(up.strip().splitlines()[-1])
        bench.namespaces()
        for pods in pod_steps:
            bench.grow_pods(pods, virtual)
            wait_ready(bench.core, pods)
            for policies in policy_steps:
                bench.grow_policies(policies)
                mark = len(LOG.read_text())
                # The first full sync after the change may still be catching up; take the
                # second, a steady-state full sync of the whole state.
                _, (endpoints, sets, rules, ms) = full_syncs_after(mark, 2)
                rows.append((policies, pods, endpoints, sets, rules, ms))
                print(f"{backend} measured: {rows[-1]}", file=sys.stderr, flush=True)
            bench.policies = _reset_policies(bench, bench.policies)
        marks = {log: len(log.read_text()) for log in (LOG, SERVER_LOG)}
        latencies = relabel_latency(bench, rounds, int(families.split(",")[-1]))
        # The server's node decides the new verdict: its agent's syncs are the figure.
        syncs = [
            float(ms)
            for ms in INCREMENTAL_LINE.findall(SERVER_LOG.read_text()[marks[SERVER_LOG] :])
        ]
    finally:
        run(PICKET, "lab", "down")
    return rows, latencies, syncs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backends", default="iptables,ebpf")
    p.add_argument(
        "--ip-families",
        action="append",
        help="a lab's families (repeatable; default: 4, then 4,6)",
    )
    p.add_argument("--rounds", type=int, default=40, help="relabels timed")
    p.add_argument("--pods", default="1000,10000")
    p.add_argument("--policies", default="10,100,1000")
    args = p.parse_args()
    pod_steps = [int(x) for x in args.pods.split(",")]
    policy_steps = [int(x) for x in args.policies.split(",")]
    backends = args.backends.split(",")
    settings = args.ip_families or ["4", "4,6"]
    virtual = 40
    results = {
        (b, f): measure(b, f, pod_steps, policy_steps, args.rounds, virtual)
        for f in settings
        for b in backends
    }
    print(
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
        f"Python {platform.python_version()}; 2 lab nodes and {virtual} virtual nodes; "
        "figures from node-1's agent; one run.\n"
    )
    for families in settings:
        print_tables(families, backends, results, args.rounds, pod_steps[-1], policy_steps[-1])


def print_tables(
    families: str, backends: list[str], results: dict, rounds: int, pods: int, policies: int
) -> None:
    """The full-sync table and the relabel table of the lab of `families`."""
    what = "IPv4 only" if families == "4" else f"families {families}"
    print(f"Lab {what} (`--ip-families {families}`):\n")
    head = " | ".join(f"{b} rules or map entries | {b} full sync ms" for b in backends)
    print(f"| policies | pods | local endpoints | peer sets | {head} |")
    print("|---|---|---|---|" + "---|---|" * len(backends))
    rows = {b: results[b, families][0] for b in backends}
    for i, (n, total, endpoints, sets, _, _) in enumerate(rows[backends[0]]):
        cells = " | ".join(f"{rows[b][i][4]} | {rows[b][i][5]:.0f}" for b in backends)
        print(f"| {n} | {total} | {endpoints} | {sets} | {cells} |")
    over = f"IPv{families.split(',')[-1]}"
    print(f"\nRelabels ({rounds} each, {pods} pods, {policies} policies, probed over {over}):\n")
    print("| backend | relabel to enforced p50 ms | p99 ms | max ms | agent sync p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for b in backends:
        ms = [1000 * v for v in results[b, families][1]]
        syncs = results[b, families][2] or [0.0]
        print(
            f"| {b} | {percentile(ms, 0.5):.0f} | {percentile(ms, 0.99):.0f} | "
            f"{max(ms):.0f} | {percentile(syncs, 0.5):.1f} | {percentile(syncs, 0.99):.1f} |"
        )
    print()


def _reset_policies(bench: Bench, count: int) -> int:
    """Keep the policies: each pod step measures every policy count from scratch."""

    def delete(j: int) -> None:
        bench.net.delete_namespaced_network_policy(
            f"p{j}", f"bench-{j % NAMESPACES}", _preload_content=False
        )

    if count and bench.pods < 10000:
        list(bench.pool.map(delete, range(count)))
        return 0
    return count


if __name__ == "__main__":
    main()
