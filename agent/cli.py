"""The `picket` command: subcommands are registered from agent.commands, and from the
`picket.subcommands` entry points of packages beside the agent (the lab)."""

from __future__ import annotations

import argparse
import sys

from agent import __version__
from agent.commands import agent_cmd, drops, explain, extensions
from agent.commands import compile as compile_cmd

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="picket",
        description="Per-node Kubernetes NetworkPolicy enforcement with readable drop logs.",
    )
    parser.add_argument("--version", action="version", version=f"picket {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    explain.register(sub)
    compile_cmd.register(sub)
    extensions.register(sub)
    agent_cmd.register(sub)
    drops.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Before parsing: an absent command's own arguments mean nothing to this parser.
    hint = extensions.not_installed().get(argv[0]) if argv else None
    if hint is not None:
        print(hint, file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
