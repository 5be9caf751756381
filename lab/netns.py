"""Sockets inside other network namespaces, without a process per namespace.

setns(2) switches the calling thread only, and a socket keeps the namespace it was
created in. So one thread can enter a pod's namespace, create a socket, and come back:
the lab kubelet serves every pod's responders, and `lab matrix` runs every probe, from
one event loop this way.
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


@contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the body in network namespace `name` (None: stay where we are)."""
    if name is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path(name), os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def socket_in(name: str | None, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A non-blocking socket that lives in namespace `name`."""
    with entered(name):
        sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    return sock
