"""The lab's journald and `picket drops` on a real journal: records sent the way the agent
sends them (python-systemd) are read back by the real CLI, filtered, followed.

Where a journald already runs these tests use it and never stop it; otherwise they start
the lab's own (volatile, in memory) and check that stopping it leaves nothing behind.
Every test tags its records with a fresh PICKET_NODE, so only its own records count."""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from systemd import journal

from agent.droplog.table import COLUMNS
from lab import journald
from tests.support.drops import drop, to_external
from tests.support.lab_cli import PICKET, picket

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="starts systemd-journald and mounts tmpfs: needs root"
)

PERSISTENT_JOURNAL = Path("/var/log/journal")
WATCHED_MOUNTS = ("/run/systemd", "/run/log", "/var/log")


def fresh_node() -> str:
    return f"test-{secrets.token_hex(4)}"


def send_drop(node: str, **fields: str) -> None:
    """One drop record as the agent writes it: every field, as strings (the same record
    the table's unit tests use)."""
    full = drop(**{"PICKET_NODE": node, **fields})
    record = {k: v for k, v in full.items() if k.startswith("PICKET_")}
    message = (
        f"DROP {record['PICKET_DIRECTION']} {record['PICKET_PROTOCOL']} "
        f"{record['PICKET_SRC_IP']}:{record['PICKET_SRC_PORT']} -> "
        f"{record['PICKET_DST_IP']}:{record['PICKET_DST_PORT']}"
    )
    journal.send(message, SYSLOG_IDENTIFIER="picket", **record)


def send_summary(node: str, suppressed: int, lost: int) -> None:
    journal.send(
        f"drop log: {suppressed} denied connections not logged in the last 10 s "
        f"(budget 100/s, burst 200); {lost} packet events lost in capture",
        SYSLOG_IDENTIFIER="picket",
        PICKET_VERDICT="suppressed",
        PICKET_SUPPRESSED=str(suppressed),
        PICKET_LOST=str(lost),
        PICKET_NODE=node,
    )


