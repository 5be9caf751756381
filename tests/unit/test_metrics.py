"""Metrics logic without a kernel: counter totals that only grow, the drop counters read
back from iptables-save text, health verdicts, the listen address, and the exposition
of every contract name, scrapes that read nothing themselves, and a server that stays
bounded (the lab tests scrape real agents with a real Prometheus)."""

from __future__ import annotations

import ctypes
import io
import socket
import time
from ipaddress import ip_address
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from agent.compiler.compile import compile_node
from agent.compiler.ir import NodeIR
from agent.dataplane import ebpf_layout, iptables
from agent.dataplane.counters import DatapathCounters, MonotonicTotals, split_audit
from agent.dataplane.ebpf.backend import EbpfBackend
from agent.dataplane.ebpf_layout import (
    DIR_EGRESS,
    DIR_INGRESS,
    REASON_ALLOWED_CT,
    REASON_ALLOWED_POLICY,
    REASON_DROP_POLICY,
    REASON_DROP_UNPROGRAMMED,
    verdict_slot,
)
from agent.dataplane.iptables_render import counted_rules, render_chains
from agent.droplog.events import DROP, PacketEvent
from agent.droplog.journal import RecordWriter
from agent.droplog.service import DropLog
from agent.loop.agent import Agent
from agent.metrics import server as server_module
from agent.metrics.collector import AgentMetrics
from agent.metrics.health import Verdict, liveness, readiness
from agent.metrics.server import MetricsServer, RenderedMetrics, parse_address
from agent.model.live import LiveState
from tests.support.builders import dual_stack, model_cluster, policy, state_of


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
        {("ingress", "policy", "y", 4): 4, ("egress", "would_drop_policy", "x", 6): 2},
        {("egress", 4): 9},
    )
    assert counters == DatapathCounters(
        {("ingress", "policy", "y", 4): 4}, {("egress", "x", 6): 2}, {("egress", 4): 9}
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


def test_iptables_counts_each_familys_drops_under_its_family(monkeypatch):
    """One reading of both families' `-save -c` text, drops counted apart: an IPv6 drop
    under 6 (ip6tables' rule), an IPv4 drop under 4, each with its own growth."""
    deny_in = policy("y", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]})
    ir = compile_node(state_of(dual_stack([*model_cluster(), deny_in])), "node-1")
    interfaces = {ref: f"veth{i}" for i, ref in enumerate(ir.endpoints)}
    chains = {f: render_chains(ir, interfaces, family=f) for f in (4, 6)}
    packets = {"iptables-legacy-save": 7, "ip6tables-legacy-save": 2}
    family_of_tool = {"iptables-legacy-save": 4, "ip6tables-legacy-save": 6}

    def save(argv: list[str], *_: object) -> str:
        return _save_text(chains[family_of_tool[argv[0]]], packets[argv[0]])

    monkeypatch.setattr(iptables, "_run", save)
    backend = iptables.IptablesBackend(mode="legacy", families=(4, 6))
    assert backend.datapath_counters().dropped[("ingress", "policy", "y", 4)] == 7
    packets["ip6tables-legacy-save"] = 5  # three more IPv6 drops, no IPv4 one
    dropped = backend.datapath_counters().dropped
    assert dropped[("ingress", "policy", "y", 4)] == 7
    assert dropped[("ingress", "policy", "y", 6)] == 5
    assert {key[3] for key in dropped} == {4, 6}


class _DropCounts:
    """The drop count hash as BCC hands it over: (key, value) pairs of the layout."""

    def __init__(self, counts: dict[tuple[int, int, int, int], int]) -> None:
        self.counts = counts  # (endpoint, direction, reason, family) -> packets

    def items(self) -> list[tuple[ebpf_layout.DropCountKey, ctypes.c_uint64]]:
        return [(ebpf_layout.DropCountKey(*k), ctypes.c_uint64(v)) for k, v in self.counts.items()]


class _Verdicts:
    """The per-CPU verdict array: a slot's value per CPU."""

    Key = ctypes.c_uint32

    def __init__(self, slots: dict[int, list[int]]) -> None:
        self.slots = slots

    def __getitem__(self, key: ctypes.c_uint32) -> list[int]:
        return self.slots.get(key.value, [0, 0])


