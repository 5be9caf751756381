"""The agent's pure parts: fail-closed snapshots, the coalescing sync runner, backoff."""

from __future__ import annotations

import copy
import json
import threading
import time
from ipaddress import ip_address

import pytest

from agent.compiler.compile import compile_node
from agent.loop.agent import Agent
from agent.loop.snapshot import Snapshotter, fail_closed
from agent.loop.sync import SyncRunner
from agent.loop.watch import BACKOFF_CAP, Kind, WatchExpired, backoff, watch_events
from tests.support.builders import model_cluster, policy


def raw_by_kind(objs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for obj in objs:
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": "1"}}
        out.setdefault(obj["kind"], []).append(obj)
    return out


def test_invalid_policy_fails_closed_on_its_selector():
    bad = policy(
        "y",
        "broken",
        {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 0}]}]},
    )
    snap = Snapshotter()
    state = snap.state(raw_by_kind([*model_cluster(), bad]))
    assert snap.invalid == {"NetworkPolicy": 1}
    ir = compile_node(state, "node-1")
    assert ir.endpoints["y/a"].ingress is not None
    assert ir.endpoints["y/a"].ingress.clauses == ()  # isolated, admits nothing
    assert ir.endpoints["y/b"].ingress is None


def test_unreadable_policy_isolates_its_whole_namespace_both_ways():
    bad = policy("y", "broken", {"podSelector": "pod=a", "policyTypes": "sometimes"})
    obj = fail_closed({**bad})
    assert obj.pod_selector.is_empty and obj.policy_types == ("Ingress", "Egress")


def test_invalid_pod_keeps_what_policies_select_on():
    pod = next(o for o in model_cluster() if o["kind"] == "Pod")
    pod = {
        **pod,
        "spec": {
            **pod["spec"],
            "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 99999}]}],
        },
    }
    kept = fail_closed(pod)
    assert kept.labels == pod["metadata"]["labels"] and kept.node_name == "node-1"
    assert [str(ip) for ip in kept.ips] == [pod["status"]["podIP"]]


def test_snapshot_parses_each_version_once():
    snap = Snapshotter()
    objs = raw_by_kind(model_cluster())
    snap.state(objs)
    first = dict(snap._parsed)
    snap.state(objs)
    assert all(snap._parsed[k] is first[k] for k in first)


def test_a_burst_of_requests_is_a_handful_of_syncs():
    calls: list[bool] = []
    busy, release = threading.Event(), threading.Event()

    def sync(full: bool, requested: float | None) -> None:
        calls.append(full)
        if not full and len(calls) == 2:
            busy.set()
            release.wait(5)  # programming is slow; the burst arrives meanwhile

    runner = SyncRunner(sync, resync_period=3600, batch_window=0.005)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.001)  # the initial full sync comes first
    runner.request()
    assert busy.wait(5)
    for _ in range(999):
        runner.request()
    release.set()
    time.sleep(0.2)
    runner.stop()
    thread.join(2)
    assert calls[0] is True
    assert calls[1:] == [False, False]  # the 999 requests became one sync


def test_a_failed_sync_is_retried():
    calls: list[int] = []

    def sync(full: bool, requested: float | None) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the kernel said no")

    runner = SyncRunner(sync, resync_period=3600, retry_interval=0.01)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    time.sleep(0.05)
    runner.request()
    time.sleep(0.1)
    runner.stop()
    thread.join(2)
    assert len(calls) == 3
    assert runner.last_success is not None


def test_backoff_grows_with_jitter_and_a_cap():
    assert 0.1 <= backoff(1) <= 0.3
    assert 0.4 <= backoff(3) <= 1.2
    assert all(backoff(50) <= BACKOFF_CAP * 1.5 for _ in range(100))
    assert len({round(backoff(5), 6) for _ in range(20)}) > 1


class _Chunked:
    """A watch response delivering its bytes in arbitrary chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def stream(self, amt: object = None, decode_content: bool = False) -> list[bytes]:
        return self.chunks

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


def test_watch_events_are_split_on_lines_whatever_the_chunks():
    events = [{"type": "ADDED", "object": {"metadata": {"name": str(i)}}} for i in range(3)]
    blob = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    response = _Chunked([blob[:7], blob[7:50], blob[50:51], blob[51:]])
    found = list(watch_events(lambda **kw: response, "1"))
    assert [(k, o["metadata"]["name"]) for k, o in found] == [
        ("ADDED", "0"),
        ("ADDED", "1"),
        ("ADDED", "2"),
    ]
    assert response.closed


def test_watch_error_410_raises_expired():
    error = {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "code": 410,
            "reason": "Expired",
            "message": "too old resource version: 1 (5)",
        },
    }
    response = _Chunked([json.dumps(error).encode() + b"\n"])
    with pytest.raises(WatchExpired) as info:
        list(watch_events(lambda **kw: response, "1"))
    assert info.value.status == 410


def test_only_narrowing_changes_rescan_conntrack():
    from agent.compiler.diff import IRDiff, MemberChange
    from agent.compiler.narrowing import narrows

    assert not narrows(IRDiff())
    assert not narrows(IRDiff(members={"s": MemberChange(frozenset({1}), frozenset())}))
    assert not narrows(IRDiff(endpoints_added={"x/a": None}))
    assert narrows(IRDiff(members={"s": MemberChange(frozenset(), frozenset({1}))}))
    assert narrows(IRDiff(endpoints_changed={"x/a": None}))
    assert narrows(IRDiff(sets_removed=("s",)))


class _Listed:
    """A list call answering with fixed objects, as the API's list does."""

    def __init__(self, objs) -> None:
        self.data = json.dumps({"items": objs, "metadata": {"resourceVersion": "1"}})

    def __call__(self, **kwargs):
        return self


