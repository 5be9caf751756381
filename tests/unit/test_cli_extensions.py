"""`picket lab` lives outside the agent: found through an entry point, and without the
lab extra installed it says in one line how to install it."""

from __future__ import annotations

import re

import pytest

from agent.cli import EXIT_USAGE, build_parser, main
from agent.commands import extensions

REQUIRES = [
    "PyYAML>=6",
    "kubernetes<36,>=29",
    'aiohttp>=3.9; extra == "lab"',
    "cryptography>=42; extra == 'lab'",
    'jsonpatch>=1.33; extra == "lab"',
    'pytest>=8; extra == "test"',
]
HINT = (
    "picket lab: the lab is not installed (aiohttp, cryptography, jsonpatch, dnspython missing);"
    " pip install 'picket[lab]'"
)


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ("lab", ["aiohttp", "cryptography", "jsonpatch"]),
        ("test", ["pytest"]),
        ("none", []),
    ],
)
def test_extra_requirements(extra, names):
    assert extensions.extra_requirements(REQUIRES, extra) == names


def test_the_lab_command_is_an_entry_point_needing_the_lab_extra():
    entries = extensions.metadata.entry_points(group=extensions.GROUP)
    assert [(e.name, e.value) for e in entries] == [("lab", "lab.command:register [lab]")]


def test_every_lab_extra_requirement_is_checked():
    requires = extensions.metadata.requires(extensions.DISTRIBUTION) or []
    assert extensions.extra_requirements(requires, "lab") == [
        "aiohttp",
        "cryptography",
        "jsonpatch",
        "dnspython",
    ]


def test_without_the_extra_the_command_says_how_to_install_it(monkeypatch, capsys):
    assert extensions.not_installed(lambda name: False) == {"lab": HINT}
    monkeypatch.setattr(extensions, "_installed", lambda name: False)
    assert main(["lab", "up", "--nodes", "2"]) == EXIT_USAGE
    assert capsys.readouterr().err == HINT + "\n"


def test_without_the_lab_package_the_command_says_so_and_the_agent_still_parses(monkeypatch):
    real = extensions.importlib.util.find_spec
    monkeypatch.setattr(
        extensions.importlib.util, "find_spec", lambda name: None if name == "lab" else real(name)
    )
    hint = extensions.not_installed(lambda name: True)["lab"]
    assert hint == "picket lab: the lab is not installed (lab missing); pip install 'picket[lab]'"
    assert build_parser().parse_args(["agent", "--node", "n"]).backend == "iptables"


def test_without_the_extra_the_help_lists_it_as_not_installed(monkeypatch, capsys):
    monkeypatch.setattr(extensions, "_installed", lambda name: False)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert re.search(
        r"\n +lab +\(not installed: pip install 'picket\[lab\]'\)", capsys.readouterr().out
    )


def test_with_the_extra_the_lab_command_is_registered(capsys):
    assert extensions.not_installed() == {}
    with pytest.raises(SystemExit):
        main(["lab", "--help"])
    with pytest.raises(SystemExit) as exit_:
        main(["lab", "up", "--backend", "nosuch"])
    assert exit_.value.code == EXIT_USAGE
    assert "choose from 'none', 'iptables', 'ebpf'" in capsys.readouterr().err
