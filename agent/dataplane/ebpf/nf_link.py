"""BPF netfilter links: a loaded BPF_PROG_TYPE_NETFILTER program hooked into this
network namespace's IPv4 or IPv6 FORWARD hook (BPF_LINK_CREATE, kernel >= 6.4), pinned
in the BPF filesystem so that it outlives the agent's process.

Why raw bpf(2) calls: BCC 0.26 and the libbpf 1.1 it bundles predate netfilter links
(libbpf 1.2). Loading still goes through BCC (`load_func` takes the program and attach
types as numbers); only the link is created here. The attribute layouts are
linux/bpf.h's `link_create` and `obj_pin`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from pathlib import Path

BPF_PROG_TYPE_NETFILTER = 32
BPF_NETFILTER = 45  # enum bpf_attach_type
BPF_OBJ_PIN, BPF_OBJ_GET, BPF_LINK_CREATE = 6, 7, 28
NFPROTO_IPV4, NFPROTO_IPV6 = 2, 10
NF_INET_FORWARD = 2
# Reassemble fragments before the program sees them (kernel >= 6.6; for IPv6 through
# nf_defrag_ipv6, which conntrack uses too).
BPF_F_NETFILTER_IP_DEFRAG = 1
# After the filter table (priority 0): what iptables drops never reaches us. The
# kernel allows one BPF hook per priority (in each family's hook), so a restarted agent
# hooks its program in at the other one of these two before it removes the old link.
PRIORITIES = (10, 11)
SYSCALL_BPF = {"x86_64": 321, "aarch64": 280}
ATTR_SIZE = 128


class LinkError(OSError):
    pass


def _bpf(command: int, attr: bytes) -> int:
    number = SYSCALL_BPF.get(platform.machine())
    if number is None:
        raise LinkError(errno.ENOSYS, f"bpf(2) number unknown on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr.ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)
    result = libc.syscall(number, command, buf, ATTR_SIZE)
    if result < 0:
        code = ctypes.get_errno()
        raise LinkError(code, os.strerror(code))
    return result


def create_forward_link(prog_fd: int, priority: int, family: int = NFPROTO_IPV4) -> int:
    """Hook `prog_fd` into the FORWARD hook of `family` (NFPROTO_*) of the calling
    thread's namespace; the link fd."""
    attr = struct.pack(
        "<IIIIIIiI",
        prog_fd,
        0,  # target_fd: unused for netfilter
        BPF_NETFILTER,
        0,  # link flags
        family,
        NF_INET_FORWARD,
        priority,
        BPF_F_NETFILTER_IP_DEFRAG,
    )
    return _bpf(BPF_LINK_CREATE, attr)


def pin(fd: int, path: Path) -> None:
    name = ctypes.create_string_buffer(str(path).encode())
    _bpf(BPF_OBJ_PIN, struct.pack("<QII", ctypes.addressof(name), fd, 0))


def hook_in_place_of_pinned(
    prog_fd: int, directory: Path, prefix: str, family: int = NFPROTO_IPV4
) -> Path:
    """Hook `prog_fd` into `family`'s FORWARD and pin its link in `directory` as
    `<prefix>-<priority>`, then remove the links earlier agents pinned there under that
    prefix: the new link is hooked before the old one goes, so enforcement never stops.
    (The BPF filesystem refuses rename, and dots in names, so pins are named by
    priority.)"""
    older = {p: directory / f"{prefix}-{p}" for p in PRIORITIES}
    older = {p: path for p, path in older.items() if path.exists()}
    if len(older) == len(PRIORITIES):  # a swap was cut short: keep one of the two
        older.pop(PRIORITIES[-1]).unlink()
    priority = next(p for p in PRIORITIES if p not in older)
    fd = create_forward_link(prog_fd, priority, family)
    try:
        path = directory / f"{prefix}-{priority}"
        pin(fd, path)
    finally:
        os.close(fd)  # the pin holds the link now
    for old in older.values():
        old.unlink(missing_ok=True)  # its link detaches when the last reference goes
    return path


def pinned_link_info(path: Path) -> dict[str, int]:
    """What the kernel says of the netfilter link pinned at `path` (its fdinfo: pf,
    hooknum, prio): which family's hook, which hook, which priority."""
    name = ctypes.create_string_buffer(str(path).encode())
    fd = _bpf(BPF_OBJ_GET, struct.pack("<QII", ctypes.addressof(name), 0, 0))
    try:
        text = Path(f"/proc/self/fdinfo/{fd}").read_text()
    finally:
        os.close(fd)
    fields = text.replace("\n", "\t").split("\t")
    pairs = zip(fields[::2], fields[1::2], strict=False)
    return {k.rstrip(":"): int(v) for k, v in pairs if k.rstrip(":") in ("pf", "hooknum", "prio")}