class _RecordingBackend:
    def __init__(self) -> None:
        self.applied = []

    def apply(self, ir, change=None, full=True):
        self.applied.append((ir, change, full))
        return True

    def remove_denied(self, ir, gone=frozenset(), touching=None):
        return 0

    def rule_count(self):
        return 0


def test_one_relabel_follows_the_trail_from_the_informer_to_backend_apply():
    from_b = {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}
    objs = [*model_cluster(), policy("y", "allow-b", {"podSelector": {}, "ingress": [from_b]})]
    kinds = [
        Kind(kind, _Listed([o for o in objs if o["kind"] == kind]))
        for kind in ("Namespace", "Node", "Pod", "NetworkPolicy")
    ]
    backend = _RecordingBackend()
    agent = Agent("node-1", backend, kinds)
    requests = []
    for informer in agent.informers:
        informer.on_change = lambda: requests.append(1)
        informer._relist()
    agent.sync(full=True, requested=None)
    (y_a,) = [o for o in objs if o["metadata"] == {**o["metadata"], "namespace": "y", "name": "a"}]
    relabelled = copy.deepcopy(y_a)
    relabelled["metadata"]["labels"] = {"pod": "b"}
    pods = next(i for i in agent.informers if i.kind.name == "Pod")
    requests.clear()
    pods._apply("MODIFIED", relabelled)  # the watch's hop
    assert requests == [1]  # a sync is requested (SyncRunner.request in the agent)
    assert set(pods._pending) == {"y/a"}
    agent.sync(full=False, requested=time.monotonic())
    assert pods.take_pending() == {}  # handed over by the sync
    _, change, full = backend.applied[-1]
    assert not full
    (members,) = change.members.values()
    assert [str(ip) for ip in members.added] == ["198.18.1.11"] and not members.removed


def test_the_drop_log_reads_the_ir_being_programmed_and_the_first_sync_cleans_conntrack():
    """A packet the new rules drop while the backend applies them is described with the
    new IR (its policies), not the one programmed before; and the first sync removes
    the conntrack entries policy denies (connections from before the agent)."""
    objs = [*model_cluster(), policy("y", "deny", {"podSelector": {}})]
    kinds = [
        Kind(kind, _Listed([o for o in objs if o["kind"] == kind]))
        for kind in ("Namespace", "Node", "Pod", "NetworkPolicy")
    ]
    seen, cleaned = [], []

    class Backend(_RecordingBackend):
        def apply(self, ir, change=None, full=True):
            seen.append(agent.read_cache(lambda live, current: current))
            return super().apply(ir, change, full)

        def remove_denied(self, ir, gone=frozenset(), touching=None):
            cleaned.append(ir)
            return 0

    backend = Backend()
    agent = Agent("node-1", backend, kinds)
    for informer in agent.informers:
        informer._relist()
    agent.sync(full=True, requested=None)
    programmed = backend.applied[-1][0]
    assert seen == [programmed] and "y/a" in programmed.endpoints
    assert cleaned == [programmed]
    assert agent.read_cache(lambda live, current: current) is programmed


def test_connections_of_an_address_whose_pod_went_are_removed_and_a_relabel_keeps_them():
    """A pod deleted (here, or on another node: this node's conntrack holds connections
    with remote pods too) hands its address to remove_denied, so that a new pod there
    inherits nothing; a relabelled pod keeps its address and its connections."""
    objs = model_cluster()
    kinds = [
        Kind(kind, _Listed([o for o in objs if o["kind"] == kind]))
        for kind in ("Namespace", "Node", "Pod", "NetworkPolicy")
    ]
    gone_seen = []

    class Backend(_RecordingBackend):
        def remove_denied(self, ir, gone=frozenset(), touching=None):
            gone_seen.append(gone)
            return 0

    agent = Agent("node-1", Backend(), kinds)
    for informer in agent.informers:
        informer._relist()
    agent.sync(full=True, requested=None)
    assert gone_seen == [frozenset()]
    pods = next(i for i in agent.informers if i.kind.name == "Pod")
    by_ref = {
        f"{o['metadata']['namespace']}/{o['metadata']['name']}": o
        for o in objs
        if o["kind"] == "Pod"
    }
    relabelled = copy.deepcopy(by_ref["y/a"])
    relabelled["metadata"]["labels"] = {**relabelled["metadata"]["labels"], "extra": "1"}
    pods._apply("MODIFIED", relabelled)
    agent.sync(full=False, requested=time.monotonic())
    assert all(not gone for gone in gone_seen[1:])
    for ref in ("x/b", "z/c"):  # one of each node (the model spreads them)
        pods._apply("DELETED", by_ref[ref])
    agent.sync(full=False, requested=time.monotonic())
    want = {ip_address(by_ref[r]["status"]["podIP"]) for r in ("x/b", "z/c")}
    assert gone_seen[-1] == want
