"""Every example in examples/ is enforced in the lab exactly as its expected.txt says
(the hand-written expectations, not the oracle), checks with outside addresses and node
addresses included. A matrix covers the example's own pods, as on a real cluster
(vagrant/examples.py): the lab's own, the cluster DNS pod in kube-system, are not the
example's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent.expectations import CheckExpectation, MatrixExpectation, parse_expectations
from tests.support.enforcement import differences, observed, probe_allowed
from tests.support.lab_cli import ROOT, Kubectl, picket, wait_until
from tests.support.policies import BACKENDS

EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())
SYSTEM_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}


@pytest.fixture(scope="module", params=BACKENDS)
def kubectl(request: pytest.FixtureRequest) -> Iterator[Kubectl]:
    picket("lab", "down")
    up = picket("lab", "up", "--nodes", "2", "--backend", request.param)
    try:
        yield Kubectl(up.stdout.strip().splitlines()[-1])
    finally:
        picket("lab", "down")


def manifest_pod_ips(folder: Path) -> dict[str, str]:
    """Addresses the manifests give pods (the lab assigns others): address -> NS/POD."""
    out = {}
    for doc in yaml.safe_load_all((folder / "cluster.yaml").read_text()):
        if doc and doc.get("kind") == "Pod" and (doc.get("status") or {}).get("podIP"):
            meta = doc["metadata"]
            out[doc["status"]["podIP"]] = f"{meta['namespace']}/{meta['name']}"
    return out


def remove(kubectl: Kubectl, folder: Path) -> None:
    kubectl("delete", "-f", str(folder / "policies.yaml"), "--ignore-not-found")
    for doc in yaml.safe_load_all((folder / "cluster.yaml").read_text()):
        if not doc:
            continue
        meta = doc["metadata"]
        if doc["kind"] == "Namespace" and meta["name"] not in SYSTEM_NAMESPACES:
            kubectl("delete", "namespace", meta["name"], "--ignore-not-found")
        elif doc["kind"] == "Pod" and meta["namespace"] in SYSTEM_NAMESPACES:
            kubectl("delete", "pod", "-n", meta["namespace"], meta["name"], "--ignore-not-found")


def example_observed(e: MatrixExpectation) -> dict[str, dict[str, bool]]:
    """The observed matrix among the pods the expectation names."""
    got = observed(list(e.namespaces), e.port, e.protocol)
    return {
        s: {d: v for d, v in row.items() if d in e.results}
        for s, row in got.items()
        if s in e.results
    }


@pytest.mark.parametrize("folder", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_enforced_as_expected(kubectl, folder):
    kubectl("apply", "-f", str(folder / "cluster.yaml"))
    kubectl("apply", "-f", str(folder / "policies.yaml"))
    kubectl("wait", "--for=condition=Ready", "pod", "--all", "-A", "--timeout=60s")
    try:
        pod_ips = manifest_pod_ips(folder)
        for expected in parse_expectations((folder / "expected.txt").read_text()):
            if isinstance(expected, MatrixExpectation):

                def matches(e: MatrixExpectation = expected) -> bool:
                    return differences(e.results, example_observed(e)) == []

                assert wait_until(matches, 20), (
                    f"{expected.port}/{expected.protocol}: "
                    + "; ".join(differences(expected.results, example_observed(expected)))
                )
            else:
                assert isinstance(expected, CheckExpectation)
                src = pod_ips.get(expected.src, expected.src)
                dst = pod_ips.get(expected.dst, expected.dst)
                port = f"{expected.port}/{expected.protocol}"
                assert probe_allowed(src, dst, port) == expected.allowed, (src, dst, port)
    finally:
        remove(kubectl, folder)
