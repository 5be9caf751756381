#!/usr/bin/env python3
"""Established connections through a ClusterIP across policy changes, per backend (root,
repository root):

    .venv/bin/python bench/established_service.py [--backends iptables,ebpf]
        [--changes 100] [--rounds 20]

On the 3x3 model over two nodes, with the lab's kube-proxy, per backend:

- unrelated narrowing: an x pod (on the other node than y/b, where the lab put one)
  keeps a TCP connection to y/b through the ClusterIP of a Service selecting y/b
  (admitted by a policy on y/b) and sends a line every 10 ms, timing each echo, while
  `--changes` narrowing changes to z's pods are written one after the other (the
  ingress port of every z pod flips between 80 and 81, so each change removes one, and
  every agent holding a z pod judges its conntrack entries again). The next change is
  written once every node holding a z pod has logged a sync after the last one.
  Reported: lines, echoes slower than 100 ms (stalls), the slowest echo, and whether
  the connection was cut (no echo within 1 s).
- forbidding: an x pod on z/c's node and one on the other node, in turn, keep a
  connection to z/c through a Service's ClusterIP, a line every 10 ms; a policy
  admitting only z/a into z/c is written; the figure is the time from the API write to
  the last echo that arrived (the connection's last byte), and to the first line that
  got no echo within 1 s; then a second line must get none either (it stays stopped).
  The policy is deleted and the round repeats. "agent sync" is the duration z/c's
  node's agent logged for its first sync after the write.

Prints Markdown for docs/benchmarks.md. Leaves no lab behind."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.config import pod_netns, state_dir  # noqa: E402
from lab.kubeproxy.status import wait_programmed  # noqa: E402
from lab.netns import socket_in  # noqa: E402

PICKET = str(Path(sys.executable).parent / "picket")
MODEL = ROOT / "tests" / "lab" / "manifests" / "model.yaml"
NODES = ["node-1", "node-2"]
INTERVAL = 0.01  # seconds between lines
STALL = 0.1  # an echo slower than this is a stall
CUT = 1.0  # no echo within this: the connection carries no data
NEVER = 5.0  # seconds after the forbidding write: the round is given up (a finding)
SYNC_LINE = re.compile(r"incremental sync: .*\(([\d.]+) ms\)")


def run(*cmd: str, env: dict | None = None) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout


def agent_log(node: str) -> Path:
    return state_dir() / "logs" / f"agent-{node}.log"


def syncs(node: str) -> list[float]:
    """The agent's incremental syncs so far, as their durations in ms."""
    return [float(m.group(1)) for m in SYNC_LINE.finditer(agent_log(node).read_text())]


def wait_for_syncs(before: dict[str, int], timeout: float = 5.0) -> bool:
    """Until every node in `before` has logged more incremental syncs than it had."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(len(syncs(node)) > count for node, count in before.items()):
            return True
        time.sleep(0.005)
    return False


class Line:
    """A TCP connection from a pod's namespace; the lab's responder echoes each line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.last_echo = 0.0

    @classmethod
    async def open(cls, netns: str, ip: str, port: int) -> Line:
        loop = asyncio.get_running_loop()
        sock = socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
        await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), 2)
        await asyncio.wait_for(loop.sock_recv(sock, 100), 2)  # the identity line
        return cls(sock)

    async def echo(self, timeout: float = CUT) -> float | None:
        """Seconds until this line's echo, or None: none within `timeout` (or reset)."""
        loop = asyncio.get_running_loop()
        sent = time.monotonic()
        try:
            await loop.sock_sendall(self.sock, b"ping\n")
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 100), timeout)
        except (TimeoutError, OSError):
            return None
        if not data:
            return None
        self.last_echo = time.monotonic()
        return self.last_echo - sent

    def close(self) -> None:
        self.sock.close()


@dataclass
class Cluster:
    core: client.CoreV1Api
    net: client.NetworkingV1Api
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)

    def netns(self, ref: str) -> str:
        return pod_netns(self.pods[ref]["metadata"]["uid"])

    def node(self, ref: str) -> str:
        return self.pods[ref]["spec"]["nodeName"]

    def ip(self, ref: str) -> str:
        return self.pods[ref]["status"]["podIP"]


def clients(cluster: Cluster, server: str) -> dict[str, str]:
    """An x pod on `server`'s node and one on the other node, where the lab put them."""
    out: dict[str, str] = {}
    for ref in sorted(r for r in cluster.pods if r.startswith("x/")):
        where = "same node" if cluster.node(ref) == cluster.node(server) else "across nodes"
        out.setdefault(where, ref)
    return out


