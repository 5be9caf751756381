"""Keeps the kernel's connection tracking on in this namespace, for both families.

Conntrack runs in a network namespace only while a netfilter user asks for it (a rule
with a conntrack match, a NAT table), and per family: an IPv4 user turns on IPv4's
tracking only. kube-proxy's rules do on every real node (its ip6tables rules too where
it runs dual-stack), but a BPF netfilter program does not count. The FORWARD programs
need it (they read a packet's connection; an IPv6 packet without it has no entry and
is dropped in an isolated direction as `invalid`), so the backend declares one chain in
each family's raw table (iptables, ip6tables) that nothing jumps to, holding one
conntrack match: it never sees a packet, and while it exists the kernel tracks that
family's connections. Removed at cleanup."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from agent.dataplane.ebpf import loader
from agent.dataplane.errors import DataplaneError
from agent.dataplane.iptables_tools import detect_mode, tool

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


def families() -> tuple[int, ...]:
    """The families whose FORWARD hook the programs take (loader.hooks)."""
    return (4, 6) if loader.ipv6_enabled() else (4,)


def _raw_table(family: int) -> Callable[..., subprocess.CompletedProcess[str]]:
    """iptables (ip6tables) on the raw table, in the flavour found once (detect_mode
    reads every table of both flavours: once per hold or release, not per command)."""
    command = tool(family, detect_mode(family))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [command, "-w", "-t", "raw", *args]
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError as exc:  # not installed
            return subprocess.CompletedProcess(argv, 127, "", exc.strerror or str(exc))

    return run


def hold() -> None:
    for family in families():
        iptables = _raw_table(family)
        if iptables("-C", CHAIN, *RULE).returncode == 0:
            continue
        iptables("-N", CHAIN)  # exists already: fine
        added = iptables("-A", CHAIN, *RULE)
        if added.returncode != 0:
            raise DataplaneError(
                f"cannot turn IPv{family} connection tracking on: {added.stderr.strip()}"
            )


def release() -> list[str]:
    removed = []
    for family in families():
        iptables = _raw_table(family)
        if iptables("-F", CHAIN).returncode != 0:
            continue
        iptables("-X", CHAIN)
        removed.append(f"raw table chain {CHAIN}" + (" (IPv6)" if family == 6 else ""))
    return removed
