"""`picket compile`: what would be programmed on a node, without touching the kernel."""

from __future__ import annotations

import argparse
import json
import sys

from agent.commands.manifest_args import add_manifest_arguments, load_manifests
from agent.compiler.compile import compile_node
from agent.compiler.describe import describe_ir_json, describe_ir_text
from agent.compiler.ir import NodeIR
from agent.dataplane.ebpf.plan_text import plan_text
from agent.dataplane.ebpf.planner import EbpfPlanner
from agent.dataplane.ipset_render import ipset_create, ipset_fill
from agent.dataplane.iptables_render import TABLE, render, restore_text

BACKENDS = ("ir", "iptables", "ebpf")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compile",
        help="print what would be programmed on a node, from manifests",
        description="Compile manifests for one node and print the result without touching "
        "the kernel. Exit status 0, or 2 on bad input.",
    )
    add_manifest_arguments(p)
    p.add_argument("--node", required=True, help="the node to compile for (spec.nodeName)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="ir",
        help="ir: the backend-neutral IR (peer sets and clauses); iptables: the "
        "iptables-restore and ipset input the agent would apply; ebpf: the identities and "
        "map entries it would write",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    state = load_manifests(args, "compile")
    if state is None:
        return 2
    known = {p.node_name for p in state.pods.values()} | set(state.nodes)
    if args.node not in known:
        print(
            f"picket compile: note: no pod or Node object names node {args.node!r}", file=sys.stderr
        )
    ir = compile_node(state, args.node)
    if args.backend == "iptables":
        print(iptables_text(ir))
        return 0
    if args.backend == "ebpf":
        print(ebpf_text(ir))
        return 0
    if args.output == "json":
        print(json.dumps(describe_ir_json(ir), indent=2))
    else:
        print(describe_ir_text(ir))
    return 0


def iptables_text(ir: NodeIR) -> str:
    """Exactly what the iptables backend programs, but for interface names, which only
    the node knows (the route to each pod): they are shown as <host-if:NS/POD>, and the
    interface holding the node's address as <uplink>."""
    interfaces = {ref: f"<host-if:{ref}>" for ref in ir.endpoints}
    lines: list[str] = []
    # Both families from the same IR: IPv6 through ip6tables and `family inet6` sets.
    for family, command in ((4, "iptables"), (6, "ip6tables")):
        ruleset = render(ir, interfaces, uplinks=["<uplink>"], family=family)
        lines += [
            f"# IPv{family}: ipset restore",
            *[line for s in ruleset.sets.values() for line in (ipset_create(s), *ipset_fill(s))],
        ]
        lines += [f"# {command}-restore --noflush", restore_text(ruleset).rstrip()]
        lines.append(
            f"# and, once: {command} -t {TABLE} -I FORWARD 1 -m comment --comment "
            '"picket: NetworkPolicy" -j PICKET-FORWARD'
        )
    return "\n".join(lines)


def ebpf_text(ir: NodeIR) -> str:
    """The identities and map entries the eBPF backend writes."""
    planner = EbpfPlanner()
    planner.rebuild(ir, ir.node_ips)
    return plan_text(planner)
