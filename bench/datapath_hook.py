#!/usr/bin/env python3
"""What the eBPF datapath costs where it runs, beside no enforcement and iptables (issue
#14: the chosen hook beside the previous one). Run as root from the repository:

    .venv/bin/python bench/datapath_hook.py [--picket PATH] [--runs 3]

For each backend (none, iptables, ebpf) a 2-node lab with the 3x3 model; a client pod,
a server on its node and one on the other node, each server isolated for ingress by a
policy that admits the client. Loads, through that isolated direction: bulk TCP (iperf3,
5 s) and new TCP connections (a few processes in the client's namespace connecting and
resetting for 3 s; the server accepts and closes). With eBPF the same loads run again
with kernel.bpf_stats_enabled=1 (restored after each run) to read the run time of
Picket's programs from `bpftool prog show`, per program run and per packet the client
sent or received. `--picket` names another checkout's .venv/bin/picket to measure that
revision: the lab's agents run the code of the checkout whose picket started them.
Prints Markdown for docs/benchmarks.md. Leaves no lab behind; about 4 minutes."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.connect_rate import accepting, connect_rate  # noqa: E402
from bench.hook_figures import (  # noqa: E402
    BpfCost,
    RunStats,
    bpf_cost,
    costs_table,
    link_packets,
    program_stats,
    rates_table,
    stats_delta,
)
from lab.config import pod_netns  # noqa: E402

MODEL = ROOT / "tests" / "lab" / "manifests" / "model.yaml"
MODEL_NAMESPACES = ("x", "y", "z")
BACKENDS = ("none", "iptables", "ebpf")
BULK_PORT = 5201  # iperf3's
CONNECT_PORT = 9000  # the connection server's; the lab's responders hold 80 and 81
LOADS = (
    "bulk TCP, same node (Gbit/s)",
    "bulk TCP, across nodes (Gbit/s)",
    "new connections/s, same node",
    "new connections/s, across nodes",
)
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def run(*cmd: str, env: dict | None = None, stdin: str | None = None, timeout: float = 120) -> str:
    return subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, check=True, env=env, timeout=timeout
    ).stdout


@dataclass(frozen=True)
class Pod:
    ref: str
    ip: str
    node: str
    netns: str


@dataclass(frozen=True)
class Cast:
    client: Pod
    local: Pod  # a server on the client's node
    remote: Pod  # a server on the other node
    stranger: Pod  # on the client's node; the servers' policies do not admit it


def cast_of(items: list[dict]) -> Cast:
    pods = sorted(
        (
            Pod(
                f"{p['metadata']['namespace']}/{p['metadata']['name']}",
                p["status"]["podIP"],
                p["spec"]["nodeName"],
                pod_netns(p["metadata"]["uid"]),
            )
            for p in items
            if p["metadata"]["namespace"] in MODEL_NAMESPACES  # not the lab's DNS pods
        ),
        key=lambda p: p.ref,
    )
    by_node: dict[str, list[Pod]] = {}
    for pod in pods:
        by_node.setdefault(pod.node, []).append(pod)
    big, small = sorted(by_node.values(), key=len, reverse=True)[:2]
    return Cast(big[0], big[1], small[0], big[2])


def ingress_policy(server: Pod, client: Pod) -> dict:
    """`server` isolated for ingress, admitting `client` on every port."""
    (server_ns, server_name), (client_ns, client_name) = (
        server.ref.split("/"),
        client.ref.split("/"),
    )
    peer = {
        "namespaceSelector": {"matchLabels": {"ns": client_ns}},
        "podSelector": {"matchLabels": {"pod": client_name}},
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"bench-{server_name}-in", "namespace": server_ns},
        "spec": {
            "podSelector": {"matchLabels": {"pod": server_name}},
            "ingress": [{"from": [peer]}],
        },
    }


class Lab:
    """One model lab of `picket`'s checkout, with the policies in force."""

    def __init__(self, picket: str, backend: str) -> None:
        self.picket, self.backend = picket, backend

    def probe(self, src: Pod, dst: Pod) -> str:
        """connected ..., refused or timeout (the command fails unless it connected)."""
        cmd = [self.picket, "lab", "probe", src.ref, dst.ref, "80", "--timeout", "0.5"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout

    def up(self) -> Cast:
        run(self.picket, "lab", "down")
        out = run(self.picket, "lab", "up", "--nodes", "2", "--backend", self.backend)
        env = {**os.environ, "KUBECONFIG": out.strip().splitlines()[-1]}
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
        cast = cast_of(
            json.loads(run("kubectl", "get", "pods", "-A", "-o", "json", env=env))["items"]
        )
        items = [ingress_policy(s, cast.client) for s in (cast.local, cast.remote)]
        policies = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        run("kubectl", "apply", "-f", "-", env=env, stdin=policies)
        self._wait_enforced(cast)
        return cast

    def _wait_enforced(self, cast: Cast) -> None:
        """Until the stranger is kept out of both servers (if anything enforces) and the
        client gets in."""
        deadline = time.monotonic() + 30
        for server in (cast.local, cast.remote):
            while self.backend != "none" and not self.probe(cast.stranger, server).startswith(
                "timeout"
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.backend}: {server.ref}'s policy never enforced")
            if not self.probe(cast.client, server).startswith("connected"):
                raise RuntimeError(f"{self.backend}: {cast.client.ref} cannot reach {server.ref}")

    def down(self) -> None:
        run(self.picket, "lab", "down")


def in_netns(pod: Pod, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", pod.netns, *cmd]


def bulk(client: Pod, server: Pod, seconds: int) -> float:
    """Gbit/s the server received in one iperf3 run."""
    out = run(
        *in_netns(
            client, "iperf3", "-c", server.ip, "-p", str(BULK_PORT), "-t", str(seconds), "-J"
        ),
        timeout=seconds + 30,
    )
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def wait_listening(pod: Pod, port: int) -> None:
    """Until something in `pod` listens on TCP `port` (iperf3 -s says nothing when it is
    ready, and a probe connection would count as its first client)."""
    deadline = time.monotonic() + 10
    while f":{port} " not in run(*in_netns(pod, "ss", "-Hltn", f"sport = :{port}")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {pod.ref}:{port}")
        time.sleep(0.05)


@contextmanager
def servers(cast: Cast) -> Iterator[None]:
    """iperf3 and the connection server in both server pods, for the lab's lifetime."""
    daemons = [
        subprocess.Popen(
            in_netns(s, "iperf3", "-s", "-p", str(BULK_PORT)), stdout=subprocess.DEVNULL
        )
        for s in (cast.local, cast.remote)
    ]
    try:
        with (
            accepting(cast.local.netns, cast.local.ip, CONNECT_PORT),
            accepting(cast.remote.netns, cast.remote.ip, CONNECT_PORT),
        ):
            for server in (cast.local, cast.remote):
                wait_listening(server, BULK_PORT)
            yield
    finally:
        for daemon in daemons:
            daemon.kill()
            daemon.wait()


@contextmanager
def bpf_stats_enabled() -> Iterator[None]:
    """kernel.bpf_stats_enabled=1 for the body (the kernel times programs only then),
    then its previous value again, whatever happened."""
    before = BPF_STATS.read_text().strip()
    BPF_STATS.write_text("1\n")
    try:
        yield
    finally:
        BPF_STATS.write_text(f"{before}\n")


def picket_stats() -> dict[str, RunStats]:
    return program_stats(json.loads(run("bpftool", "-j", "prog", "show")))


def pod_packets(pod: Pod) -> int:
    return link_packets(json.loads(run("ip", "-n", pod.netns, "-j", "-s", "link", "show")))


class Outcome(NamedTuple):
    figure: float  # Gbit/s or connections per second
    connections: int = 0
    failed: int = 0


class Load(NamedTuple):
    name: str
    go: Callable[[], Outcome]


def loads(cast: Cast, args: argparse.Namespace) -> list[Load]:
    def bulk_to(server: Pod) -> Callable[[], Outcome]:
        return lambda: Outcome(bulk(cast.client, server, args.seconds))

    def connect_to(server: Pod) -> Callable[[], Outcome]:
        def go() -> Outcome:
            done, failed = connect_rate(
                cast.client.netns, server.ip, CONNECT_PORT, args.connect_seconds, args.workers
            )
            return Outcome(done / args.connect_seconds, done, failed)

        return go

    runs = (bulk_to(cast.local), bulk_to(cast.remote))
    runs += (connect_to(cast.local), connect_to(cast.remote))
    return [Load(name, go) for name, go in zip(LOADS, runs, strict=True)]


@dataclass
class Figures:
    rates: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (backend, load)
    costs: dict[str, list[BpfCost]] = field(default_factory=dict)  # eBPF, by load
    per_connection_ns: dict[str, list[float]] = field(default_factory=dict)
    programs: set[str] = field(default_factory=set)
    failed: dict[str, int] = field(default_factory=dict)  # connection attempts, by backend
    load_before: float = field(default_factory=lambda: os.getloadavg()[0])  # other work


def costed(load: Load, client: Pod, figures: Figures) -> None:
    """The load once more with the kernel timing Picket's programs."""
    with bpf_stats_enabled():
        before, packets = picket_stats(), pod_packets(client)
        outcome = load.go()
        after, packets = picket_stats(), pod_packets(client) - packets
    delta = stats_delta(after, before)
    figures.programs |= {name for name, stats in after.items() if stats.run_cnt}
    figures.costs.setdefault(load.name, []).append(bpf_cost(delta, packets))
    if outcome.connections:
        figures.per_connection_ns.setdefault(load.name, []).append(
            delta.run_time_ns / outcome.connections
        )


def measure(picket: str, backend: str, args: argparse.Namespace, figures: Figures) -> None:
    lab = Lab(picket, backend)
    try:
        cast = lab.up()
        with servers(cast):
            for _ in range(args.runs):  # loads interleaved, so each meets the same machine
                for load in loads(cast, args):
                    outcome = load.go()
                    figures.rates.setdefault((backend, load.name), []).append(outcome.figure)
                    figures.failed[backend] = figures.failed.get(backend, 0) + outcome.failed
                    if backend == "ebpf":
                        costed(load, cast.client, figures)
    finally:
        lab.down()


def revision(picket: str) -> str:
    checkout = Path(picket).absolute().parents[2]
    try:
        return f"{run('git', '-C', str(checkout), 'log', '-1', '--format=%h').strip()} ({checkout})"
    except (subprocess.CalledProcessError, FileNotFoundError):
        return f"unknown ({checkout})"


def report(figures: Figures, args: argparse.Namespace, seconds: float) -> None:
    print(
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}; "
        f"revision {revision(args.picket)}; {args.runs} runs of each load per backend, "
        f"median (min-max); iperf3 -t {args.seconds}; {args.workers} connecting processes "
        f"for {args.connect_seconds:g} s; the whole run took {seconds:.0f} s; load average "
        f"{figures.load_before:.2f} before it.\n"
    )
    print(rates_table(figures.rates, args.backends, LOADS))
    failed = {b: n for b, n in figures.failed.items() if n}
    if failed:
        print(f"\nConnection attempts that failed (1 s connect timeout): {failed}.")
    if not figures.costs:
        return
    print(
        f"\neBPF programs' run time ({', '.join(sorted(figures.programs))}, every node's "
        "copy; the same loads again with kernel.bpf_stats_enabled=1); a packet is one the "
        "client's interface sent or received (with GSO, a bulk packet carries up to 64 KB):\n"
    )
    print(costs_table(figures.costs, figures.per_connection_ns))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--picket", default=str(Path(sys.executable).parent / "picket"))
    p.add_argument("--backends", type=lambda s: s.split(","), default=list(BACKENDS))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5, help="of each iperf3 transfer")
    p.add_argument("--connect-seconds", type=float, default=3.0)
    p.add_argument("--workers", type=int, default=3, help="connecting processes")
    args = p.parse_args()
    # A SIGTERM unwinds like an error: the lab goes down, bpf_stats_enabled is restored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    start, figures = time.monotonic(), Figures()
    for backend in args.backends:
        measure(args.picket, backend, args, figures)
    report(figures, args, time.monotonic() - start)


if __name__ == "__main__":
    main()
