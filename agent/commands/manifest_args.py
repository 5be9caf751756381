"""The manifest arguments `explain` and `compile` share, and loading them with errors
reported the same way."""

from __future__ import annotations

import argparse
import sys

from agent.manifests import ManifestError, load_state
from agent.model.state import ClusterState


def add_manifest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--filename",
        dest="paths",
        action="extend",
        nargs="+",
        required=True,
        help="manifest files or folders (YAML/JSON, multi-document)",
    )
    p.add_argument(
        "-n",
        "--namespace",
        default="default",
        help="namespace for objects that name none (default: default)",
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")


def load_manifests(args: argparse.Namespace, command: str) -> ClusterState | None:
    """The state, with notes on ignored documents on stderr; None after an error."""
    try:
        state, ignored = load_state(args.paths, args.namespace)
    except ManifestError as exc:
        print(f"picket {command}: {exc}", file=sys.stderr)
        return None
    for note in ignored:
        print(f"picket {command}: note: {note}", file=sys.stderr)
    return state
