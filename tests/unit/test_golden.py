"""Every kernel text and kernel write plan, as golden files, for every example in
examples/ and both nodes: what `git diff tests/unit/golden/` shows a reviewer.

- `.iptables`: the iptables-restore text of the chains, and each set's members, then
  the same for IPv6 (ip6tables-restore, the `picket6-` sets);
- `.ipset`: the `ipset restore` scripts: a full sync (create, build aside, swap,
  destroy the temporary), an incremental one adding every member to the sets, the one
  removing them again, and the destroy of the sets once no rule uses them; IPv4's
  sets, then IPv6's;
- `.cleanup`: what `picket agent --cleanup` runs on the iptables backend (both
  families);
- `.ebpf`: the eBPF plan (identities and the maps' entries, as `picket compile
  --backend ebpf` prints it), then the map writes of a first sync, in the order the
  backend makes them, as bytes.

Regenerate them all after a deliberate change with the one command

    PICKET_REGENERATE=1 .venv/bin/python -m pytest tests/unit/test_golden.py

and review the diff.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path

import pytest

from agent.compiler.compile import compile_node
from agent.compiler.diff import diff_ir
from agent.compiler.ir import NodeIR
from agent.dataplane.ebpf.plan_text import plan_text
from agent.dataplane.ebpf.planner import EbpfPlanner
from agent.dataplane.ebpf.writes import EndpointWrites, ordered_writes, writes_text
from agent.dataplane.ipset_render import (
    destroy_script,
    render_sets,
    script_text,
    swap_script,
    update_script,
)
from agent.dataplane.iptables_render import JUMP_RULE, cleanup_text, render, restore_text
from agent.manifests import load_state

ROOT = Path(__file__).parents[2]
GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())
NODES = ["node-1", "node-2"]


def node_ir(folder: Path, node: str) -> NodeIR:
    state, _ = load_state([str(folder)])
    return compile_node(state, node)


def veths(ir: NodeIR) -> dict[str, str]:
    return {ref: f"veth-{ref.replace('/', '-')}"[:15] for ref in ir.endpoints}


FAMILY_TITLES = {4: "", 6: " (IPv6)"}


def iptables_text(ir: NodeIR) -> str:
    out = ""
    for family in FAMILY_TITLES:
        ruleset = render(ir, veths(ir), family=family)
        sets = "".join(
            f"# set {s.name} {s.kind}: {' '.join(sorted(s.members))}\n"
            for s in ruleset.sets.values()
        )
        heading = "# ip6tables-restore --noflush\n" if family == 6 else ""
        out += heading + restore_text(ruleset) + sets
    return out


def ipset_text(ir: NodeIR) -> str:
    empty = dataclasses.replace(ir, members={sid: frozenset() for sid in ir.members})
    sections = {}
    for f, title in FAMILY_TITLES.items():
        sets = render_sets(ir, f)
        sections |= {
            f"full sync{title}": swap_script(sets.values()),
            f"incremental: every member added{title}": update_script(
                ir, diff_ir(empty, ir), family=f
            ),
            f"incremental: every member removed{title}": update_script(
                empty, diff_ir(ir, empty), family=f
            ),
            f"sets no rule uses any more{title}": destroy_script(sorted(sets)),
        }
    return "".join(
        f"# ipset restore: {title}\n{script_text(lines)}" for title, lines in sections.items()
    )


def cleanup(ir: NodeIR) -> str:
    out = ""
    for family, command in ((4, "iptables"), (6, "ip6tables")):
        chains = render(ir, veths(ir), family=family).chains
        out += (
            f"# {command} -w -D {shlex.join(JUMP_RULE)}  (until it fails)\n"
            f"# {command}-restore --noflush\n{cleanup_text(chains)}"
        )
    names = sorted(name for f in FAMILY_TITLES for name in render_sets(ir, f))
    return out + f"# ipset restore\n{script_text(destroy_script(names))}"


def ebpf_text(ir: NodeIR) -> str:
    planner = EbpfPlanner()
    delta = planner.rebuild(ir, ir.node_ips)
    # The endpoint map is keyed by interface index, which only the node knows.
    indexes = {ref: 100 + i for i, ref in enumerate(sorted(delta.endpoint_set))}
    endpoints = EndpointWrites(put={indexes[r]: v for r, v in delta.endpoint_set.items()})
    writes = ordered_writes(delta, endpoints, stable=True)
    legend = ", ".join(f"{ref} at ifindex {i}" for ref, i in indexes.items())
    return f"{plan_text(planner)}\n# map writes of a first sync ({legend or 'no endpoints'})\n" + (
        writes_text(writes)
    )


RENDERINGS = {"iptables": iptables_text, "ipset": ipset_text, "cleanup": cleanup, "ebpf": ebpf_text}


@pytest.mark.parametrize("kind", sorted(RENDERINGS))
@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize("folder", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_golden(folder: Path, node: str, kind: str) -> None:
    path = GOLDEN / f"{folder.name}.{node}.{kind}"
    text = RENDERINGS[kind](node_ir(folder, node))
    if os.environ.get("PICKET_REGENERATE"):
        path.write_text(text)
    assert text == path.read_text()


def test_every_golden_file_is_tested() -> None:
    wanted = {f"{f.name}.{n}.{k}" for f in EXAMPLES for n in NODES for k in RENDERINGS}
    # Subfolders hold other renderers' golden files, checked by their own tests.
    assert {p.name for p in GOLDEN.iterdir() if p.is_file()} == wanted
