"""Why the kernel refuses to attach conntrack entries to NFLOG packets, in words an
operator can act on.

nfnetlink_log answers NFULNL_CFG_F_CONNTRACK with EOPNOTSUPP when no conntrack glue is
registered. The glue is nf_conntrack_netlink's, and only exists in kernels built with
CONFIG_NETFILTER_NETLINK_GLUE_CT (Debian, Ubuntu and Fedora kernels have it; minimal
VM kernels often do not). When the module is missing the kernel tries to load it
itself first (and we retry on the EAGAIN that follows a load), so a refusal means the
glue is not built, or the module could not be loaded."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

GLUE_OPTION = "CONFIG_NETFILTER_NETLINK_GLUE_CT"
MODULE = "nf_conntrack_netlink"


def refusal_reason(kernel_config: str | None, module_loaded: bool) -> str:
    """The sentence for a refusal, from the kernel's build configuration (None when
    it cannot be read) and whether nf_conntrack_netlink shows in /sys/module (a module
    built in without parameters does not)."""
    head = "the kernel will not attach conntrack entries to NFLOG packets (EOPNOTSUPP)"
    if kernel_config is not None and f"{GLUE_OPTION}=y" not in kernel_config:
        return (
            f"{head}: this kernel is built without {GLUE_OPTION}, which nfnetlink_log "
            "needs to reach conntrack; use a kernel with it (distribution kernels have it)"
        )
    loaded = f"{MODULE} is loaded" if module_loaded else f"{MODULE} is not loaded"
    return f"{head}: it needs {MODULE} (modprobe {MODULE}) and {GLUE_OPTION}=y; {loaded}" + (
        "" if kernel_config is not None else ", the kernel's configuration is unreadable"
    )


def read_kernel_config() -> str | None:
    """/proc/config.gz, else /boot/config-<release>; None when neither is readable."""
    try:
        return gzip.decompress(Path("/proc/config.gz").read_bytes()).decode("ascii", "replace")
    except OSError:
        pass
    try:
        return Path(f"/boot/config-{os.uname().release}").read_text("ascii", "replace")
    except OSError:
        return None


def conntrack_refusal() -> str:
    """`refusal_reason` for the running kernel."""
    return refusal_reason(read_kernel_config(), Path(f"/sys/module/{MODULE}").exists())
