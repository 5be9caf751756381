"""A network namespace of the test's own, entered by the calling thread for the body and
deleted after it (tests that need a kernel, not a lab)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from lab.netns import entered


@contextmanager
def scratch_netns() -> Iterator[str]:
    name = f"picket-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with entered(name):
            yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
