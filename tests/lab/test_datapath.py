"""The datapath under load: bulk TCP through isolated directions, on both backends.

iperf3 (Debian's) moves data from a client isolated for egress to servers isolated for
ingress, each admitting the other on the iperf3 port, same node and across nodes, and
from an unpoliced client to unpoliced servers on the same nodes in the same run. Every
packet of those connections belongs to an allowed connection, so the datapath must
drop none of them (the eBPF connection table once judged busy entries expired when two
CPUs refreshed them at once, and dropped the next segments as mid-stream), and the
policed transfer must not collapse beside the unpoliced one. The figures themselves
belong in bench/; here the ratio only stands for "no packet was lost"."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lab.config import LabNode, state_dir
from tests.support.agent_metrics import fresh_sum
from tests.support.enforcement import apply, probe_once
from tests.support.lab_cli import Kubectl, LabPod, lab_pods, model_lab, wait_until
from tests.support.policies import BACKENDS

PORT = 5201  # iperf3's
ROUNDS = 4  # transfers per configuration; the best of them is compared
SECONDS = 1


Pod = LabPod


def _pods(kubectl: Kubectl) -> list[Pod]:
    """The model's pods (not the lab's own, like the cluster DNS)."""
    return [p for p in lab_pods(kubectl).values() if p.namespace in ("x", "y", "z")]


@dataclass(frozen=True)
class Cast:
    """Who sends to whom: a policed and an unpoliced client on one node, and a policed
    and an unpoliced server on that node and on the other."""

    client: Pod
    open_client: Pod
    local: tuple[Pod, Pod]  # (policed, unpoliced) servers on the clients' node
    remote: tuple[Pod, Pod]  # the same on the other node


def _cast(pods: list[Pod]) -> Cast:
    by_node: dict[str, list[Pod]] = {}
    for pod in sorted(pods, key=lambda p: p.ref):
        by_node.setdefault(pod.node, []).append(pod)
    big, small = sorted(by_node.values(), key=len, reverse=True)[:2]
    assert len(big) >= 4 and len(small) >= 2, by_node
    return Cast(big[0], big[1], (big[2], big[3]), (small[0], small[1]))


def _peer(pod: Pod) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"ns": pod.namespace}},
        "podSelector": {"matchLabels": {"pod": pod.name}},
    }


def _policy(pod: Pod, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": pod.namespace},
        "spec": {"podSelector": {"matchLabels": {"pod": pod.name}}, **spec},
    }


def _policies(cast: Cast) -> list[dict[str, Any]]:
    ports = [{"protocol": "TCP", "port": PORT}]
    servers = [cast.local[0], cast.remote[0]]
    client = _policy(
        cast.client,
        f"{cast.client.name}-bulk-out",
        {
            "policyTypes": ["Egress"],
            "egress": [{"to": [_peer(s) for s in servers], "ports": ports}],
        },
    )
    inbound = [
        _policy(
            s, f"{s.name}-bulk-in", {"ingress": [{"from": [_peer(cast.client)], "ports": ports}]}
        )
        for s in servers
    ]
    return [client, *inbound]


def _metrics(node: LabNode) -> str:
    """The node agent's /metrics; its log's tail when it does not answer."""
    try:
        with urllib.request.urlopen(node.metrics_url, timeout=5) as resp:
            return resp.read().decode()
    except OSError as exc:
        log = state_dir() / "logs" / f"agent-{node.name}.log"
        tail = log.read_text()[-3000:] if log.exists() else "(no log)"
        raise AssertionError(f"{node.name}'s agent did not answer ({exc}):\n{tail}") from exc


def _dropped(reasons: tuple[str, ...] = ("no_syn", "policy")) -> float:
    """Packets both agents dropped for these reasons, by their own counters, as read
    after now (the agents read the dataplane on a timer)."""
    now = time.time()
    for node in (LabNode(1), LabNode(2)):
        _metrics(node)  # answers, or the agent's log says why not
    return sum(
        fresh_sum(node, "picket_dropped_packets_total", now, reason=r)
        for node in (LabNode(1), LabNode(2))
        for r in reasons
    )


def _iperf3(pod: Pod) -> list[str]:
    return ["ip", "netns", "exec", pod.netns, "iperf3"]


def _transfer(client: Pod, server: Pod) -> float:
    """Bits per second the server received in one iperf3 run."""
    proc = subprocess.run(
        [*_iperf3(client), "-c", server.ip, "-p", str(PORT), "-t", str(SECONDS), "-J"],
        capture_output=True,
        text=True,
        timeout=SECONDS + 30,
        check=False,
    )
    report = json.loads(proc.stdout)
    assert "error" not in report, f"{client.ref} -> {server.ref}: {report['error']}"
    return float(report["end"]["sum_received"]["bits_per_second"])


@pytest.fixture(scope="module", params=BACKENDS)
def bulk_lab(request: pytest.FixtureRequest) -> Iterator[tuple[Cast, str]]:
    with model_lab(request.param) as kubectl:
        cast = _cast(_pods(kubectl))
        servers = [*cast.local, *cast.remote]
        daemons = [
            subprocess.Popen(
                [*_iperf3(s), "-s", "-p", str(PORT)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for s in servers
        ]
        try:
            apply(kubectl, *_policies(cast))
            # Enforced once the policed server refuses the open client's connection.
            assert wait_until(
                lambda: probe_once(cast.open_client.ref, cast.local[0].ref, "80") == "timeout"
            )
            yield cast, request.param
        finally:
            for daemon in daemons:
                daemon.kill()
                daemon.wait()


@pytest.mark.parametrize("where", ["local", "remote"])
def test_bulk_tcp_through_isolated_directions_loses_nothing(bulk_lab, where):
    cast, backend = bulk_lab
    policed_server, open_server = getattr(cast, where)
    before = _dropped()
    policed, unpoliced = [], []
    for _ in range(ROUNDS):  # interleaved, so both meet the same machine load
        unpoliced.append(_transfer(cast.open_client, open_server))
        policed.append(_transfer(cast.client, policed_server))
    dropped = _dropped() - before
    assert dropped == 0, f"{backend}: {dropped:.0f} packets of allowed connections dropped"
    # A guard against collapse (the fault ran at 1-3 %), not a speed figure: two CPUs
    # shared by client, server and kernel make single transfers vary by 10-15 %, so the
    # "within 10 %" figure is bench/'s to measure (docs/benchmarks.md), not a test's.
    ratio = max(policed) / max(unpoliced)
    assert ratio >= 0.5, (
        f"{backend} {where}: policed {max(policed) / 1e9:.2f} Gbit/s is {ratio:.0%} of "
        f"unpoliced {max(unpoliced) / 1e9:.2f} Gbit/s"
    )
