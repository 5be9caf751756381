"""Subcommands that live outside the agent, found through the `picket.subcommands`
entry points (pyproject.toml), so that nothing under agent/ imports them. An entry
point names the extra its command needs (`lab = "lab.command:register [lab]"`); with
that extra not installed, the command is listed but only says how to install it."""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import importlib.util
import re
from collections.abc import Callable, Iterable

GROUP = "picket.subcommands"
DISTRIBUTION = "picket"

# `aiohttp>=3.9; extra == "lab"`: the name, and the extra the requirement belongs to.
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def extra_requirements(requires: Iterable[str], extra: str) -> list[str]:
    """The distribution names an extra adds, from a distribution's Requires-Dist."""
    names = []
    for line in requires:
        name, marker = _NAME.match(line), _EXTRA.search(line)
        if name and marker and marker.group(1) == extra:
            names.append(name.group(1))
    return names


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def install_hint(command: str, extras: Iterable[str], missing: list[str]) -> str:
    return (
        f"picket {command}: the {command} is not installed ({', '.join(missing)} missing);"
        f" pip install '{DISTRIBUTION}[{','.join(extras)}]'"
    )


def _missing(entry: metadata.EntryPoint, installed: Callable[[str], bool]) -> list[str]:
    """What the command lacks: its own package (a node image has none), then any
    distribution of its extras. Looked up, not imported, so that a missing lab can
    never stop `picket agent`."""
    package = entry.module.partition(".")[0]
    missing = [] if importlib.util.find_spec(package) is not None else [package]
    requires = metadata.requires(DISTRIBUTION) or []
    return missing + [
        name
        for extra in entry.extras
        for name in extra_requirements(requires, extra)
        if not installed(name)
    ]


def not_installed(installed: Callable[[str], bool] | None = None) -> dict[str, str]:
    """For each extension command whose extra is not installed: the install hint."""
    hints = {}
    for entry in metadata.entry_points(group=GROUP):
        missing = _missing(entry, installed or _installed)
        if missing:
            hints[entry.name] = install_hint(entry.name, entry.extras, missing)
    return hints


def register(sub: argparse._SubParsersAction) -> None:
    """Each extension command: its own parser if installed, else a line in the help."""
    absent = not_installed()
    for entry in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        if entry.name in absent:
            extras = ",".join(entry.extras)
            sub.add_parser(
                entry.name, help=f"(not installed: pip install '{DISTRIBUTION}[{extras}]')"
            )
        else:
            entry.load()(sub)
