"""A journald for the lab where the host runs none, so the agents' drop records land where
`picket drops` reads them.

The running journald is used when there is one. Otherwise one is started that keeps its
journal in memory only: it runs in a private mount namespace with a tmpfs over /var/log
(so /var/log/journal, which may exist on the host, is out of its sight and it falls back
to /run/log/journal) and with a lab journald.conf bound over the host's. The host must
see its socket and journal files, so those stay on the host's /run; where /run is not a
tmpfs (it is an ordinary directory of the root disk on some VMs), tmpfs mounts on
/run/systemd/journal and /run/log/journal, made in the host namespace before the start,
keep the journal off the disk. Everything is recorded in the state directory, so
`stop_journald` removes exactly what `ensure_journald` made and nothing else."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from systemd import journal

SOCKET = Path("/run/systemd/journal/socket")
JOURNALD = Path("/lib/systemd/systemd-journald")
HOST_CONF = Path("/etc/systemd/journald.conf")
# Where journald puts its sockets and its volatile journal, and their parents: whichever
# of these did not exist before it started are removed when it stops.
RUNTIME_DIRS = (Path("/run/systemd/journal"), Path("/run/log/journal"))
PARENT_DIRS = (Path("/run/systemd"), Path("/run/log"))
TMPFS_OPTIONS = {RUNTIME_DIRS[0]: "mode=0755,size=4m", RUNTIME_DIRS[1]: "mode=0755,size=256m"}
PID_FILE, RECORD_FILE = "journald.pid", "journald.json"
CONF_FILE, LOG_FILE = "journald.conf", "journald.log"
PROBE_IDENTIFIER = "picket-lab"  # not "picket": `picket drops` must not list the probes
# Variables a service manager may have handed us that would make journald talk to it
# (readiness notifications, sockets it thinks were passed) instead of standing alone.
MANAGER_VARIABLES = (
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
)

LAB_CONF = """\
# Written by picket's lab (lab/journald.py) for the journald it runs.
[Journal]
Storage=volatile
RuntimeMaxUse=64M
# Tests count the records they send: journald's per-service rate limit would drop some.
RateLimitIntervalSec=0
# The host's kernel log and forwarding to consoles and syslog are no business of the lab.
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
"""


class JournaldError(RuntimeError):
    pass


def socket_accepts(path: Path = SOCKET) -> bool:
    """Whether a journald is listening: the socket file can outlive its journald."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def ensure_journald(state_dir: Path, timeout: float = 10.0) -> bool:
    """Make sure a journald accepts and stores records; True if this call started one."""
    if running_pid(state_dir) is not None or socket_accepts():
        return False
    if not JOURNALD.exists():
        raise JournaldError(f"no journald to start: {JOURNALD} is missing (install systemd)")
    state_dir.mkdir(parents=True, exist_ok=True)
    # A record left by a run that died is kept: what it says existed before is still
    # true, and its mounts may still be there.
    record = _read_record(state_dir) or {
        "existed": {str(p): p.exists() for p in (*PARENT_DIRS, *RUNTIME_DIRS)},
        "mounted": [],
    }
    _write_record(state_dir, record)
    try:
        for directory in RUNTIME_DIRS:
            if fs_type(directory) != "tmpfs":
                _mount_tmpfs(directory)
                record["mounted"].append(str(directory))
                _write_record(state_dir, record)
        proc = _start(state_dir)
        _wait_ready(state_dir, proc, timeout)
    except BaseException:
        stop_journald(state_dir)
        raise
    return True


def stop_journald(state_dir: Path, grace: float = 5.0) -> list[str]:
    """Stop the journald `ensure_journald` started and remove what it made (the process,
    mounts, directories that did not exist before); what was removed, for the user.
    A journald this module did not start is never touched."""
    removed = []
    pid = running_pid(state_dir)
    if pid is not None:
        _terminate(pid, grace)
        removed.append(f"systemd-journald (pid {pid})")
    (state_dir / PID_FILE).unlink(missing_ok=True)
    record = _read_record(state_dir)
    if record is None:
        return removed
    if socket_accepts():
        # Another journald serves the socket now (ours died and one was started): its
        # directories are not ours to take away. Keep the record for a later stop.
        return removed
    for path in reversed(record["mounted"]):
        if _is_mount_point(Path(path)):
            _unmount(Path(path))
            removed.append(f"tmpfs on {path}")
    existed = record["existed"]
    for path in (*RUNTIME_DIRS, *PARENT_DIRS):
        if existed.get(str(path), True) or not path.exists():
            continue
        if path in RUNTIME_DIRS:
            shutil.rmtree(path, ignore_errors=True)
        else:
            # A parent may have gained other users meanwhile: only an empty one goes.
            with contextlib.suppress(OSError):
                path.rmdir()
        if not path.exists():
            removed.append(str(path))
    for name in (RECORD_FILE, CONF_FILE):
        (state_dir / name).unlink(missing_ok=True)
    return removed


