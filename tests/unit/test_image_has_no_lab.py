"""The node image holds no lab: the Containerfile copies and installs only the agent, and
daemonset/check-image.sh's import check (run inside the built image) fails where the lab
or a lab-only distribution imports, as on this machine's venv. aiohttp is lab-only only
while the agent's API client does not require it (kubernetes 36 and later do)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from agent.commands import extensions
from tests.support.containerfile import containerfile_instructions

REPO = Path(__file__).parents[2]
SCRIPT = (REPO / "daemonset" / "check-image.sh").read_text()
LAB_EXTRA = extensions.extra_requirements(
    extensions.metadata.requires(extensions.DISTRIBUTION) or [], "lab"
)


def _lab_modules() -> list[str]:
    match = re.search(r"^LAB_MODULES=\(([^)]*)\)$", SCRIPT, re.MULTILINE)
    assert match, "check-image.sh names LAB_MODULES"
    return match.group(1).split()


def _lab_distributions() -> list[str]:
    return [name.partition(":")[0] for name in _lab_modules()]


def _no_lab_check(*python: str, dist: str = "picket") -> subprocess.CompletedProcess:
    match = re.search(r"^NO_LAB_CHECK='(.*?)^'$", SCRIPT, re.MULTILINE | re.DOTALL)
    assert match, "check-image.sh holds the NO_LAB_CHECK snippet"
    return subprocess.run(
        [*python, "-I", "-c", match.group(1), dist, *_lab_modules()],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


def test_the_checked_modules_are_the_lab_package_and_the_lab_extra():
    assert _lab_distributions() == ["lab", *(name.lower() for name in LAB_EXTRA)]


def _client_requires_aiohttp() -> bool:
    requires = extensions.metadata.requires("kubernetes") or []
    return any(r.startswith("aiohttp") and "extra ==" not in r for r in requires)


def test_the_check_fails_where_the_lab_imports_as_in_this_venv():
    proc = _no_lab_check(sys.executable)
    assert proc.returncode == 1
    # aiohttp is the agent's too when its API client requires it (kubernetes >= 36).
    if _client_requires_aiohttp():
        assert proc.stdout.splitlines() == [
            "allowed: aiohttp (required by picket's own dependencies)",
            "present: lab, cryptography, jsonpatch, dnspython",
        ]
    else:
        assert proc.stdout == "present: lab, aiohttp, cryptography, jsonpatch, dnspython\n"


def test_aiohttp_counts_as_the_labs_where_the_agent_does_not_require_it():
    proc = _no_lab_check(sys.executable, dist="no-such-distribution")
    assert proc.returncode == 1
    assert proc.stdout == "present: lab, aiohttp, cryptography, jsonpatch, dnspython\n"


def test_the_check_passes_where_none_imports():
    # Debian's python without site-packages has none of them (nor, with -I, the checkout).
    proc = _no_lab_check("/usr/bin/python3", "-S")
    assert (proc.returncode, proc.stdout) == (0, "")


def test_the_check_runs_in_the_built_image_before_the_agents():
    body = SCRIPT.split("\nbuild\n", 1)[1]
    assert body.index("check_no_lab || status=1") < body.index("check_backend")
    assert '/opt/picket/venv/bin/python -I -c "$NO_LAB_CHECK" picket "${LAB_MODULES[@]}"' in SCRIPT


def test_the_containerfile_copies_only_the_agent_and_installs_no_extra():
    steps = containerfile_instructions()
    copied = [s.split()[1:-1] for s in steps if s.startswith("COPY")]
    assert not any(path.startswith("lab") for paths in copied for path in paths)
    installs = [s for s in steps if "pip install" in s]
    assert installs and all("pip install --no-cache-dir -e /opt/picket/src " in s for s in installs)
    assert not any("[" in s.split("pip install", 1)[1].split("&&")[0] for s in installs)


def test_the_agents_own_dependencies_hold_none_of_the_lab_extra():
    requires = extensions.metadata.requires(extensions.DISTRIBUTION) or []
    hard = {re.split(r"[<>=!;\[ ]", r, maxsplit=1)[0].lower() for r in requires if "extra" not in r}
    assert hard.isdisjoint(name.lower() for name in LAB_EXTRA)
