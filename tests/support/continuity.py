"""Whether enforcement holds while something changes (an agent's upgrade): probers that
try, every 20 ms, connections policy denies (none may connect) and connections policy
allows (none may fail), and one allowed connection kept open and echoing through it
(the lab's responders echo what a client sends after their identity line)."""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass, field

from lab.netns import socket_in

EVERY = 0.02
ALLOWED_TIMEOUT = 2.0
Route = tuple[str, str, int]  # (source netns, destination address, TCP port)


@dataclass
class Seen:
    denied_connected: dict[Route, int] = field(default_factory=dict)
    denied_tries: int = 0
    allowed_failed: dict[Route, int] = field(default_factory=dict)
    allowed_tries: int = 0
    echoes: int = 0
    echo_failures: list[str] = field(default_factory=list)


class Held:
    def __init__(self, denied: list[Route], allowed: list[Route], kept_open: Route) -> None:
        self.denied, self.allowed, self.kept_open = denied, allowed, kept_open
        self.seen = Seen()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._conn: socket.socket | None = None

    def __enter__(self) -> Held:
        self._conn = _connect(self.kept_open, ALLOWED_TIMEOUT)
        self._conn.settimeout(ALLOWED_TIMEOUT)
        self._conn.recv(256)  # the responder's identity line
        targets = [(self._deny, r) for r in self.denied] + [(self._allow, r) for r in self.allowed]
        targets.append((self._echo, self.kept_open))
        for target, route in targets:
            thread = threading.Thread(target=target, args=(route,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(ALLOWED_TIMEOUT + 1)
        if self._conn is not None:
            self._conn.close()

    def _deny(self, route: Route) -> None:
        while not self._stop.is_set():
            sock = socket_in(route[0], socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                sock.connect_ex(route[1:])
                _, writable, _ = select.select([], [sock], [], EVERY)
                connected = writable and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            finally:
                sock.close()
            with self._lock:
                self.seen.denied_tries += 1
                if connected:
                    self.seen.denied_connected[route] = self.seen.denied_connected.get(route, 0) + 1

    def _allow(self, route: Route) -> None:
        while not self._stop.is_set():
            try:
                _connect(route, ALLOWED_TIMEOUT).close()
                failed = False
            except OSError:
                failed = True
            with self._lock:
                self.seen.allowed_tries += 1
                if failed:
                    self.seen.allowed_failed[route] = self.seen.allowed_failed.get(route, 0) + 1
            self._stop.wait(EVERY)

    def _echo(self, route: Route) -> None:
        assert self._conn is not None
        while not self._stop.is_set():
            word = f"{time.monotonic():.6f}\n".encode()
            try:
                self._conn.sendall(word)
                got = b""
                while len(got) < len(word):
                    chunk = self._conn.recv(len(word) - len(got))
                    if not chunk:
                        raise OSError("closed by the peer")
                    got += chunk
                if got != word:
                    raise OSError(f"echoed {got!r}, not {word!r}")
                with self._lock:
                    self.seen.echoes += 1
            except OSError as exc:
                with self._lock:
                    self.seen.echo_failures.append(str(exc))
                return
            self._stop.wait(0.1)


def _connect(route: Route, timeout: float) -> socket.socket:
    sock = socket_in(route[0], socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(route[1:])
    except OSError:
        sock.close()
        raise
    return sock
