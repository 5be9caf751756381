"""Metrics logic without a kernel: counter totals that only grow, the drop counters read
back from iptables-save text, health verdicts, the listen address, and the exposition
of every contract name, scrapes that read nothing themselves, and a server that stays
bounded (the lab tests scrape real agents with a real Prometheus)."""

from __future__ import annotations

import socket
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from agent.compiler.compile import compile_node
from agent.dataplane.counters import DatapathCounters, MonotonicTotals, split_audit
from agent.dataplane.iptables_render import counted_rules, render_chains
from agent.loop.agent import Agent
from agent.metrics import server as server_module
from agent.metrics.collector import AgentMetrics
from agent.metrics.health import Verdict, liveness, readiness
from agent.metrics.server import MetricsServer, RenderedMetrics, parse_address
from tests.support.builders import model_cluster, policy, state_of


def test_totals_add_growth_and_survive_restarts():
    totals = MonotonicTotals()
    totals.observe("rule-1", ("ingress", "policy", "y"), 5)
    totals.observe("rule-2", ("ingress", "policy", "y"), 2)
    totals.observe("rule-1", ("ingress", "policy", "y"), 8)
    assert totals.totals() == {("ingress", "policy", "y"): 10}
    totals.observe("rule-1", ("ingress", "policy", "y"), 1)  # restarted unseen: 1 is new
    assert totals.totals()[("ingress", "policy", "y")] == 11
    totals.forget(["rule-2"])  # about to be zeroed; the next reading counts from zero
    totals.observe("rule-2", ("ingress", "policy", "y"), 3)
    assert totals.totals()[("ingress", "policy", "y")] == 14
    totals.forget()
    totals.observe("rule-1", ("ingress", "policy", "y"), 0)
    assert totals.totals()[("ingress", "policy", "y")] == 14


def test_audit_totals_are_kept_apart_from_drops():
    counters = split_audit(
        {("ingress", "policy", "y"): 4, ("egress", "would_drop_policy", "x"): 2}, {"egress": 9}
    )
    assert counters == DatapathCounters(
        {("ingress", "policy", "y"): 4}, {("egress", "x"): 2}, {"egress": 9}
    )


def _save_text(chains: dict[str, list[str]], packets: int) -> str:
    """What `iptables-save -c` prints for these chains, every rule at `packets` (it
    escapes a quote inside a comment: "picket: not the pod\\'s own address")."""
    lines = ["*filter"] + [f":{name} - [0:0]" for name in chains]
    for name, rules in chains.items():
        lines += [
            f"[{packets}:{packets * 60}] -A {name} {rule.replace(chr(39), chr(92) + chr(39))}"
            for rule in rules
        ]
    return "\n".join([*lines, "COMMIT"]) + "\n"


def test_drop_counters_are_read_per_direction_and_namespace():
    deny_in = policy("y", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]})
    deny_out = policy("x", "deny-out", {"podSelector": {}, "policyTypes": ["Egress"]})
    ir = compile_node(state_of([*model_cluster(), deny_in, deny_out]), "node-1")
    chains = render_chains(ir, {ref: f"veth{i}" for i, ref in enumerate(ir.endpoints)})
    found = {labels: packets for _, labels, packets in counted_rules(_save_text(chains, 7))}
    assert found == {
        ("ingress", "policy", "y"): 7,
        ("egress", "policy", "x"): 7,
        # Only in isolated directions, named by the isolated pod's namespace.
        ("ingress", "invalid", "y"): 7,
        ("egress", "invalid", "x"): 7,
        ("ingress", "no_syn", "y"): 7,
        ("egress", "no_syn", "y"): 7,
        ("ingress", "no_syn", "x"): 7,
        ("egress", "no_syn", "x"): 7,
        # Packets from a pod's interface with another source, whichever pod.
        ("egress", "spoofed", ""): 7,
    }


def test_audit_chains_count_would_be_drops():
    deny_in = policy("y", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]})
    audited = [
        {**o, "metadata": {**o["metadata"], "annotations": {"picket.io/enforcement": "audit"}}}
        if o["kind"] == "Namespace" and o["metadata"]["name"] == "y"
        else o
        for o in model_cluster()
    ]
    ir = compile_node(state_of([*audited, deny_in]), "node-1")
    chains = render_chains(ir, {ref: f"veth{i}" for i, ref in enumerate(ir.endpoints)})
    found = {labels for _, labels, _ in counted_rules(_save_text(chains, 1))}
    assert ("ingress", "would_drop_policy", "y") in found
    assert not any(reason == "policy" for _, reason, _ in found)


def test_liveness_fails_only_when_the_started_loop_goes_silent():
    assert liveness(False, heartbeat=0, now=1000, timeout=60).ok  # still listing
    assert liveness(True, heartbeat=990, now=1000, timeout=60).ok
    stuck = liveness(True, heartbeat=900, now=1000, timeout=60)
    assert not stuck.ok and "silent for 100s" in stuck.reason
    assert not readiness(False).ok and readiness(True).ok


@pytest.mark.parametrize(
    ("text", "want"),
    [(":9402", ("", 9402)), ("198.18.0.1:9402", ("198.18.0.1", 9402)), ("[::1]:80", ("::1", 80))],
)
def test_metrics_address(text, want):
    assert parse_address(text) == want


@pytest.mark.parametrize("text", ["9402", ":", "host:port", ":70000"])
def test_bad_metrics_address_names_the_flag(text):
    with pytest.raises(ValueError, match="--metrics-addr"):
        parse_address(text)


