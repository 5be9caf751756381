"""The iptables+ipset backend: programs what iptables_render says, atomically.

- Chains go in one `iptables-restore --noflush` transaction (declaring a chain replaces
  it whole); one jump from FORWARD, kept first; nothing else is touched.
- Sets are created and filled before rules use them, changed by membership (`ipset
  restore` batches of add/del, so a relabel costs set updates, not a chain rewrite),
  rebuilt through a temporary set and `swap` on a full sync, destroyed after the rules
  that used them are gone.
- The iptables flavour (legacy or nft) is the host's: the one holding more rules.
- Errors raise DataplaneError; the agent logs them and retries, it never crashes.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from ipaddress import ip_address

from pyroute2 import IPRoute

from agent.compiler.ir import NodeIR
from agent.dataplane.iptables_render import (
    CHAIN_PREFIX,
    DEFAULT_NFLOG_GROUP,
    FORWARD_CHAIN,
    SET_PREFIX,
    IpSet,
    Ruleset,
    ipset_create,
    ipset_fill,
    render,
    restore_text,
)
from agent.model.objects import IPAddress

log = logging.getLogger("picket.iptables")
JUMP = ["FORWARD", "-m", "comment", "--comment", "picket: NetworkPolicy", "-j", FORWARD_CHAIN]


class DataplaneError(RuntimeError):
    pass


def _run(argv: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DataplaneError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()}")
    return proc.stdout


def _count_rules(command: str) -> int:
    try:
        out = subprocess.run([command], capture_output=True, text=True, check=False).stdout
    except OSError:
        return 0
    return sum(line.startswith("-A") for line in out.splitlines())


def detect_mode() -> str:
    """legacy or nft: whichever already holds more rules (what the host's other tools
    use); with none anywhere, what the `iptables` command is."""
    legacy, nft = _count_rules("iptables-legacy-save"), _count_rules("iptables-nft-save")
    if legacy != nft:
        return "legacy" if legacy > nft else "nft"
    version = subprocess.run(
        ["iptables", "--version"], capture_output=True, text=True, check=False
    ).stdout
    return "nft" if "nf_tables" in version else "legacy"


def host_interfaces(ir: NodeIR) -> dict[str, str]:
    """Local endpoint -> host-side interface, from the routes to their addresses (the
    CNI's veth names are not a contract; its routes are)."""
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        oif_by_dst = {}
        for route in ipr.get_routes(family=2, table=254):
            if route["dst_len"] == 32 and route.get_attr("RTA_OIF") is not None:
                oif_by_dst[route.get_attr("RTA_DST")] = route.get_attr("RTA_OIF")
    found = {}
    for ref, endpoint in ir.endpoints.items():
        for ip in endpoint.ips:
            oif = oif_by_dst.get(str(ip))
            if oif in names:
                found[ref] = names[oif]
                break
    return found


def node_addresses() -> frozenset[IPAddress]:
    """Every address this node (network namespace) holds."""
    with IPRoute() as ipr:
        return frozenset(ip_address(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr())


class IptablesBackend:
    name = "iptables"

    def __init__(self, nflog_group: int = DEFAULT_NFLOG_GROUP, mode: str | None = None) -> None:
        self.mode = mode or detect_mode()
        self.nflog_group = nflog_group
        self._sets: dict[str, IpSet] = {}  # what is programmed, as far as we know
        self._rules: str | None = None
        self._set_names: set[str] = set()
        self.ruleset: Ruleset | None = None

    def _tool(self, name: str) -> str:
        return f"{name}-{self.mode}" if name == "iptables" else f"iptables-{self.mode}-{name}"

    def apply(self, ir: NodeIR, full: bool) -> bool:
        """Program `ir`. A full apply also repairs drift (flushed chains, a removed jump,
        edited sets). Returns whether the rules (not only set members) changed."""
        ruleset = render(ir, host_interfaces(ir), self.nflog_group)
        self._apply_sets(ruleset.sets, full)
        rules_changed = self._apply_rules(ruleset, full)
        self._destroy_stale_sets(set(ruleset.sets), full)
        self.ruleset = ruleset
        return rules_changed

    def _apply_sets(self, wanted: Mapping[str, IpSet], full: bool) -> None:
        lines: list[str] = []
        for name, ipset in wanted.items():
            known = self._sets.get(name)
            if full or known is None or known.kind != ipset.kind:
                # Build aside and swap in: the set is never seen half-filled.
                temp = f"{SET_PREFIX}t-{name.removeprefix(SET_PREFIX)}"[:31]
                lines += [
                    ipset_create(ipset),
                    ipset_create(ipset, temp),
                    f"flush {temp}",
                    *ipset_fill(ipset, temp),
                    f"swap {temp} {name}",
                    f"destroy {temp}",
                ]
            else:
                lines += [f"add {name} {m} -exist" for m in sorted(ipset.members - known.members)]
                lines += [f"del {name} {m} -exist" for m in sorted(known.members - ipset.members)]
        if lines:
            _run(["ipset", "restore"], "\n".join(lines) + "\n")
        self._sets = dict(wanted)

    def _apply_rules(self, ruleset: Ruleset, full: bool) -> bool:
        stale = self._existing_chains() if full or self._rules is None else set()
        text = restore_text(ruleset, stale)
        core = restore_text(ruleset)
        changed = core != self._rules
        if changed or full:
            _run([self._tool("restore"), "--noflush", "-w"], text)
            self._rules = core
        self._ensure_jump()
        return changed

    def _existing_chains(self) -> set[str]:
        out = _run([self._tool("save"), "-t", "filter"])
        return {
            line[1:].split()[0] for line in out.splitlines() if line.startswith(f":{CHAIN_PREFIX}")
        }

    def _ensure_jump(self) -> None:
        iptables = self._tool("iptables")
        check = subprocess.run([iptables, "-w", "-C", *JUMP], capture_output=True, check=False)
        if check.returncode != 0:
            log.info("inserting the jump from FORWARD to %s", FORWARD_CHAIN)
            _run([iptables, "-w", "-I", JUMP[0], "1", *JUMP[1:]])

    def _destroy_stale_sets(self, wanted: set[str], full: bool) -> None:
        present = set(self._existing_sets()) if full else self._set_names
        stale = sorted(n for n in present - wanted if n.startswith(SET_PREFIX))
        self._set_names = set(wanted)
        for name in stale:
            proc = subprocess.run(
                ["ipset", "destroy", name], capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                log.warning("cannot destroy stale set %s: %s", name, proc.stderr.strip())

    @staticmethod
    def _existing_sets() -> list[str]:
        return [n for n in _run(["ipset", "list", "-n"]).split() if n.startswith(SET_PREFIX)]

    def rule_count(self) -> int:
        return self.ruleset.rule_count() if self.ruleset else 0

    def cleanup(self) -> list[str]:
        """Remove everything Picket added: the jump, the chains, the sets."""
        removed = []
        iptables = self._tool("iptables")
        while (
            subprocess.run(
                [iptables, "-w", "-D", *JUMP], capture_output=True, check=False
            ).returncode
            == 0
        ):
            removed.append("jump from FORWARD")
        chains = sorted(self._existing_chains())
        if chains:
            text = "*filter\n" + "".join(f":{c} - [0:0]\n" for c in chains)
            text += "".join(f"-X {c}\n" for c in chains) + "COMMIT\n"
            _run([self._tool("restore"), "--noflush", "-w"], text)
            removed += [f"chain {c}" for c in chains]
        for name in self._existing_sets():
            _run(["ipset", "destroy", name])
            removed.append(f"set {name}")
        self._sets, self._rules = {}, None
        return removed
