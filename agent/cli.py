"""The `picket` command: subcommands are registered from agent.commands."""

from __future__ import annotations

import argparse
import sys

from agent import __version__
from agent.commands import agent_cmd, drops, explain, lab
from agent.commands import compile as compile_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="picket",
        description="Per-node Kubernetes NetworkPolicy enforcement with readable drop logs.",
    )
    parser.add_argument("--version", action="version", version=f"picket {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    explain.register(sub)
    compile_cmd.register(sub)
    lab.register(sub)
    agent_cmd.register(sub)
    drops.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
