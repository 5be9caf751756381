"""Metrics and health against real agents: Debian's Prometheus scrapes every lab agent
through the lab link, denied datagrams are sent in exact numbers over each address
family, and the drop counters Prometheus holds rise by exactly those numbers per
namespace, direction and family, for both backends. /readyz and /healthz are read from a
real agent whose dataplane tool is made to hang."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import ip_address
from pathlib import Path

import pytest
import yaml

from lab.config import AGENT_METRICS_PORT, API_ADDRESS, LabNode, pod_netns
from lab.netns import socket_in
from tests.support.enforcement import apply, probe_allowed, probe_once
from tests.support.lab_cli import PICKET, Kubectl, model_lab, picket, wait_until
from tests.support.policies import BACKENDS, netpol, pods_peer, sel

PROMETHEUS = "/usr/bin/prometheus"
PROMETHEUS_ADDRESS = f"{API_ADDRESS}:19090"  # the lab's own address on the host link
NODES = [LabNode(1), LabNode(2)]


@contextmanager
def prometheus(workdir: Path) -> Iterator[str]:
    """Debian's Prometheus, scraping every lab agent each second; yields its URL."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "picket",
                "static_configs": [
                    {"targets": [f"{n.address}:{AGENT_METRICS_PORT}" for n in NODES]}
                ],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={PROMETHEUS_ADDRESS}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://{PROMETHEUS_ADDRESS}"
    try:
        assert wait_until(lambda: _status(f"{url}/-/ready") == 200, timeout=30), (
            workdir / "prometheus.log"
        ).read_text()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def query(url: str, promql: str) -> dict[tuple[str, ...], float]:
    """An instant query; each series' label values (sorted by label name) -> value."""
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}", timeout=5
    ) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return {
        tuple(v for _, v in sorted(r["metric"].items())): float(r["value"][1])
        for r in body["data"]["result"]
    }


def send_datagrams(kubectl: Kubectl, source: str, target: str, count: int, family: int) -> None:
    """`count` UDP datagrams from pod `source` to `target`:80 over IPv`family`, each from
    its own source port: `count` packets and `count` connections, exactly."""
    src_ns, src_name = source.split("/")
    dst_ns, dst_name = target.split("/")
    uid = kubectl.json("get", "pod", src_name, "-n", src_ns)["metadata"]["uid"]
    ips = kubectl.json("get", "pod", dst_name, "-n", dst_ns)["status"]["podIPs"]
    (ip,) = [a["ip"] for a in ips if ip_address(a["ip"]).version == family]
    kind, anywhere = (socket.AF_INET, "0.0.0.0") if family == 4 else (socket.AF_INET6, "::")
    for i in range(count):
        with socket_in(pod_netns(uid), kind, socket.SOCK_DGRAM) as sock:
            sock.bind((anywhere, 41000 + i))
            sock.sendto(b"denied\n", (ip, 80))


DENY = [
    netpol("y", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]}),
    netpol("x", "b-no-egress", {"podSelector": sel(pod="b"), "policyTypes": ["Egress"]}),
    # Not on the datagrams' paths: a peer set (z's pods, of both families) for the gauge.
    netpol("z", "b-from-z", {"podSelector": sel(pod="b"), "ingress": [{"from": [pods_peer()]}]}),
]
PER_NAMESPACE = 'sum by (direction, namespace, family) ({}{{job="picket"{}}})'


