"""`picket explain`: the oracle on manifests, one connection or the whole matrix."""

from __future__ import annotations

import argparse
import json
import sys

from agent.commands.manifest_args import add_manifest_arguments, load_manifests
from agent.explain import render_json, render_matrix, render_text
from agent.model.endpoints import UnknownEndpointError
from agent.model.matrix import matrix_document, matrix_pods, oracle_matrix
from agent.model.oracle import verdict
from agent.model.state import ClusterState
from agent.portspec import parse_port_protocol

EXIT_ALLOWED, EXIT_DENIED, EXIT_BAD_INPUT = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="say whether a connection is allowed, and why, from manifests",
        description="Evaluate NetworkPolicy semantics on manifests (no cluster needed). "
        "Exit status: 0 allowed, 1 denied, 2 bad input.",
    )
    add_manifest_arguments(p)
    p.add_argument("--from", dest="src", help="source: NAMESPACE/POD or an IP address")
    p.add_argument("--to", dest="dst", help="destination: NAMESPACE/POD or an IP address")
    p.add_argument(
        "--port", required=True, help="destination PORT[/PROTO], protocol TCP by default"
    )
    p.add_argument(
        "--matrix",
        action="store_true",
        help="print the verdict for every ordered pair of pods instead",
    )
    p.add_argument("--namespaces", help="with --matrix: only pods of these namespaces (x,y,z)")
    p.add_argument(
        "--family",
        type=int,
        choices=(4, 6),
        help="the connection's address family: pods and nodes are their address of it "
        "(default: an address given names it, else the pods' primary ones); an ipBlock "
        "matches its own family only",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        port, protocol = parse_port_protocol(args.port)
    except ValueError as exc:
        print(f"picket explain: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    state = load_manifests(args, "explain")
    if state is None:
        return EXIT_BAD_INPUT
    if args.matrix:
        return _matrix(state, args, port, protocol)
    if not args.src or not args.dst:
        print("picket explain: --from and --to are required (or use --matrix)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        v = verdict(state, args.src, args.dst, protocol, port, args.family)
    except UnknownEndpointError as exc:
        print(f"picket explain: {exc.args[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.output == "json":
        print(json.dumps(render_json(v), indent=2))
    else:
        print(render_text(v))
    return EXIT_ALLOWED if v.allowed else EXIT_DENIED


def _matrix(state: ClusterState, args: argparse.Namespace, port: int, protocol: str) -> int:
    namespaces = args.namespaces.split(",") if args.namespaces else None
    results = oracle_matrix(state, matrix_pods(state, namespaces), protocol, port, args.family)
    if args.output == "json":
        print(json.dumps(matrix_document(results, protocol, port), indent=2))
    else:
        over = f" over IPv{args.family}" if args.family else ""
        print(f"# {port}/{protocol}{over}: rows connect to columns; '.' allowed, 'X' denied")
        print(render_matrix(results))
    return EXIT_ALLOWED
