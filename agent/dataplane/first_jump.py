"""Picket's jump into its own chain must be the first rule of the built-in chain it
hooks. A rule in front of it decides packets before Picket sees them: an ACCEPT someone
inserted, or kube-proxy's KUBE-FORWARD (which ACCEPTs marked and established traffic)
after a firewall reload put it first. `iptables -C` only says the jump exists, so the
backends read the chain's rules and put the jump back on top when anything is ahead.

`misplaced` is pure; `ensure_first` runs the commands."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Sequence

from agent.dataplane.errors import DataplaneError

log = logging.getLogger("picket.dataplane")


def misplaced(listing: str, jump: Sequence[str]) -> str | None:
    """None when `jump` (chain, then the rule's arguments, as for `iptables -I`) is the
    first rule of its chain in `listing` (`iptables -S <chain>` output) and there only
    once; else what is wrong, for the log: missing, or which rule is in front."""
    chain, rule = jump[0], list(jump[1:])
    lines = [line for line in listing.splitlines() if _rule(line, chain) is not None]
    ours = [i for i, line in enumerate(lines) if _rule(line, chain) == rule]
    if not ours:
        return "missing"
    if ours[0] != 0:
        return f"behind `{lines[0]}`"
    if len(ours) > 1:
        return "there more than once"
    return None


def repair_text(table: str, jump: Sequence[str], copies: int) -> str:
    """An `iptables-restore --noflush` transaction that deletes `copies` copies of
    `jump` and inserts one first: applied at once, so the chain is never without it."""
    rule = " ".join(f'"{a}"' if " " in a else a for a in jump[1:])
    lines = [f"*{table}"]
    lines += [f"-D {jump[0]} {rule}"] * copies
    lines += [f"-I {jump[0]} 1 {rule}", "COMMIT", ""]
    return "\n".join(lines)


def ensure_first(tool: str, table: str, jump: Sequence[str]) -> str | None:
    """Makes `jump` the first and only copy in its chain, with `tool` ("iptables-nft",
    "ip6tables-legacy", ...; its `-restore` beside it); returns what was wrong, or None
    when nothing was."""
    listing = _run([tool, "-w", "-t", table, "-S", jump[0]])
    problem = misplaced(listing, jump)
    if problem is not None:
        copies = sum(1 for line in listing.splitlines() if _rule(line, jump[0]) == list(jump[1:]))
        _run([f"{tool}-restore", "--noflush", "-w"], repair_text(table, jump, copies))
    return problem


def _run(argv: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DataplaneError(f"{' '.join(argv[:5])} failed: {proc.stderr.strip()}")
    return proc.stdout


def _rule(line: str, chain: str) -> list[str] | None:
    """The arguments of an `-A <chain> ...` line of `iptables -S`, else None."""
    return shlex.split(line)[2:] if line.startswith(f"-A {chain} ") else None


class FirstJump:
    """One backend's jump, kept first: `restored` counts the times it was found
    displaced, duplicated, or removed after it was in place (the metric
    picket_jump_restored_total)."""

    def __init__(self, table: str, jump: Sequence[str], family: int = 4) -> None:
        self.table, self.jump = table, tuple(jump)
        self.where = f"{table} table" if family == 4 else f"{table} table, IPv6"
        self.restored = 0
        self._placed = False

    def keep(self, tool: str) -> None:
        """`tool`: the family's and flavour's ("ip6tables-nft" keeps IPv6's jump)."""
        problem = ensure_first(tool, self.table, self.jump)
        if problem == "missing" and not self._placed:  # the first sync: nothing was lost
            log.info("inserted the jump from %s to %s (%s)", *self._ends(), self.where)
        elif problem is not None:
            self.restored += 1
            log.warning(
                "the jump from %s to %s (%s) was %s: put back first",
                *self._ends(), self.where, problem,
            )  # fmt: skip
        self._placed = True

    def _ends(self) -> tuple[str, str]:
        return self.jump[0], self.jump[-1]
