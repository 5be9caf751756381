"""Lab fixtures: root, real namespaces, the real kubectl and kubernetes client.

Lab tests never skip silently: without root they fail, naming what is missing. Each
test module brings the lab up (idempotent, about a second) and takes it down at the
end, so every module starts from a clean host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PICKET = str(Path(sys.executable).parent / "picket")
MODEL = ROOT / "tests" / "lab" / "manifests" / "model.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session", autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (network namespaces); deselect with -m 'not lab'")


def picket(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [PICKET, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"picket {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


class Kubectl:
    def __init__(self, kubeconfig: str) -> None:
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}

    def __call__(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["kubectl", *args],
            capture_output=True,
            text=True,
            env=self.env,
            input=stdin,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc

    def json(self, *args: str) -> dict:
        return json.loads(self(*args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    """A 2-node lab without enforcement; yields the kubeconfig path."""
    picket("lab", "down")
    up = picket("lab", "up", "--nodes", "2", "--backend", "none")
    kubeconfig = up.stdout.strip().splitlines()[-1]
    try:
        yield kubeconfig
    finally:
        picket("lab", "down")


@contextmanager
def model_lab(backend: str) -> Iterator[Kubectl]:
    """A fresh 2-node lab with `backend`'s agents and the 3x3 model ready; down after."""
    picket("lab", "down")
    up = picket("lab", "up", "--nodes", "2", "--backend", backend)
    kubectl = Kubectl(up.stdout.strip().splitlines()[-1])
    try:
        kubectl("apply", "-f", str(MODEL))
        kubectl("wait", "--for=condition=Ready", "pod", "--all", "-A", "--timeout=60s")
        yield kubectl
    finally:
        picket("lab", "down")


@pytest.fixture(scope="module")
def kubectl(lab: str) -> Kubectl:
    return Kubectl(lab)


@pytest.fixture(scope="module")
def model(kubectl: Kubectl) -> Kubectl:
    """The 3x3 model applied and ready."""
    kubectl("apply", "-f", str(MODEL))
    kubectl("wait", "--for=condition=Ready", "pod", "--all", "-A", "--timeout=60s")
    return kubectl


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll `condition` until it holds or `timeout` passes (for API state, not speed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def matrix(*args: str) -> dict:
    return json.loads(picket("lab", "matrix", "--json", *args).stdout)
