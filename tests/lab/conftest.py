"""Lab fixtures: root, real namespaces, the real kubectl and kubernetes client.

Lab tests never skip silently: without root they fail, naming what is missing. Each
test module brings the lab up (idempotent, about a second) and takes it down at the
end, so every module starts from a clean host."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.lab_cli import MODEL, Kubectl, picket


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session", autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (network namespaces); deselect with -m 'not lab'")


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


@pytest.fixture(scope="module")
def kubectl(lab: str) -> Kubectl:
    return Kubectl(lab)


@pytest.fixture(scope="module")
def model(kubectl: Kubectl) -> Kubectl:
    """The 3x3 model applied and ready."""
    kubectl("apply", "-f", str(MODEL))
    kubectl("wait", "--for=condition=Ready", "pod", "--all", "-A", "--timeout=60s")
    return kubectl
