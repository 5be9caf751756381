"""A long-lived TCP connection from a lab pod, watched from a thread: what tests use to
see whether an established connection goes on or stops."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from tests.support.lab_cli import PICKET

# A client that keeps one TCP connection open and sends a line every 50 ms: it prints
# "echo" for each answer, and "gap" once no answer came for 300 ms.
CLIENT = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
s.recv(100)
s.settimeout(0.3)
while True:
    try:
        s.sendall(b"ping\n")
        data = s.recv(100)
        print("echo" if data else "closed", flush=True)
        if not data:
            break
    except OSError:
        print("gap", flush=True)
    time.sleep(0.05)
"""


class Connection:
    """A long-lived connection from a pod, watched from a thread."""

    def __init__(self, source: str, ip: str, port: int) -> None:
        self.proc = subprocess.Popen(
            [
                PICKET,
                "lab",
                "exec",
                source,
                "--",
                sys.executable,
                "-u",
                "-c",
                CLIENT,
                ip,
                str(port),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.strip()))

    def echoes_since(self, moment: float) -> int:
        return sum(1 for t, line in self.lines if t > moment and line == "echo")

    def last_echo(self) -> float:
        return max((t for t, line in self.lines if line == "echo"), default=0.0)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
