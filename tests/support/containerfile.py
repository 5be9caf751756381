"""The node image's Containerfile as its instructions, continuation lines joined."""

from __future__ import annotations

import re
from pathlib import Path

CONTAINERFILE = Path(__file__).resolve().parents[2] / "daemonset" / "Containerfile"


def containerfile_instructions() -> list[str]:
    joined = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]