@pytest.mark.parametrize("backend", BACKENDS)
def test_prometheus_sees_every_drop_per_namespace_direction_and_family(backend, tmp_path):
    with model_lab(backend) as kubectl, prometheus(tmp_path) as url:
        every_agent_up = [1.0] * len(NODES)
        assert wait_until(lambda: list(query(url, "up").values()) == every_agent_up), query(
            url, "up"
        )
        apply(kubectl, *DENY)
        assert wait_until(lambda: _denied(kubectl, "x/a", "y/b") and _denied(kubectl, "x/b", "z/a"))
        dropped = PER_NAMESPACE.format("picket_dropped_packets_total", ',reason="policy"')
        connections = PER_NAMESPACE.format("picket_dropped_connections_total", "")
        # The baseline holds the probes' packets: Prometheus has scraped a dataplane
        # reading the agents took after them (they read on a timer, not per scrape).
        probed = time.time()
        reading = "picket_dataplane_reading_timestamp_seconds"
        assert wait_until(lambda: min(query(url, reading).values(), default=0) > probed, 20)
        time.sleep(1)  # the drop log's connections are counted as events arrive
        before = {q: query(url, q) for q in (dropped, connections)}
        send_datagrams(kubectl, "x/a", "y/b", 5, family=4)  # ingress, y's policy
        send_datagrams(kubectl, "x/a", "y/b", 4, family=6)
        send_datagrams(kubectl, "x/b", "z/a", 3, family=4)  # egress, x's policy
        send_datagrams(kubectl, "x/b", "z/a", 2, family=6)
        # (direction, family, namespace): label values by label name
        want = {
            ("ingress", "ipv4", "y"): 5.0,
            ("ingress", "ipv6", "y"): 4.0,
            ("egress", "ipv4", "x"): 3.0,
            ("egress", "ipv6", "x"): 2.0,
        }

        def grown(q: str) -> dict[tuple[str, ...], float]:
            now = query(url, q)
            return {k: v - before[q].get(k, 0.0) for k, v in now.items() if v != before[q].get(k)}

        assert wait_until(lambda: grown(dropped) == want, timeout=20), grown(dropped)
        assert wait_until(lambda: grown(connections) == want, timeout=15), grown(connections)
        time.sleep(2)  # and nothing more arrives
        assert grown(dropped) == want and grown(connections) == want
        latency = query(url, "sum(picket_programming_latency_seconds_count)")
        assert next(iter(latency.values())) > 0
        # The model's pods and the cluster DNS pod.
        assert sum(query(url, "picket_local_endpoints").values()) == 10
        assert set(query(url, "picket_policies").values()) == {3.0}  # each agent knows all
        status = picket("lab", "status").stdout
        assert all(node.metrics_url in status for node in NODES), status
        info = picket("lab", "metrics", "picket_build_info").stdout.splitlines()
        assert [line.split()[0] for line in info] == [node.name for node in NODES]
        assert all(f'backend="{backend}"' in line for line in info), info
        # z's pods are a peer set's members (on z/b's node at least), once per family.
        members = query(url, "sum by (family) (picket_peer_set_members)")
        assert members.keys() == {("ipv4",), ("ipv6",)}, members
        assert members[("ipv4",)] == members[("ipv6",)] >= 3, members
        if backend == "ebpf":
            counted = time.time()  # a connection of each family, admitted
            assert all(probe_allowed("x/a", "z/a", "80/udp", family=f) for f in (4, 6))
            assert wait_until(lambda: min(query(url, reading).values()) > counted, 20)
            allowed = query(url, "sum by (family) (picket_allowed_packets_total)")
            assert allowed.keys() == {("ipv4",), ("ipv6",)}, allowed
            assert all(v > 0 for v in allowed.values()), allowed
            assert query(url, 'picket_bpf_map_entries{map="policy"}')
        else:
            rules = query(url, "sum by (family) (picket_iptables_rules)")
            assert rules.keys() == {("ipv4",), ("ipv6",)}, rules
            assert all(v > 0 for v in rules.values()), rules


def _denied(kubectl: Kubectl, source: str, target: str) -> bool:
    return probe_once(source, target, "80/udp") == "timeout"


# A dataplane tool that hangs while a file exists: the sync loop blocks in it, as it
# would in a hung kernel call or a held lock.
HANG = """#!/bin/sh
while [ -e "{hold}" ]; do sleep 0.1; done
exec {real} "$@"
"""


def test_readyz_waits_for_the_first_sync_and_healthz_catches_a_stuck_loop(lab, tmp_path):
    hold = tmp_path / "hold"
    hold.touch()
    shims = tmp_path / "bin"
    shims.mkdir()
    for tool in ("iptables-legacy-restore", "iptables-nft-restore"):
        real = shutil.which(tool)
        assert real, f"{tool} not installed"
        (shims / tool).write_text(HANG.format(hold=hold, real=real))
        (shims / tool).chmod(0o755)
    node = NODES[0]  # the lab fixture runs no agents: this one is alone on node-1
    agent_on_node = ["nsenter", f"--net=/run/netns/{node.netns}", PICKET, "agent"]
    agent = subprocess.Popen(
        [
            *agent_on_node,
            "--node",
            node.name,
            "--kubeconfig",
            lab,
            "--liveness-timeout",
            "2",
            "--drop-log",
            "off",
        ],
        env={**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "agent.log").open("w"),
    )
    base = node.metrics_url.removesuffix("/metrics")
    try:
        assert wait_until(lambda: _status(f"{base}/readyz") == 503, timeout=30)
        assert wait_until(lambda: _status(f"{base}/healthz") == 503, timeout=15)
        assert _status(f"{base}/readyz") == 503  # blocked in its first sync
        hold.unlink()  # the tool returns: the sync finishes
        assert wait_until(lambda: _status(f"{base}/readyz") == 200, timeout=15)
        assert wait_until(lambda: _status(f"{base}/healthz") == 200, timeout=5)
        assert _status(f"{base}/nothing") == 404
    finally:
        hold.unlink(missing_ok=True)
        agent.terminate()
        agent.wait(10)
        subprocess.run(
            [*agent_on_node, "--node", node.name, "--cleanup"], capture_output=True, check=False
        )
