"""The lab's background processes: started detached with a pid file and a log each,
stopped by pid (checked against the command line, so a reused pid is never killed)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# Every lab process runs `python -m lab.<part>` or `picket agent`. `-m agent.lab.` is
# how a lab brought up before the lab had a package of its own ran them: a newer
# `picket lab down` still recognises and stops those.
LAB_MODULES = ("-m lab.", "-m agent.lab.")
# The checkout the lab runs from, so `python -m lab...` and `-m agent.cli` resolve to it.
ROOT = Path(__file__).resolve().parents[1]
CONTAINER_MARKER = "PICKET_LAB_PROCESS"  # in the environment of a lab container's process


def _runs_lab_code(cmdline: str) -> bool:
    return any(marker in cmdline for marker in LAB_MODULES)


def _pid_file(state: Path, name: str) -> Path:
    return state / "pids" / f"{name}.pid"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _container_of(pid: int) -> str | None:
    """The lab container a process is (lab/kubelet/container.py marks its environment):
    what a container runs need not be lab code (`sleep infinity`)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    prefix = CONTAINER_MARKER.encode() + b"="
    found = [e[len(prefix) :].decode() for e in environ if e.startswith(prefix)]
    return found[0] if found else None


def running(state: Path, name: str) -> int | None:
    """The pid of lab process `name` if it is alive."""
    try:
        pid = int(_pid_file(state, name).read_text())
    except (OSError, ValueError):
        return None
    cmdline = _cmdline(pid)
    is_ours = _runs_lab_code(cmdline) or "picket agent" in cmdline or "agent.cli agent" in cmdline
    is_ours = is_ours or _container_of(pid) == name
    return pid if is_ours and not _is_zombie(pid) else None


def alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie has)."""
    return Path(f"/proc/{pid}").exists() and not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def start(state: Path, name: str, argv: list[str], netns: str | None = None) -> int:
    """Start `python -m ...` (argv after the interpreter) detached; returns its pid."""
    (state / "pids").mkdir(parents=True, exist_ok=True)
    (state / "logs").mkdir(parents=True, exist_ok=True)
    command = [sys.executable, *argv]
    if netns is not None:
        # nsenter, not `ip netns exec`: that also remounts /sys, which would hide the
        # BPF filesystem (pinned maps) from the agents.
        command = ["nsenter", f"--net=/run/netns/{netns}", *command]
    with open(state / "logs" / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
        )
    _pid_file(state, name).write_text(str(proc.pid))
    return proc.pid


def run_once(command: list[str], netns: str | None = None) -> int:
    """Run a command to completion (in `netns`), output discarded; returns its status."""
    if netns is not None:
        # nsenter, not `ip netns exec`: that also remounts /sys, which would hide the
        # BPF filesystem (pinned maps) from the agents.
        command = ["nsenter", f"--net=/run/netns/{netns}", *command]
    return subprocess.run(command, capture_output=True, check=False, cwd=ROOT).returncode


def stop(state: Path, name: str, grace: float = 5.0, started: int | None = None) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds. True if a process was stopped.
    `started`: the pid the caller started it as, for a process that may still be
    exec'ing (its command line is not yet one to recognise)."""
    pid = running(state, name)
    if pid is None and started is not None and alive(started):
        pid = started
    _pid_file(state, name).unlink(missing_ok=True)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            _reap(pid)
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    _reap(pid)
    return True


def stop_all(state: Path, names: list[str], grace: float = 5.0) -> list[str]:
    """`stop` for several processes at once: all signalled, then waited for within one
    `grace` (`lab down` would otherwise wait for each in turn). Returns the names of
    those that were running."""
    pids = {}
    for name in names:
        pid = running(state, name)
        _pid_file(state, name).unlink(missing_ok=True)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            pids[name] = pid
    deadline = time.monotonic() + grace
    waiting = dict(pids)
    while waiting and time.monotonic() < deadline:
        waiting = {n: p for n, p in waiting.items() if alive(p)}
        time.sleep(0.05)
    for pid in waiting.values():
        os.kill(pid, signal.SIGKILL)
    for pid in pids.values():
        _reap(pid)
    return list(pids)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def names(state: Path) -> list[str]:
    folder = state / "pids"
    return sorted(p.stem for p in folder.glob("*.pid")) if folder.exists() else []


def lab_process_pids() -> list[int]:
    """Every live process running lab code, whatever its pid file says (for checks)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmdline = _cmdline(int(entry.name))
            ours = _runs_lab_code(cmdline) or "-m agent.cli agent " in cmdline
            ours = ours or _container_of(int(entry.name)) is not None
            if ours and not _is_zombie(int(entry.name)):
                found.append(int(entry.name))
    return found