class _Backend:
    """The backend interface's reads, with fixed values (the exposition under test)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.jumps_restored = 2

    def datapath_counters(self) -> DatapathCounters:
        allowed = {"ingress": 10, "egress": 12} if self.name == "ebpf" else None
        return DatapathCounters({("ingress", "policy", "y"): 3}, {("egress", "x"): 1}, allowed)

    def rule_count(self) -> int:
        return 17

    def map_entries(self) -> dict[str, int]:
        return {"policy": 40, "drop_counts": 5}

    def conntrack_entries(self) -> int | None:
        return 9


CONTRACT = [
    "picket_dropped_packets_total",
    "picket_dropped_connections_total",
    "picket_sync_duration_seconds",
    "picket_programming_latency_seconds",
    "picket_policies",
    "picket_local_endpoints",
    "picket_peer_set_members",
    "picket_sync_errors_total",
    "picket_watch_restarts_total",
    "picket_droplog_events_lost_total",
    "picket_droplog_suppressed_total",
    "picket_invalid_objects",
    "picket_build_info",
    "picket_conntrack_entries",
    "picket_jump_restored_total",
]


@pytest.mark.parametrize("backend", ["iptables", "ebpf"])
def test_every_contract_metric_is_exported(backend):
    metrics = AgentMetrics(_Backend(backend), "0.1.0")
    metrics.attach(Agent("node-1", _Backend(backend), kinds=[]), droplog=None)
    metrics.readings.refresh()  # the reader thread's job
    metrics.synced("full", 0.2, 0.3)
    metrics.failed("program")
    metrics.watch_restarted("NetworkPolicy")
    text = generate_latest(metrics.registry).decode()
    declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    own = (
        {"picket_iptables_rules"}
        if backend == "iptables"
        else {"picket_bpf_map_entries", "picket_allowed_packets_total"}
    )
    for name in [*CONTRACT, *own]:
        assert {name, name.removesuffix("_total")} & declared, name
    assert (
        'picket_dropped_packets_total{direction="ingress",namespace="y",reason="policy"} 3.0'
        in text
    )
    assert 'picket_sync_errors_total{stage="program"} 1.0' in text
    assert 'picket_watch_restarts_total{resource="networkpolicies"} 1.0' in text
    assert f'picket_build_info{{backend="{backend}",version="0.1.0"}} 1.0' in text
    assert "picket_programming_latency_seconds_count 1.0" in text
    assert "picket_jump_restored_total 2.0" in text


class _CountingBackend(_Backend):
    """Counts the dataplane reads: a scrape must make none."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reads = 0

    def datapath_counters(self) -> DatapathCounters:
        self.reads += 1
        return super().datapath_counters()


def test_scrapes_serve_the_last_reading_and_read_nothing_themselves():
    backend = _CountingBackend("iptables")
    metrics = AgentMetrics(backend, "0.1.0")
    assert "picket_dropped_packets_total{" not in generate_latest(metrics.registry).decode()
    metrics.readings.refresh()
    for _ in range(20):
        text = generate_latest(metrics.registry).decode()
    assert backend.reads == 1
    assert (
        'picket_dropped_packets_total{direction="ingress",namespace="y",reason="policy"} 3.0'
        in text
    )


def test_the_exposition_is_rendered_once_per_interval_whatever_the_scrapes():
    now = [0.0]
    registry = CollectorRegistry()
    calls = Counter("picket_test_renders", "renders", registry=registry)
    rendered = RenderedMetrics(registry, interval=1.0, clock=lambda: now[0])

    class Renders:
        def collect(self):
            calls.inc()
            return []

    registry.register(Renders())
    bodies = [rendered.body() for _ in range(50)]
    now[0] = 0.5
    bodies.append(rendered.body())
    assert len(set(bodies)) == 1 and calls._value.get() == 1
    now[0] = 1.0
    assert rendered.body() != bodies[0]  # rendered again: the counter moved


def test_the_server_answers_busy_beyond_its_requests_and_lets_silent_clients_go(monkeypatch):
    monkeypatch.setattr(server_module, "TIMEOUT", 2.0)
    with socket.socket() as probe:  # a free port (the flag takes no 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ok = Verdict(True, "ok")
    server = MetricsServer(f"127.0.0.1:{port}", CollectorRegistry(), lambda: ok, lambda: ok)
    server.start()
    address = ("127.0.0.1", server.port)
    try:
        silent = [socket.create_connection(address) for _ in range(server_module.MAX_REQUESTS)]

        def answer() -> bytes:
            with socket.create_connection(address, timeout=2) as extra:
                extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                return extra.recv(100)

        # Once the server has taken the silent ones (each a thread waiting for a line)
        busy = [answer() for _ in range(20) if not time.sleep(0.02)]
        assert any(b.startswith(b"HTTP/1.0 503") for b in busy[:10]), busy[:3]
        time.sleep(2.3)  # past the timeout: the server has let the silent ones go
        for sock in silent:
            sock.settimeout(1)
            assert sock.recv(10) == b"", "a silent client still holds its thread"
            sock.close()
        with socket.create_connection(address, timeout=2) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert b" 200 " in sock.recv(100)
    finally:
        server.stop()


def test_requests_beyond_the_servers_rate_are_answered_busy_at_once(monkeypatch):
    monkeypatch.setattr(server_module, "RATE", 0.001)  # no refill within the test
    monkeypatch.setattr(server_module, "BURST", 5.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ok = Verdict(True, "ok")
    server = MetricsServer(f"127.0.0.1:{port}", CollectorRegistry(), lambda: ok, lambda: ok)
    server.start()
    try:
        answers = []
        for _ in range(8):
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                answers.append(sock.recv(100).split(b"\r\n")[0])
        assert answers == [b"HTTP/1.0 200 OK"] * 5 + [b"HTTP/1.0 503 Service Unavailable"] * 3
    finally:
        server.stop()