def test_ebpf_counts_each_familys_packets_under_its_family(tmp_path):
    """The programs' counters read back: drop counts keyed by family (one endpoint's
    IPv4 and IPv6 entries are two sources, each with its own growth), verdict slots per
    family."""
    backend = EbpfBackend("node-1", tmp_path / "pins", tmp_path / "state.json", load=False)
    y_b = backend.planner.endpoint_ids.get("y/b")
    counts = {(y_b, DIR_INGRESS, REASON_DROP_POLICY, 4): 7}
    counts[(y_b, DIR_INGRESS, REASON_DROP_POLICY, 6)] = 2
    slots = {
        verdict_slot(6, DIR_EGRESS, REASON_DROP_UNPROGRAMMED): [1, 2],
        verdict_slot(4, DIR_INGRESS, REASON_ALLOWED_CT): [4, 0],
        verdict_slot(6, DIR_INGRESS, REASON_ALLOWED_POLICY): [0, 6],
    }
    backend.maps = SimpleNamespace(
        tables={"picket_drop_counts": _DropCounts(counts), "picket_verdicts": _Verdicts(slots)}
    )
    backend.datapath_counters()
    counts[(y_b, DIR_INGRESS, REASON_DROP_POLICY, 6)] = 5  # three more over IPv6
    counters = backend.datapath_counters()
    assert counters.dropped[("ingress", "policy", "y", 4)] == 7
    assert counters.dropped[("ingress", "policy", "y", 6)] == 5
    assert counters.dropped[("egress", "unprogrammed", "", 6)] == 3
    assert counters.dropped[("egress", "unprogrammed", "", 4)] == 0
    assert counters.allowed == {
        ("ingress", 4): 4,
        ("ingress", 6): 6,
        ("egress", 4): 0,
        ("egress", 6): 0,
    }


def test_the_drop_log_counts_denied_connections_per_family():
    objs = dual_stack([*model_cluster(), policy("y", "deny", {"podSelector": {}})])
    cache = _Cache(LiveState.from_state(state_of(objs)), compile_node(state_of(objs), "node-1"))
    writer = RecordWriter(Path("/nonexistent/journal.socket"), io.StringIO())
    droplog = DropLog("node-1", _NoCapture(), cache, writer)
    to_y_b = [
        PacketEvent("ingress", DROP, 17, ip_address(src), 41000, ip_address(dst), 80)
        for src, dst in (
            ("198.18.1.1", "198.18.1.12"),
            ("198.18.1.2", "198.18.1.12"),
            ("2001:2:0:1::1", "2001:2:0:1::12"),
        )
    ]
    droplog.handle([*to_y_b, to_y_b[2]], now=0.0)  # the repeat is the same connection
    assert droplog.connections == {("ingress", "y", 4): 2, ("ingress", "y", 6): 1}


class _NoCapture:
    def lost(self) -> int:
        return 0


class _Cache:
    def __init__(self, live: LiveState, ir: NodeIR) -> None:
        self.live, self.ir = live, ir

    def read_cache(self, read):
        return read(self.live, self.ir)


def test_peer_set_members_are_counted_per_family():
    from_x = {"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}
    allow = policy("y", "from-x", {"podSelector": {}, "ingress": [from_x]})
    agent = Agent("node-1", _Backend("iptables"), kinds=[])
    agent.ir = compile_node(state_of(dual_stack([*model_cluster(), allow])), "node-1")
    assert agent.view().peer_set_members == {4: 3, 6: 3}  # x's three pods, twice


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
        allowed = {("ingress", 4): 10, ("egress", 6): 12} if self.name == "ebpf" else None
        dropped = {("ingress", "policy", "y", 4): 3, ("ingress", "policy", "y", 6): 5}
        return DatapathCounters(dropped, {("egress", "x", 6): 1}, allowed)

    def rule_count(self) -> int:
        return 17

    def rules_by_family(self) -> dict[int, int]:
        return {4: 17, 6: 15} if self.name == "iptables" else {}

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
    for family, value in (("ipv4", 3), ("ipv6", 5)):
        assert (
            f'picket_dropped_packets_total{{direction="ingress",family="{family}",'
            f'namespace="y",reason="policy"}} {value}.0'
        ) in text
    assert (
        'picket_would_drop_packets_total{direction="egress",family="ipv6",namespace="x"} 1.0'
        in (text)
    )
    assert 'picket_peer_set_members{family="ipv4"} 0.0' in text
    assert 'picket_peer_set_members{family="ipv6"} 0.0' in text
    if backend == "ebpf":
        assert 'picket_allowed_packets_total{direction="ingress",family="ipv4"} 10.0' in text
        assert 'picket_allowed_packets_total{direction="egress",family="ipv6"} 12.0' in text
    else:
        assert 'picket_iptables_rules{family="ipv4"} 17.0' in text
        assert 'picket_iptables_rules{family="ipv6"} 15.0' in text
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
        'picket_dropped_packets_total{direction="ingress",family="ipv4",namespace="y",'
        'reason="policy"} 3.0'
    ) in text


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
