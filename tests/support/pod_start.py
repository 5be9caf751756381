"""Watching a pod from before it exists: probers that try to reach its address every
5 ms from other pods, and a sender that, from the moment the pod's network namespace
appears, sends from inside it every 5 ms to a listener in another pod. What arrives
either way is recorded (issue #16: a pod's first packet meets its policy)."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field

from lab.config import pod_netns
from lab.netns import entered, socket_in

EVERY = 0.005
LISTEN_PORT = 9419  # the sender's datagrams; no lab pod serves it


@dataclass
class Reached:
    """What the probers and the sender saw: connections made to the pod (by prober
    netns), datagrams from the pod that arrived, and how many tries each made."""

    connected: dict[str, int] = field(default_factory=dict)
    first_connected: float | None = None
    arrived: int = 0
    probes: int = 0
    sends: int = 0


class PodWatch:
    """Probers from `probers` (netns names) to `ip`:`port` (TCP), and, once the next
    pod's network namespace appears, a sender from it to `listener` (a netns and its pod
    address): one pod is created while it runs."""

    def __init__(
        self, ip: str, port: int, probers: list[str], listener: tuple[str, str] | None = None
    ) -> None:
        self.ip, self.port, self.probers = ip, port, probers
        self.listener = listener
        self.pod_netns: str | None = None  # the new pod's, once it appeared
        self._before = set(_pod_namespaces())
        self.seen = Reached()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> PodWatch:
        targets = [(self._probe, (netns,)) for netns in self.probers]
        if self.listener is not None:
            sock = socket_in(self.listener[0], socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("0.0.0.0", LISTEN_PORT))
            targets += [(self._listen, (sock,)), (self._send, ())]
        for target, args in targets:
            thread = threading.Thread(target=target, args=args, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def _probe(self, netns: str) -> None:
        while not self._stop.is_set():
            sock = socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.connect_ex((self.ip, self.port))
                _, writable, _ = select.select([], [sock], [], EVERY)
                if writable and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    with self._lock:
                        self.seen.connected[netns] = self.seen.connected.get(netns, 0) + 1
                        if self.seen.first_connected is None:
                            self.seen.first_connected = time.monotonic()
            finally:
                sock.close()
            with self._lock:
                self.seen.probes += 1
            self._stop.wait(EVERY)

    def _listen(self, sock: socket.socket) -> None:
        with sock:
            while not self._stop.is_set():
                readable, _, _ = select.select([sock], [], [], 0.05)
                if readable:
                    _, (source, _) = sock.recvfrom(2048)
                    if source == self.ip:
                        with self._lock:
                            self.seen.arrived += 1

    def _send(self) -> None:
        """From inside the pod from the moment its namespace exists (before CNI ADD has
        wired it: sends fail until then, and are tried again)."""
        assert self.listener is not None
        sock = None
        while sock is None and not self._stop.is_set():
            new = sorted(set(_pod_namespaces()) - self._before)
            if new:
                self.pod_netns = new[0]
                sock = _socket_once_mounted(new[0])
            if sock is None:
                self._stop.wait(0.0005)
        if sock is None:
            return
        with sock:
            sock.setblocking(False)
            while not self._stop.is_set():
                with contextlib.suppress(OSError):  # not wired yet (no address, no route)
                    sock.sendto(b"first packets", (self.listener[1], LISTEN_PORT))
                with self._lock:
                    self.seen.sends += 1
                self._stop.wait(EVERY)


def _socket_once_mounted(name: str) -> socket.socket | None:
    """A UDP socket in namespace `name`; None while its file is there but not yet the
    namespace's mount (setns fails with EINVAL)."""
    try:
        with entered(name):
            return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return None


def _pod_namespaces() -> list[str]:
    prefix = pod_netns("")
    return [name for name in os.listdir("/run/netns") if name.startswith(prefix)]
