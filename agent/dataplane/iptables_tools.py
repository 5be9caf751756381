"""The iptables commands of each address family and flavour, and running them: which
flavour (legacy or nft) a family's tables are in, and what our chains in a save are.

`iptables` for IPv4, `ip6tables` for IPv6, each as `-legacy` or `-nft` with its
`-save` and `-restore` beside it. A host may keep the families in different flavours
(firewalls set up one family at a time), so each family is detected on its own."""

from __future__ import annotations

import subprocess

from agent.dataplane.errors import DataplaneError
from agent.dataplane.iptables_render import CHAIN_PREFIX

COMMANDS = {4: "iptables", 6: "ip6tables"}


def chains_in(save: str) -> set[str]:
    """Our chains declared in `iptables-save` output."""
    return {
        line[1:].split()[0] for line in save.splitlines() if line.startswith(f":{CHAIN_PREFIX}")
    }


def run(argv: list[str], stdin: str | None = None) -> str:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    except OSError as exc:  # not installed: ip6tables on a host without it, say
        raise DataplaneError(f"{argv[0]}: {exc.strerror}") from None
    if proc.returncode != 0:
        raise DataplaneError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()}")
    return proc.stdout


def _count_rules(command: str) -> int:
    try:
        out = subprocess.run([command], capture_output=True, text=True, check=False).stdout
    except OSError:
        return 0
    return sum(line.startswith("-A") for line in out.splitlines())


def detect_mode(family: int = 4) -> str:
    """legacy or nft for `family`'s tables: whichever already holds more rules (what the
    host's other tools use); with none anywhere, what the `iptables` (`ip6tables`)
    command is. Each family is asked on its own: a host may keep its IPv6 rules in the
    other flavour."""
    command = COMMANDS[family]
    legacy, nft = _count_rules(f"{command}-legacy-save"), _count_rules(f"{command}-nft-save")
    if legacy != nft:
        return "legacy" if legacy > nft else "nft"
    try:
        version = subprocess.run(
            [command, "--version"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        version = ""
    return "nft" if "nf_tables" in version else "legacy"


def tool(family: int, mode: str, name: str = "") -> str:
    """The command of `family` and flavour: iptables-nft, ip6tables-legacy-save, ..."""
    return f"{COMMANDS[family]}-{mode}" + (f"-{name}" if name else "")
