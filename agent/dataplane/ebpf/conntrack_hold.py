"""Keeps the kernel's connection tracking on in this namespace.

Conntrack runs in a network namespace only while a netfilter user asks for it (a rule
with a conntrack match, a NAT table): kube-proxy's rules do on every real node, but a
BPF netfilter program does not count. The FORWARD program needs it (it reads a packet's
connection), so the backend declares one chain in the raw table that nothing jumps to,
holding one conntrack match: it never sees a packet, and while it exists the kernel
tracks connections. Removed at cleanup."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from agent.dataplane.errors import DataplaneError
from agent.dataplane.iptables import detect_mode

CHAIN = "PICKET-CONNTRACK"
RULE = (
    "-m",
    "conntrack",
    "--ctstate",
    "INVALID",
    "-m",
    "comment",
    "--comment",
    "picket: holds conntrack on for the eBPF datapath",
    "-j",
    "RETURN",
)


def _raw_table() -> Callable[..., subprocess.CompletedProcess[str]]:
    """iptables on the raw table, in the flavour found once (detect_mode reads every
    table of both flavours: once per hold or release, not once per command)."""
    tool = f"iptables-{detect_mode()}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [tool, "-w", "-t", "raw", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    return run


def hold() -> None:
    iptables = _raw_table()
    if iptables("-C", CHAIN, *RULE).returncode == 0:
        return
    iptables("-N", CHAIN)  # exists already: fine
    added = iptables("-A", CHAIN, *RULE)
    if added.returncode != 0:
        raise DataplaneError(f"cannot turn connection tracking on: {added.stderr.strip()}")


def release() -> list[str]:
    iptables = _raw_table()
    if iptables("-F", CHAIN).returncode != 0:
        return []
    iptables("-X", CHAIN)
    return [f"raw table chain {CHAIN}"]
