"""Compiling, loading and hooking the datapath: bpf/picket_forward.c compiled with BCC
at start (its local headers inlined, the running kernel's struct offsets from its BTF
passed as defines), maps pinned under the BPF filesystem, its two programs (one per
address family, one verdict) hooked into the namespace's IPv4 and IPv6 FORWARD hooks
through pinned BPF netfilter links (`nf_link`).

The program reads the kernel's connection tracking (docs/ebpf.md), which runs in a
namespace only while some netfilter user needs it: kube-proxy's rules do, and where
none exist (a node without kube-proxy, a test namespace) the loader holds it on with one
unreferenced rule in the raw table (`conntrack_hold`)."""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.dataplane.ebpf import btf, nf_link
from agent.dataplane.ebpf.settings import EbpfSettings
from agent.dataplane.errors import DataplaneError

BPF_DIR = Path(__file__).resolve().parents[3] / "bpf"
ENTRY = "picket_forward.c"
KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
LINK_PIN = "forward_link"  # what every link pin's name starts with, beside the maps
IPV6_SYSCTLS = Path("/proc/sys/net/ipv6")  # absent where the kernel runs without IPv6

log = logging.getLogger("picket.ebpf")


@dataclass(frozen=True)
class Hook:
    """One family's program and where its link is pinned: `<pin>-<priority>`. IPv4's
    pin keeps the name it had when IPv4 was the only family, so that a restarted agent
    takes the hook over from an agent of an earlier build."""

    family: int  # NFPROTO_*
    function: str  # in bpf/picket_forward.c
    pin: str


HOOKS = (
    Hook(nf_link.NFPROTO_IPV4, "picket_forward4", LINK_PIN),
    Hook(nf_link.NFPROTO_IPV6, "picket_forward6", LINK_PIN + "6"),
)


def program_source() -> str:
    """bpf/picket_forward.c with its local includes inlined: BCC rewrites map calls only in
    the main text, and we keep the logic in small headers."""

    def inline(path: Path) -> str:
        out = []
        for line in path.read_text().splitlines():
            found = re.match(r'#include "(.+)"', line.strip())
            out.append(inline(BPF_DIR / found.group(1)) if found else line)
        return "\n".join(out)

    return inline(BPF_DIR / ENTRY)


def is_bpffs(path: Path) -> bool:
    mounts = Path("/proc/mounts").read_text().splitlines()
    return any(line.split()[1] == str(path) and line.split()[2] == "bpf" for line in mounts)


def ensure_bpffs(root: Path) -> None:
    """Pinning needs the BPF filesystem; mount it at /sys/fs/bpf when nothing has."""
    base = Path("/sys/fs/bpf")
    if str(root).startswith(str(base)) and not is_bpffs(base):
        mount = subprocess.run(
            ["mount", "-t", "bpf", "bpf", str(base)], capture_output=True, text=True, check=False
        )
        if mount.returncode != 0:  # e.g. a DaemonSet pod without CAP_SYS_ADMIN
            raise DataplaneError(
                f"{base} is not a BPF filesystem and mounting one failed "
                f"({mount.stderr.strip()}); mount it on the node: mount -t bpf bpf {base}"
            )
    root.mkdir(parents=True, exist_ok=True)


def cflags(pin_dir: Path, s: EbpfSettings) -> list[str]:
    return [
        f'-DPICKET_PIN_DIR="{pin_dir}"',
        f"-DPICKET_ADDR_ENTRIES={s.addr_entries}",
        f"-DPICKET_ENDPOINT_ENTRIES={s.endpoint_entries}",
        f"-DPICKET_POLICY_ENTRIES={s.policy_entries}",
        f"-DPICKET_NAMED_ENTRIES={s.named_entries}",
        f"-DPICKET_RING_PAGES={s.ring_pages}",
    ]


