"""What of Picket a lab node carries, whichever backend put it there: iptables chains
and rules (both iptables flavours), ipsets, tc filters, pinned maps and links, and BPF
netfilter links holding a Picket program."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

BPF_PINS = Path("/sys/fs/bpf/picket")


def _in_node(node: str, *argv: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", f"picket-{node}", *argv],
        capture_output=True,
        text=True,
        check=False,
    ).stdout


def iptables_rules(node: str) -> str:
    """Both flavours' rules of both families, as iptables-save and ip6tables-save print
    them."""
    tools = ("iptables-legacy-save", "iptables-nft-save")
    tools += ("ip6tables-legacy-save", "ip6tables-nft-save")
    return "".join(_in_node(node, tool) for tool in tools)


def picket_traces(node: str) -> list[str]:
    """Everything of Picket found on `node` (empty: nothing)."""
    found = [f"rule {line}" for line in iptables_rules(node).splitlines() if "PICKET" in line]
    found += [
        f"ipset {name}"
        for name in _in_node(node, "ipset", "list", "-n").split()
        if "picket" in name.lower()
    ]
    links = _in_node(node, "ip", "-o", "link").splitlines()
    for name in (line.split(":")[1].strip().split("@")[0] for line in links):
        for hook in ("ingress", "egress"):
            if "picket" in _in_node(node, "tc", "filter", "show", "dev", name, hook):
                found.append(f"tc filter on {name} {hook}")
    pins = BPF_PINS / node
    if pins.exists():
        found += [f"pin {p}" for p in sorted(pins.iterdir())] or [f"directory {pins}"]
    return found


def picket_bpf_links() -> list[str]:
    """BPF netfilter links, in any namespace, whose program is one of Picket's."""
    done = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True)
    found = []
    for link in json.loads(done.stdout or "[]"):
        prog = subprocess.run(
            ["bpftool", "-j", "prog", "show", "id", str(link.get("prog_id"))],
            capture_output=True,
            text=True,
        )
        name = json.loads(prog.stdout or "{}").get("name", "")
        if name.startswith("picket"):
            found.append(f"link {link['id']} (program {name})")
    return found


def _bpftool(*args: str) -> object:
    done = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True)
    return json.loads(done.stdout or "null")


def pinned_map_ids(pin_dir: Path) -> dict[Path, int]:
    """The id of the map each pin in `pin_dir` holds (the link's pins left out)."""
    found = {}
    for pin in sorted(pin_dir.iterdir()):
        shown = _bpftool("map", "show", "pinned", str(pin))
        if isinstance(shown, dict) and "id" in shown:
            found[pin] = int(shown["id"])
    return found


def kernel_map_ids() -> set[int]:
    """Every BPF map the kernel holds."""
    return {int(m["id"]) for m in _bpftool("map", "show") or []}