def journal_records(node: str) -> list[dict]:
    out = subprocess.run(
        [
            "journalctl",
            "-o",
            "json",
            "--no-pager",
            "SYSLOG_IDENTIFIER=picket",
            f"PICKET_NODE={node}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def wait_for_records(node: str, count: int, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        records = journal_records(node)
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def mount_points() -> set[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    points = {line.split()[4] for line in lines}
    return {p for p in points if p.startswith(WATCHED_MOUNTS)}


def listing(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*")) if root.exists() else []


# --- the journald ------------------------------------------------------------------


def test_ensure_starts_a_volatile_journald_and_stop_leaves_nothing(tmp_path):
    state = tmp_path / "state"
    watched = (*journald.RUNTIME_DIRS, *journald.PARENT_DIRS)
    existed = {p: p.exists() for p in watched}
    persistent, mounts = listing(PERSISTENT_JOURNAL), mount_points()
    preexisting = journald.socket_accepts()

    started = journald.ensure_journald(state)
    try:
        assert started is not preexisting
        pid = journald.running_pid(state)
        node = fresh_node()
        send_drop(node)
        seen = json.loads(picket("drops", "--json", "--node", node).stdout)
        assert seen["PICKET_NODE"] == node and seen["PICKET_DST_POD"] == "db"
        if not started:
            # Someone else's journald: used, not ours to stop.
            assert pid is None
            assert journald.stop_journald(state) == []
            assert journald.socket_accepts()
            return
        assert pid is not None
        assert Path(f"/proc/{pid}/exe").resolve().name == "systemd-journald"
        # Volatile: the journal files the host sees are in memory, the persistent journal
        # directory is untouched, and in journald's own namespace /var/log is a tmpfs.
        files = list(Path("/run/log/journal").rglob("*.journal"))
        assert files, "journald wrote no journal under /run/log/journal"
        assert {journald.fs_type(f) for f in files} == {"tmpfs"}
        assert listing(PERSISTENT_JOURNAL) == persistent
        its_mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        assert any(m.split()[4] == "/var/log" and " - tmpfs " in m for m in its_mounts)
        assert journald.ensure_journald(state) is False  # idempotent while it runs
    finally:
        removed = journald.stop_journald(state)

    assert f"systemd-journald (pid {pid})" in removed
    assert not Path(f"/proc/{pid}").exists()
    assert not journald.socket_accepts()
    assert {p: p.exists() for p in watched} == existed
    assert mount_points() == mounts
    assert listing(PERSISTENT_JOURNAL) == persistent
    assert sorted(p.name for p in state.iterdir()) == [journald.LOG_FILE]
    assert journald.stop_journald(state) == []


def test_a_journald_that_fails_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    if journald.socket_accepts():
        pytest.skip("a journald is running, so ensure_journald would start none")
    watched = (*journald.RUNTIME_DIRS, *journald.PARENT_DIRS)
    existed, mounts = {p: p.exists() for p in watched}, mount_points()
    monkeypatch.setattr(journald, "JOURNALD", Path("/bin/false"))
    state = tmp_path / "state"
    with pytest.raises(journald.JournaldError, match="exited with status 1"):
        journald.ensure_journald(state, timeout=5)
    assert {p: p.exists() for p in watched} == existed
    assert mount_points() == mounts
    assert journald.running_pid(state) is None


# --- picket drops on the journal ---------------------------------------------------


@pytest.fixture(scope="module")
def running_journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    state = tmp_path_factory.mktemp("journald")
    journald.ensure_journald(state)
    try:
        yield
    finally:
        journald.stop_journald(state)  # only if this fixture started it


@pytest.fixture(scope="module")
def node(running_journal: None) -> str:
    """A node with four records: pod to pod, pod to the outside (audit mode), the node to
    a pod, and a rate limit summary."""
    name = fresh_node()
    send_drop(name)
    external = {k: v for k, v in to_external().items() if k.startswith("PICKET_")}
    send_drop(name, **{**external, "PICKET_NODE": name})
    send_drop(
        name,
        PICKET_SRC_NAMESPACE="",
        PICKET_SRC_POD="",
        PICKET_SRC_IP="10.0.0.11",
        PICKET_SRC_PORT="50000",
        PICKET_SRC_KIND="node",
        PICKET_DST_NAMESPACE="x",
        PICKET_DST_POD="a",
        PICKET_DST_IP="10.1.0.5",
        PICKET_DST_PORT="8080",
        PICKET_POLICIES="x/default-deny",
        PICKET_REPEATS="1",
    )
    send_summary(name, 17, 2)
    assert len(wait_for_records(name, 4)) == 4
    return name


def table(*args: str) -> list[dict[str, str]]:
    """`picket drops` rows, cut at the header's column starts."""
    lines = picket("drops", *args).stdout.splitlines()
    if not lines:
        return []
    head = lines[0]
    assert head.split() == list(COLUMNS)
    starts = [head.index(c) for c in COLUMNS]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [
        {c: line[a:b].strip() for c, (a, b) in zip(COLUMNS, bounds, strict=True)}
        for line in lines[1:]
    ]


def flows(rows: list[dict[str, str]]) -> list[str]:
    return [f"{r['SOURCE']} {r['DESTINATION']}" for r in rows]


def test_drops_table(node):
    rows = table("--node", node)
    assert [{k: v for k, v in r.items() if k != "TIME"} for r in rows[:3]] == [
        {
            "NODE": node,
            "VERDICT": "drop",
            "DIR": "ingress",
            "PROTO": "TCP",
            "SOURCE": "x/a:41234",
            "DESTINATION": "y/db:5432",
            "POLICIES": "y/default-deny,y/allow-backend",
            "REPEATS": "3",
        },
        {
            "NODE": node,
            "VERDICT": "would-drop",
            "DIR": "egress",
            "PROTO": "UDP",
            "SOURCE": "y/web:5353",
            "DESTINATION": "203.0.113.9:53",
            "POLICIES": "y/egress-lock",
            "REPEATS": "1",
        },
        {
            "NODE": node,
            "VERDICT": "drop",
            "DIR": "ingress",
            "PROTO": "TCP",
            "SOURCE": "10.0.0.11:50000",
            "DESTINATION": "x/a:8080",
            "POLICIES": "x/default-deny",
            "REPEATS": "1",
        },
    ]
    summary_line = picket("drops", "--node", node).stdout.splitlines()[-1]
    assert summary_line.endswith(
        "17 denied connections not logged (rate limit); 2 packet events lost in capture"
    )
    assert rows[3]["VERDICT"] == "suppressed"
    for r in rows:
        when = datetime.strptime(r["TIME"], "%Y-%m-%d %H:%M:%S")
        assert abs((datetime.now() - when).total_seconds()) < 120


def test_drops_filters(node):
    pod_to_pod, to_outside, from_node = (
        "x/a:41234 y/db:5432",
        "y/web:5353 203.0.113.9:53",
        ("10.0.0.11:50000 x/a:8080"),
    )
    assert flows(table("--node", node, "--namespace", "x")) == [pod_to_pod, from_node]
    assert flows(table("--node", node, "--namespace", "y")) == [pod_to_pod, to_outside]
    assert flows(table("--node", node, "--pod", "db")) == [pod_to_pod]
    assert flows(table("--node", node, "--pod", "y/db")) == [pod_to_pod]
    assert flows(table("--node", node, "--pod", "x/a")) == [pod_to_pod, from_node]
    assert table("--node", node, "--pod", "x/db") == []
    assert flows(table("--node", node, "--policy", "allow-backend")) == [pod_to_pod]
    assert flows(table("--node", node, "--policy", "y/allow-backend")) == [pod_to_pod]
    assert table("--node", node, "--policy", "x/allow-backend") == []
    assert flows(table("--node", node, "--verdict", "would-drop")) == [to_outside]
    assert [r["VERDICT"] for r in table("--node", node, "-n", "2")] == ["drop", "suppressed"]
    assert [r["VERDICT"] for r in table("--node", node, "--verdict", "suppressed")] == [
        "suppressed"
    ]
    assert table("--node", fresh_node()) == []


def test_drops_json(node):
    out = picket("drops", "--node", node, "--json").stdout
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["PICKET_VERDICT"] for r in records] == ["drop", "would-drop", "drop", "suppressed"]
    assert records[1]["PICKET_DST_KIND"] == "external"
    assert records[2]["PICKET_SRC_KIND"] == "node"
    assert records[3]["PICKET_SUPPRESSED"] == "17"
    assert all(r["PICKET_NODE"] == node and r["SYSLOG_IDENTIFIER"] == "picket" for r in records)
    out = picket("drops", "--node", node, "--json", "--policy", "egress-lock").stdout
    assert [json.loads(line)["PICKET_SRC_POD"] for line in out.splitlines()] == ["web"]


class Lines:
    """A process's output lines, readable with a timeout."""

    def __init__(self, stream) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def next(self, timeout: float = 5.0) -> str | None:
        return self.queue.get(timeout=timeout)


def journalctl_followers(node: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline[0].endswith(b"journalctl") and f"PICKET_NODE={node}".encode() in cmdline:
                found.append(int(entry.name))
    return found


def follow(node_name: str) -> tuple[subprocess.Popen, Lines]:
    proc = subprocess.Popen(
        [PICKET, "drops", "--follow", "--node", node_name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, Lines(proc.stdout)


@pytest.mark.parametrize("backlog", [True, False], ids=["after-backlog", "empty-journal"])
def test_drops_follow_streams_new_records_and_ends_on_ctrl_c(node, backlog):
    name = node if backlog else fresh_node()
    proc, lines = follow(name)
    try:
        assert lines.next().split() == list(COLUMNS)
        if backlog:
            shown = [lines.next() for _ in range(4)]
            assert "x/a:41234" in shown[0] and "suppressed" in shown[3]
        send_drop(name, PICKET_DST_PORT="5433", PICKET_REPEATS="7")
        line = lines.next()
        assert line is not None and "y/db:5433" in line and line.endswith("7")
        send_drop(name, PICKET_SRC_NAMESPACE="elsewhere", PICKET_DST_PORT="5434")
        assert "elsewhere/a:41234" in (lines.next() or "")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
        assert proc.stderr.read() == ""
        assert journalctl_followers(name) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_drops_follow_ends_quietly_when_its_reader_goes_away(running_journal):
    name = fresh_node()
    proc = subprocess.Popen(
        [PICKET, "drops", "--follow", "--node", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().split() == list(COLUMNS)
        proc.stdout.close()  # `| head -1`
        for port in range(6000, 6010):  # the first write after the close is what fails
            send_drop(name, PICKET_DST_PORT=str(port))
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        assert proc.wait(timeout=5) == 0
        assert proc.stderr.read() == ""
        assert journalctl_followers(name) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_drops_follow_ends_on_sigterm_without_leaving_journalctl(running_journal):
    name = fresh_node()
    proc, lines = follow(name)
    try:
        assert lines.next().split() == list(COLUMNS)
        deadline = time.monotonic() + 5
        while not journalctl_followers(name) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert journalctl_followers(name)
        proc.terminate()
        assert proc.wait(timeout=5) == 0
        assert journalctl_followers(name) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