def kernel_offsets(path: Path = KERNEL_BTF) -> dict[str, int]:
    try:
        return btf.program_offsets(btf.Btf(path.read_bytes()))
    except (OSError, btf.BtfError) as exc:
        raise DataplaneError(
            f"cannot read the kernel's struct layouts from {path} ({exc}); the eBPF "
            "backend needs a kernel with BTF (CONFIG_DEBUG_INFO_BTF)"
        ) from exc


def load(pin_dir: Path, settings: EbpfSettings) -> tuple[Any, dict[int, Any]]:
    """The BPF object and its FORWARD programs by family (NFPROTO_*), maps pinned."""
    from bcc import BPF

    ensure_bpffs(pin_dir.parent)
    pin_dir.mkdir(parents=True, exist_ok=True)
    unpin_maps(pin_dir)
    offsets = [f"-D{name}={value}" for name, value in kernel_offsets().items()]
    try:
        bpf = BPF(text=program_source(), cflags=cflags(pin_dir, settings) + offsets)
        programs = {
            h.family: bpf.load_func(
                h.function, nf_link.BPF_PROG_TYPE_NETFILTER, attach_type=nf_link.BPF_NETFILTER
            )
            for h in HOOKS
        }
    except Exception as exc:
        raise DataplaneError(
            f"cannot compile or load the FORWARD programs ({exc}); they need a kernel >= "
            "6.4 (BPF netfilter programs) and BCC a kernel headers tree at "
            "/lib/modules/$(uname -r)/build (make setup links the distribution's)"
        ) from exc
    return bpf, programs


def unpin_maps(pin_dir: Path) -> None:
    """Every map a predecessor pinned, so that BCC makes this program's maps afresh (and
    pins them). The predecessor's program keeps its maps, unpinned, and enforces with
    them until this program, on maps the first sync filled, takes the hook from it
    (backend.py, `_hook`); then they go with it. Reusing the pinned maps instead is
    what BCC's pinned tables do, but BCC reopens such a map by its id
    (BPF_MAP_GET_FD_BY_ID), which the kernel allows only with CAP_SYS_ADMIN, and the
    DaemonSet's agent has not got it; fresh maps also let a new build change a map's
    layout. The link's pins stay: they are how the hook is handed over."""
    for pin in pin_dir.iterdir():  # load() made the directory
        if not pin.name.startswith(LINK_PIN):
            pin.unlink()


def ipv6_enabled() -> bool:
    """Whether this kernel has IPv6 (not booted with ipv6.disable=1): without it there is
    no IPv6 FORWARD hook to take, and no IPv6 traffic to judge."""
    return IPV6_SYSCTLS.is_dir()


def hooks() -> tuple[Hook, ...]:
    """The families whose FORWARD hook the programs take on this kernel."""
    return tuple(h for h in HOOKS if h.family == nf_link.NFPROTO_IPV4 or ipv6_enabled())


def hook(programs: dict[int, Any], pin_dir: Path) -> None:
    """Hook each family's program into its FORWARD hook, replacing the link an earlier
    agent pinned for that family (IPv4 first: the family every node has)."""
    for h in hooks():
        try:
            nf_link.hook_in_place_of_pinned(programs[h.family].fd, pin_dir, h.pin, h.family)
        except OSError as exc:
            raise DataplaneError(
                f"cannot hook the program into {_family_name(h)} FORWARD: {exc}"
            ) from exc
    if len(hooks()) < len(HOOKS):
        log.warning("this kernel has no IPv6: only the IPv4 FORWARD hook is taken")


def is_hooked(pin_dir: Path) -> bool:
    """Whether a pinned link holds our program in every family's FORWARD hook (someone
    may have removed one: a full sync hooks the programs in again)."""
    return all(any(pin_dir.glob(f"{h.pin}-*")) for h in hooks())


def unhook(pin_dir: Path) -> list[str]:
    removed = []
    for h in HOOKS:
        for link in sorted(pin_dir.glob(f"{h.pin}-*")):
            link.unlink()
            removed.append(f"{_family_name(h)} FORWARD program (link {link})")
    return removed


def _family_name(h: Hook) -> str:
    return "IPv4" if h.family == nf_link.NFPROTO_IPV4 else "IPv6"
