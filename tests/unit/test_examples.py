"""Every example's expected connectivity, written by hand from the specification,
against the oracle (checks through a Service against every backend it may pick); and
`picket explain --matrix` prints the same table. What an example applies to a cluster
stays in namespaces of its own; what a cluster already has (example 05's DNS) is a
stand-in the oracle reads and nothing applies."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.expectations import CheckExpectation, MatrixExpectation, parse_expectations
from agent.explain import render_matrix
from agent.manifests import load_state
from agent.model.matrix import matrix_pods, oracle_matrix
from agent.model.oracle import verdict
from agent.model.service_backends import service_verdicts

EXAMPLES = sorted(p for p in (Path(__file__).parents[2] / "examples").iterdir() if p.is_dir())


def expectations(folder: Path) -> list:
    path = folder / "expected.txt"
    return parse_expectations(path.read_text(), str(path))


def check(state, expected) -> None:
    if isinstance(expected, MatrixExpectation):
        pods = matrix_pods(state, expected.namespaces or None)
        got = oracle_matrix(state, pods, expected.protocol, expected.port, expected.family)
        where = f"matrix {expected.port}/{expected.protocol}"
        assert render_matrix(got) == render_matrix(expected.results), where
    elif expected.service is not None:
        # kube-proxy picks any backend: the expectation must hold for every one.
        got = service_verdicts(
            state, expected.src, *expected.service, expected.port, expected.protocol
        )
        assert got, f"{expected}: the Service has no backend"
        assert {ref: v.allowed for ref, v in got.items()} == dict.fromkeys(got, expected.allowed)
    else:
        assert isinstance(expected, CheckExpectation)
        v = verdict(state, expected.src, expected.dst, expected.protocol, expected.port)
        assert v.allowed is expected.allowed, f"{expected}: {v}"


def test_there_are_eight_examples():
    assert len(EXAMPLES) == 8


@pytest.mark.parametrize("folder", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_matches_its_expected_connectivity(folder):
    state, ignored = load_state([str(folder)])
    assert not ignored
    found = expectations(folder)
    assert any(isinstance(e, MatrixExpectation) for e in found)
    for expected in found:
        check(state, expected)


def test_examples_do_not_interfere_when_loaded_together():
    state, _ = load_state([str(p) for p in EXAMPLES])
    for folder in EXAMPLES:
        for expected in expectations(folder):
            check(state, expected)


def applied(folder: Path) -> list[dict]:
    """What the lab tests, `make demo` and vagrant/check.sh apply of an example."""
    docs = []
    for name in ("cluster.yaml", "policies.yaml"):
        docs += [d for d in yaml.safe_load_all((folder / name).read_text()) if d]
    return docs


@pytest.mark.parametrize("folder", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_what_an_example_applies_stays_in_its_own_namespaces(folder):
    """So it never collides with a cluster's own objects (kube-system's DNS, for one)."""
    docs = applied(folder)
    own = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    assert own.isdisjoint({"default", "kube-system", "kube-public", "kube-node-lease"})
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] != "Namespace"} <= own


def test_stand_ins_are_read_by_the_oracle_and_applied_by_nothing():
    folder = EXAMPLES[[p.name for p in EXAMPLES].index("05-default-deny-with-dns")]
    state, _ = load_state([str(folder)])
    assert "kube-system/coredns" in state.pods and "kube-system/kube-dns" in state.services
    assert not [d for d in applied(folder) if d["metadata"].get("namespace") == "kube-system"]
    # `kubectl apply -f FOLDER` reads only the folder's own files (no -R): not stand-in/.
    assert [p.name for p in (folder / "stand-in").iterdir()] == ["cluster-dns.yaml"]
