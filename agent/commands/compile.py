"""`picket compile`: what would be programmed on a node, without touching the kernel."""

from __future__ import annotations

import argparse
import json
import sys

from agent.commands.manifest_args import add_manifest_arguments, load_manifests
from agent.compiler.compile import compile_node
from agent.compiler.render import render_ir_json, render_ir_text

BACKENDS = ("ir",)


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
        help="ir: the backend-neutral IR (peer sets and clauses)",
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
    if args.output == "json":
        print(json.dumps(render_ir_json(ir), indent=2))
    else:
        print(render_ir_text(ir))
    return 0
