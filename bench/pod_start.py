#!/usr/bin/env python3
"""How soon a new pod that no policy selects answers (issue #16: pods are closed until
programmed, so this is the price; target p99 under 200 ms from the CNI ADD). Run as root
from the repository:

    .venv/bin/python bench/pod_start.py [--backends iptables,ebpf] [--rounds 40]

Per backend, a 2-node lab, a namespace no policy selects, a prober pod in it on node-1,
and `--rounds` new pods in it, alternately on node-1 (the prober's node) and node-2. For
each: the time from the CNI ADD (the pod's network namespace appearing: the lab kubelet
creates it just before ADD, so the figure holds the whole ADD) to the first TCP
connection the prober makes to it (one attempt every 2 ms). Prints Markdown for
docs/benchmarks.md. Leaves no lab behind."""

from __future__ import annotations

import argparse
import os
import platform
import select
import socket
import sys
import threading
import time
from pathlib import Path

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.programming import PICKET, percentile, run  # noqa: E402
from lab.config import LabNode, pod_netns  # noqa: E402
from lab.netns import netns_path, socket_in  # noqa: E402

NAMESPACE = "open"
NODES = (LabNode(1), LabNode(2))
EVERY = 0.002


def pod_body(name: str, node: LabNode, ip: str) -> dict:
    return {
        "metadata": {"name": name, "annotations": {"lab.picket.io/ip": ip}},
        "spec": {
            "nodeName": node.name,
            "containers": [{"name": "c", "image": "agnhost", "ports": [{"containerPort": 80}]}],
        },
    }


def appears(path: str, timeout: float = 30) -> float:
    """When `path` appeared (polled every 0.2 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return time.monotonic()
        time.sleep(0.0002)
    raise TimeoutError(f"no {path}")


def first_connection(netns: str, ip: str, stop: threading.Event, found: list[float]) -> None:
    """Tries `ip`:80 every EVERY seconds until one connects; appends when it did."""
    while not stop.is_set():
        sock = socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.connect_ex((ip, 80))
            _, writable, _ = select.select([], [sock], [], EVERY)
            if writable and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                found.append(time.monotonic())
                return
        finally:
            sock.close()
        stop.wait(EVERY)


def wait_running(core: client.CoreV1Api, name: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, NAMESPACE).to_dict()
        if (pod.get("status") or {}).get("pod_ip"):
            return pod
        time.sleep(0.05)
    raise TimeoutError(f"{name} got no address")


def measure(backend: str, rounds: int) -> dict[str, list[float]]:
    """Seconds from CNI ADD to the first connection, by the new pod's node."""
    run(PICKET, "lab", "down")
    out: dict[str, list[float]] = {"same node": [], "other node": []}
    try:
        kubeconfig = run(PICKET, "lab", "up", "--nodes", "2", "--backend", backend)
        core = client.CoreV1Api(config.new_client_from_config(kubeconfig.strip().splitlines()[-1]))
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        prober_ip = str(NODES[0].pod_cidr.network_address + 99)
        core.create_namespaced_pod(NAMESPACE, pod_body("prober", NODES[0], prober_ip))
        prober = pod_netns(wait_running(core, "prober")["metadata"]["uid"])
        # Round -1 is not timed: it waits for the prober itself to be programmed.
        for i in range(-1, rounds):
            node = NODES[i % 2]
            ip = str(node.pod_cidr.network_address + 101 + i)
            stop, found = threading.Event(), []
            prober_thread = threading.Thread(
                target=first_connection, args=(prober, ip, stop, found), daemon=True
            )
            prober_thread.start()
            created = core.create_namespaced_pod(NAMESPACE, pod_body(f"new-{i}", node, ip))
            try:
                added = appears(netns_path(pod_netns(created.metadata.uid)))
                prober_thread.join(30)
            finally:
                stop.set()
            if not found:
                raise TimeoutError(f"{backend}: new-{i} at {ip} never answered")
            core.delete_namespaced_pod(f"new-{i}", NAMESPACE)
            if i < 0:
                continue
            out["same node" if node is NODES[0] else "other node"].append(found[0] - added)
            print(f"{backend} new-{i}: {1000 * (found[0] - added):.0f} ms", file=sys.stderr)
    finally:
        run(PICKET, "lab", "down")
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backends", default="iptables,ebpf")
    p.add_argument("--rounds", type=int, default=40, help="new pods per backend (even)")
    args = p.parse_args()
    started = time.monotonic()
    load = os.getloadavg()[0]
    results = {b: measure(b, args.rounds) for b in args.backends.split(",")}
    print(
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}; "
        f"{args.rounds} new pods per backend; the run took {time.monotonic() - started:.0f} s; "
        f"load average {load:.2f} before it.\n"
    )
    print("| backend | new pod on | pods | CNI ADD to answering p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for backend, by_node in results.items():
        either = [s for seconds in by_node.values() for s in seconds]
        for where, seconds in [*by_node.items(), ("either", either)]:
            ms = [1000 * s for s in seconds]
            print(
                f"| {backend} | {where} | {len(ms)} | {percentile(ms, 0.5):.0f} | "
                f"{percentile(ms, 0.99):.0f} | {max(ms):.0f} |"
            )


if __name__ == "__main__":
    main()