def running_pid(state_dir: Path) -> int | None:
    """The pid of the journald this module started from `state_dir`, if it is alive."""
    try:
        pid = int((state_dir / PID_FILE).read_text())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    # Checked against the command line so that a reused pid is never killed; the name is
    # there from the start, in unshare's and sh's arguments before journald's exec.
    return pid if b"systemd-journald" in cmdline and state != "Z" else None


def fs_type(path: Path) -> str:
    """The type of the filesystem `path` (or its nearest existing ancestor) is on."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    best, kind = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ", 1)
        mount_point = _unescape(fields[0].split()[4])
        inside = str(path) == mount_point or str(path).startswith(mount_point.rstrip("/") + "/")
        # Later lines are mounted on top of earlier ones at the same point: >= keeps them.
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, fields[1].split()[0]
    return kind


def _is_mount_point(path: Path) -> bool:
    target = str(path.resolve()) if path.exists() else str(path)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if _unescape(line.split()[4]) == target:
            return True
    return False


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _mount_tmpfs(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", TMPFS_OPTIONS[directory], "tmpfs", str(directory)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise JournaldError(f"cannot mount a tmpfs on {directory}: {proc.stderr.strip()}")


def _unmount(directory: Path) -> None:
    if subprocess.run(["umount", str(directory)], capture_output=True, check=False).returncode:
        # Busy (a journalctl still reading): detach it now, the kernel frees it after.
        subprocess.run(["umount", "--lazy", str(directory)], capture_output=True, check=False)


def _start(state_dir: Path) -> subprocess.Popen:
    conf = state_dir / CONF_FILE
    conf.write_text(LAB_CONF)
    steps = ["mount -t tmpfs tmpfs /var/log"]
    if HOST_CONF.exists():  # a bind mount needs a file to cover
        steps.append(f"mount --bind {shlex.quote(str(conf))} {HOST_CONF}")
    steps.append(f"exec {JOURNALD}")
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", " && ".join(steps)]
    env = {k: v for k, v in os.environ.items() if k not in MANAGER_VARIABLES}
    with open(state_dir / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
            env=env,
        )
    (state_dir / PID_FILE).write_text(str(proc.pid))
    return proc


def _wait_ready(state_dir: Path, proc: subprocess.Popen, timeout: float) -> None:
    """Until a record sent now can be read back with journalctl, as the agents' will."""
    probe = uuid.uuid4().hex
    sent = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = proc.poll()
        if status is not None:
            raise JournaldError(
                f"systemd-journald exited with status {status}: {_log_tail(state_dir)}"
            )
        if not sent and socket_accepts():
            with contextlib.suppress(OSError):
                journal.send(
                    "picket lab: journald is up",
                    SYSLOG_IDENTIFIER=PROBE_IDENTIFIER,
                    PICKET_LAB_PROBE=probe,
                )
                sent = True
        if sent and _readable(probe):
            return
        time.sleep(0.05)
    what = "a record sent to it was not readable with journalctl" if sent else "no socket"
    raise JournaldError(
        f"systemd-journald not ready after {timeout:.0f} s ({what}): {_log_tail(state_dir)}"
    )


def _readable(probe: str) -> bool:
    command = ["journalctl", "--output=json", "--no-pager", f"PICKET_LAB_PROBE={probe}"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe in proc.stdout


def _log_tail(state_dir: Path) -> str:
    try:
        lines = (state_dir / LOG_FILE).read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return " | ".join(lines[-3:]) or f"nothing in {state_dir / LOG_FILE}"


def _terminate(pid: int, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; reaped if it is our child."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _read_record(state_dir: Path) -> dict | None:
    try:
        return json.loads((state_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None


def _write_record(state_dir: Path, record: dict) -> None:
    (state_dir / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
