"""Compiling, loading and attaching the TC programs: bpf/picket_tc.c compiled with BCC
at start (its local headers inlined), maps pinned under the BPF filesystem, both
programs on a pod's host-side interface (clsact, direct action, replaced in place)."""

from __future__ import annotations

import errno
import re
import subprocess
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from agent.dataplane.ebpf.settings import EbpfSettings
from agent.dataplane.errors import DataplaneError

BPF_DIR = Path(__file__).resolve().parents[3] / "bpf"
FILTER_PRIO = 4949  # our TC filters' priority: fixed, so a new program replaces the old
INGRESS_HOOK, EGRESS_HOOK = "ffff:fff2", "ffff:fff3"  # from the pod, to the pod


def program_source() -> str:
    """bpf/picket_tc.c with its local includes inlined: BCC rewrites map calls only in
    the main text, and we keep the logic in small headers."""

    def inline(path: Path) -> str:
        out = []
        for line in path.read_text().splitlines():
            found = re.match(r'#include "(.+)"', line.strip())
            out.append(inline(BPF_DIR / found.group(1)) if found else line)
        return "\n".join(out)

    return inline(BPF_DIR / "picket_tc.c")


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
        f"-DPICKET_CT_ENTRIES={s.ct_entries}",
        f"-DPICKET_RING_PAGES={s.ring_pages}",
    ]


def load(pin_dir: Path, settings: EbpfSettings) -> tuple[Any, Any, Any]:
    """The BPF object and its two programs (from the pod, to the pod), maps pinned."""
    from bcc import BPF

    ensure_bpffs(pin_dir.parent)
    pin_dir.mkdir(parents=True, exist_ok=True)
    try:
        bpf = BPF(text=program_source(), cflags=cflags(pin_dir, settings))
        return (
            bpf,
            bpf.load_func("picket_from_pod", BPF.SCHED_CLS),
            bpf.load_func("picket_to_pod", BPF.SCHED_CLS),
        )
    except Exception as exc:
        raise DataplaneError(
            f"cannot compile or load the TC programs ({exc}); BCC needs a kernel headers "
            "tree at /lib/modules/$(uname -r)/build (make setup links the distribution's)"
        ) from exc


def attach(ipr: IPRoute, index: int, from_pod_fd: int, to_pod_fd: int) -> None:
    """Both programs on interface `index`, replacing ours if there."""
    try:
        ipr.tc("add", "clsact", index)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
    for hook, fd, name in (
        (INGRESS_HOOK, from_pod_fd, "picket_from_pod"),
        (EGRESS_HOOK, to_pod_fd, "picket_to_pod"),
    ):
        ipr.tc(
            "replace-filter",
            "bpf",
            index,
            ":1",
            fd=fd,
            name=name,
            parent=hook,
            classid=1,
            direct_action=True,
            prio=FILTER_PRIO,
        )


def detach_everywhere() -> list[str]:
    """Remove our programs from every interface; say which went."""
    removed = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            index, name = link["index"], link.get_attr("IFLA_IFNAME")
            for hook in (INGRESS_HOOK, EGRESS_HOOK):
                try:
                    ipr.tc("del-filter", "bpf", index, ":1", parent=hook, prio=FILTER_PRIO)
                    side = "from" if hook == INGRESS_HOOK else "to"
                    removed.append(f"program on {name} ({side} pod)")
                except NetlinkError:
                    pass
    return removed
