"""Compiling, loading and hooking the datapath: bpf/picket_forward.c compiled with BCC
at start (its local headers inlined, the running kernel's struct offsets from its BTF
passed as defines), maps pinned under the BPF filesystem, the program hooked into the
namespace's FORWARD hook through a pinned BPF netfilter link (`nf_link`).

The program reads the kernel's connection tracking (docs/ebpf.md), which runs in a
namespace only while some netfilter user needs it: kube-proxy's rules do, and where
none exist (a node without kube-proxy, a test namespace) the loader holds it on with one
unreferenced rule in the raw table (`conntrack_hold`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from agent.dataplane.ebpf import btf, nf_link
from agent.dataplane.ebpf.settings import EbpfSettings
from agent.dataplane.errors import DataplaneError

BPF_DIR = Path(__file__).resolve().parents[3] / "bpf"
ENTRY = "picket_forward.c"
KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
LINK_PIN = "forward_link"  # in the pin directory, beside the maps


def program_source() -> str:
    """bpf/picket_tc.c with its local includes inlined: BCC rewrites map calls only in
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


def load(pin_dir: Path, settings: EbpfSettings) -> tuple[Any, Any]:
    """The BPF object and its FORWARD program, maps pinned."""
    from bcc import BPF

    ensure_bpffs(pin_dir.parent)
    pin_dir.mkdir(parents=True, exist_ok=True)
    unpin_maps(pin_dir)
    offsets = [f"-D{name}={value}" for name, value in kernel_offsets().items()]
    try:
        bpf = BPF(text=program_source(), cflags=cflags(pin_dir, settings) + offsets)
        program = bpf.load_func(
            "picket_forward", nf_link.BPF_PROG_TYPE_NETFILTER, attach_type=nf_link.BPF_NETFILTER
        )
    except Exception as exc:
        raise DataplaneError(
            f"cannot compile or load the FORWARD program ({exc}); it needs a kernel >= "
            "6.4 (BPF netfilter programs) and BCC a kernel headers tree at "
            "/lib/modules/$(uname -r)/build (make setup links the distribution's)"
        ) from exc
    return bpf, program


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


def hook(program: Any, pin_dir: Path) -> None:
    """Hook `program` into FORWARD, replacing the link an earlier agent pinned."""
    try:
        nf_link.hook_in_place_of_pinned(program.fd, pin_dir, LINK_PIN)
    except OSError as exc:
        raise DataplaneError(f"cannot hook the program into FORWARD: {exc}") from exc


def is_hooked(pin_dir: Path) -> bool:
    """Whether a pinned link holds a FORWARD program of ours (someone may have removed
    it: a full sync hooks the program in again)."""
    return any(pin_dir.glob(f"{LINK_PIN}-*"))


def unhook(pin_dir: Path) -> list[str]:
    removed = []
    for link in sorted(pin_dir.glob(f"{LINK_PIN}-*")):
        link.unlink()
        removed.append(f"FORWARD program (link {link})")
    return removed
