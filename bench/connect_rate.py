"""New TCP connections per second between two lab namespaces, for bench/datapath_hook.py.

Processes, not threads: each side must not wait on another's GIL. Each process enters
its namespace once (lab.netns.entered) and opens plain sockets there. A connection is a
handshake and a reset: the client closes with SO_LINGER 0, so no TIME_WAIT is left and
its ports never run out in a few seconds at thousands per second; the server accepts and
closes."""

from __future__ import annotations

import multiprocessing
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

from lab.netns import entered

_fork = multiprocessing.get_context("fork")


def _accept_loop(netns: str, ip: str, port: int, ready: Event) -> None:
    with entered(netns):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((ip, port))
    server.listen(4096)
    ready.set()
    while True:
        conn, _ = server.accept()
        conn.close()


@contextmanager
def accepting(netns: str, ip: str, port: int) -> Iterator[None]:
    """A process in `netns` accepting and closing connections to ip:port, for the body."""
    ready = _fork.Event()
    proc = _fork.Process(target=_accept_loop, args=(netns, ip, port, ready), daemon=True)
    proc.start()
    try:
        if not ready.wait(10):
            raise RuntimeError(f"no connection server on {ip}:{port} in {netns}")
        yield
    finally:
        proc.terminate()
        proc.join(5)


def _connect_loop(netns: str, ip: str, port: int, seconds: float, out: Connection) -> None:
    linger = struct.pack("ii", 1, 0)
    done = failed = 0
    with entered(netns):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            sock.settimeout(1.0)
            try:
                sock.connect((ip, port))
                done += 1
            except OSError:
                failed += 1
            finally:
                sock.close()
    out.send((done, failed))


def connect_rate(netns: str, ip: str, port: int, seconds: float, workers: int) -> tuple[int, int]:
    """Connections `workers` processes in `netns` completed to ip:port in `seconds`, and
    attempts that failed (1 s connect timeout)."""
    pipes, procs = [], []
    for _ in range(workers):
        mine, theirs = _fork.Pipe(duplex=False)
        args = (netns, ip, port, seconds, theirs)
        procs.append(_fork.Process(target=_connect_loop, args=args, daemon=True))
        pipes.append(mine)
    for proc in procs:
        proc.start()
    try:
        results = [pipe.recv() for pipe in pipes]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
    return sum(d for d, _ in results), sum(f for _, f in results)
