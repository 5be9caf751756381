"""The node's kernel, for the lab kube-proxy: iptables-save/restore, the jump rules,
and the sysctls a Service path needs. Every rule text comes from render.py.

The flavour is plain `iptables` (on Debian 12 the nft backend), what a node's
`iptables` command is. The agent's iptables backend picks the flavour that holds more
rules, else what `iptables` is (agent/dataplane/iptables.py): with kube-proxy's rules
in nft, both agree. Mixing flavours in one namespace would split the tables.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from lab.kubeproxy import names
from lab.kubeproxy.render import JUMPS

log = logging.getLogger("picket.lab.kubeproxy")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")  # per network namespace
CONNTRACK_MAX = Path("/proc/sys/net/netfilter/nf_conntrack_max")  # exists once loaded
TCP_BE_LIBERAL = Path("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal")


class KernelError(RuntimeError):
    pass


def _run(argv: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KernelError(f"{' '.join(argv[:4])} failed: {proc.stderr.strip()}")
    return proc.stdout


def tool(name: str, family: int) -> str:
    """iptables, iptables-save, ... for IPv4; ip6tables, ip6tables-save, ... for IPv6."""
    return name if family == 4 else name.replace("iptables", "ip6tables", 1)


def service_chains(table: str = "nat", family: int = 4) -> set[str]:
    """The per-service chains (KUBE-SVC-, KUBE-SEP-, ...) the table holds now."""
    save = _run([tool("iptables-save", family), "-t", table])
    declared = (line[1:].split()[0] for line in save.splitlines() if line.startswith(":"))
    return {chain for chain in declared if names.is_service_chain(chain)}


def restore(text: str, family: int = 4) -> None:
    """One transaction: our chains only (--noflush keeps everyone else's)."""
    _run([tool("iptables-restore", family), "--noflush", "-w"], text)


def ensure_jumps(family: int = 4) -> list[str]:
    """Insert each missing jump first in its chain, as kube-proxy does (-C, then -I);
    a jump already present stays where it is. Returns the ones inserted."""
    inserted = []
    command = tool("iptables", family)
    for table, chain, rule in JUMPS:
        check = [command, "-w", "-t", table, "-C", chain, *rule]
        if subprocess.run(check, capture_output=True, check=False).returncode != 0:
            _run([command, "-w", "-t", table, "-I", chain, *rule])
            inserted.append(f"IPv{family} {table} {chain} -> {rule[-1]}")
    return inserted


def ensure_ip_forward() -> bool:
    """Routing to endpoints needs forwarding on; True if it was off and we turned it on."""
    if IP_FORWARD.read_text().strip() == "1":
        return False
    IP_FORWARD.write_text("1\n")
    return True


def conntrack_loaded() -> bool:
    """NAT needs connection tracking; the nat rules load it, modprobe if they did not."""
    if CONNTRACK_MAX.exists():
        return True
    subprocess.run(["modprobe", "nf_conntrack"], capture_output=True, check=False)
    return CONNTRACK_MAX.exists()


def tcp_be_liberal() -> bool:
    try:
        return TCP_BE_LIBERAL.read_text().strip() not in ("", "0")
    except OSError:
        return False