def up(backend: str) -> Cluster:
    run(PICKET, "lab", "down")
    out = run(PICKET, "lab", "up", "--nodes", "2", "--backend", backend)
    kubeconfig = out.strip().splitlines()[-1]
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    run("kubectl", "apply", "-f", str(MODEL), env=env)
    run("kubectl", "wait", "--for=condition=Ready", "pod", "--all", "-A", "--timeout=60s", env=env)
    api = config.new_client_from_config(kubeconfig)
    cluster = Cluster(client.CoreV1Api(api), client.NetworkingV1Api(api))
    items = json.loads(cluster.core.list_pod_for_all_namespaces(_preload_content=False).data)
    for pod in items["items"]:
        cluster.pods[f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"] = pod
    return cluster


def publish(cluster: Cluster, ns: str, name: str, pod: str, port: int) -> str:
    """A Service in `ns` selecting pod `pod` (label pod=<pod>), `port` -> 80; returns
    its ClusterIP once every node's kube-proxy DNATs it to the pod."""
    body = {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"pod": pod}, "ports": [{"port": port, "targetPort": 80}]},
    }
    cluster.core.create_namespaced_service(ns, body, _preload_content=False)
    backend = f"{cluster.ip(f'{ns}/{pod}')}:80"

    def ready(services: dict[str, Any]) -> bool:
        entry = (services.get(f"{ns}/{name}") or {}).get("ports", {}).get(f"{port}/TCP") or {}
        return backend in entry.get("endpoints", [])

    wait_programmed(state_dir(), NODES, ready)
    service = cluster.core.read_namespaced_service(name, ns, _preload_content=False)
    return json.loads(service.data)["spec"]["clusterIP"]


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


def write_narrowing(cluster: Cluster, i: int) -> None:
    """Change i: every z pod admits ingress on one port, 80 and 81 in turn (the first
    change isolates them)."""
    body = policy("narrowing", {"podSelector": {}, "ingress": [{"ports": [{"port": 80 + i % 2}]}]})
    if i == 0:
        cluster.net.create_namespaced_network_policy("z", body, _preload_content=False)
        return
    old = cluster.net.read_namespaced_network_policy("narrowing", "z", _preload_content=False)
    body["metadata"]["resourceVersion"] = json.loads(old.data)["metadata"]["resourceVersion"]
    cluster.net.replace_namespaced_network_policy("narrowing", "z", body, _preload_content=False)


async def unrelated_narrowing(
    cluster: Cluster, client_ref: str, ip: str, changes: int
) -> dict[str, Any]:
    z_nodes = sorted({cluster.node(ref) for ref in cluster.pods if ref.startswith("z/")})
    line = await Line.open(cluster.netns(client_ref), ip, 8082)
    echoes: list[float | None] = []
    done = asyncio.Event()

    async def pinger() -> None:
        while not done.is_set():
            echoes.append(await line.echo())
            if echoes[-1] is None:
                return
            await asyncio.sleep(INTERVAL)

    task = asyncio.create_task(pinger())
    before = {node: len(syncs(node)) for node in z_nodes}
    synced, cut_after, start = 0, None, time.monotonic()
    for i in range(changes):
        counts = {node: len(syncs(node)) for node in z_nodes}
        await asyncio.to_thread(write_narrowing, cluster, i)
        synced += await asyncio.to_thread(wait_for_syncs, counts)
        if task.done() and cut_after is None:
            cut_after = i + 1
    seconds = time.monotonic() - start
    await asyncio.sleep(0.5)  # echoes after the last change
    done.set()
    await task
    line.close()
    times = [e for e in echoes if e is not None]
    return {
        "lines": len(echoes),
        "stalls": sum(e > STALL for e in times),
        "slowest_ms": 1000 * max(times),
        "p99_ms": 1000 * sorted(times)[round(0.99 * (len(times) - 1))],
        "cut": echoes[-1] is None,
        "cut_after": cut_after,
        "changes_synced": synced,
        "syncs": {node: len(syncs(node)) - before[node] for node in z_nodes},
        "seconds": seconds,
        "client": client_ref,
    }


FORBID = policy(
    "c-from-a",
    {
        "podSelector": {"matchLabels": {"pod": "c"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}],
    },
)


async def reconnect(netns: str, ip: str, port: int, timeout: float = 10.0) -> Line:
    """A new connection once the last round's policy is gone from the agents."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await Line.open(netns, ip, port)
        except (TimeoutError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def stop_round(cluster: Cluster, client_ref: str, ip: str) -> dict[str, float]:
    line = await reconnect(cluster.netns(client_ref), ip, 8083)
    server = cluster.node("z/c")
    try:
        for _ in range(20):
            if await line.echo() is None:
                raise RuntimeError("the connection carried no data before the policy")
            await asyncio.sleep(INTERVAL)
        before = len(syncs(server))
        written = time.monotonic()
        await asyncio.to_thread(
            cluster.net.create_namespaced_network_policy, "z", FORBID, _preload_content=False
        )
        while True:
            sent = time.monotonic()
            if await line.echo() is None:
                break
            if sent - written > NEVER:
                break  # a finding: the forbidden connection lives on
            await asyncio.sleep(INTERVAL)
        stays = await line.echo() is None
    finally:
        line.close()
    own = syncs(server)[before:]
    last = 1000 * (line.last_echo - written)
    print(f"{client_ref} -> z/c: last byte {last:.0f} ms after the write", file=sys.stderr)
    return {
        "stopped": sent - written <= NEVER,
        "last_byte_ms": 1000 * (line.last_echo - written),
        "unanswered_ms": 1000 * (sent - written),
        "stayed_stopped": stays,
        "agent_sync_ms": own[0] if own else float("nan"),
    }


def forbid_rounds(cluster: Cluster, ip: str, rounds: int) -> dict[str, list[dict[str, float]]]:
    """`rounds` per client placement (same node as z/c, across nodes), interleaved."""
    placed = clients(cluster, "z/c")
    out: dict[str, list[dict[str, float]]] = {where: [] for where in placed}
    for _ in range(rounds):
        for where, ref in placed.items():
            out[where].append(asyncio.run(stop_round(cluster, ref, ip)))
            cluster.net.delete_namespaced_network_policy("c-from-a", "z", _preload_content=False)
    return out


def measure(backend: str, changes: int, rounds: int) -> dict[str, Any]:
    try:
        cluster = up(backend)
        allow = policy(
            "b-from-x",
            {
                "podSelector": {"matchLabels": {"pod": "b"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}],
            },
        )
        cluster.net.create_namespaced_network_policy("y", allow, _preload_content=False)
        keep = publish(cluster, "y", "keep-b", "b", 8082)
        cut = publish(cluster, "z", "cut-c", "c", 8083)
        placed = clients(cluster, "y/b")
        client_ref = placed.get("across nodes", placed.get("same node"))
        narrowing = asyncio.run(unrelated_narrowing(cluster, client_ref, keep, changes))
        placement = {r: cluster.node(r) for r in sorted(cluster.pods) if r[0] in "xyz"}
        cluster.net.delete_namespaced_network_policy("narrowing", "z", _preload_content=False)
        return {
            "placement": placement,
            "narrowing": narrowing,
            "forbid": forbid_rounds(cluster, cut, rounds),
        }
    finally:
        run(PICKET, "lab", "down")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(results: dict[str, dict[str, Any]], changes: int, rounds: int) -> None:
    print(
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
        f"Python {platform.python_version()}; {changes} changes, {rounds} rounds.\n"
    )
    print(
        "| backend | lines sent | stalls (echo > 100 ms) | slowest echo ms | p99 echo ms | cut "
        "| changes each followed by a sync on every z node | incremental syncs per node |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for backend, r in results.items():
        n = r["narrowing"]
        per_node = ", ".join(f"{node} {count}" for node, count in n["syncs"].items())
        cut = f"yes, after change {n['cut_after']}" if n["cut"] else "no"
        print(
            f"| {backend} | {n['lines']} | {n['stalls']} | {n['slowest_ms']:.0f} | "
            f"{n['p99_ms']:.0f} | {cut} | {n['changes_synced']} of {changes} | {per_node} |"
        )
    print()
    print(
        "| backend | write to last byte p50 ms | p99 ms | max ms "
        "| write to first unanswered line p50 ms | max ms | stopped within 5 s | stayed stopped "
        "| agent sync p50 ms | max ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for backend, r in results.items():
        for where, f in r["forbid"].items():
            stopped = [x for x in f if x["stopped"]]
            last = [x["last_byte_ms"] for x in stopped] or [float("nan")]
            first = [x["unanswered_ms"] for x in stopped] or [float("nan")]
            sync = [x["agent_sync_ms"] for x in f]
            stayed = sum(x["stayed_stopped"] for x in f)
            print(
                f"| {backend}, {where} | {statistics.median(last):.0f} | "
                f"{percentile(last, 0.99):.0f} | {max(last):.0f} | "
                f"{statistics.median(first):.0f} | {max(first):.0f} | {len(stopped)} of {len(f)} | "
                f"{stayed} of {len(f)} | "
                f"{statistics.median(sync):.1f} | {max(sync):.1f} |"
            )
    print()
    for backend, r in results.items():
        where = ", ".join(f"{k} {v}" for k, v in r["placement"].items())
        print(f"{backend}: narrowing client {r['narrowing']['client']}; placement {where}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backends", default="iptables,ebpf")
    p.add_argument("--changes", type=int, default=100)
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    results = {b: measure(b, args.changes, args.rounds) for b in args.backends.split(",")}
    report(results, args.changes, args.rounds)


if __name__ == "__main__":
    main()
