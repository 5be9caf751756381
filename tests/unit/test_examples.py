"""Every example's expected connectivity, written by hand from the specification,
against the oracle; and `picket explain --matrix` prints the same table."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.expectations import CheckExpectation, MatrixExpectation, parse_expectations
from agent.explain import render_matrix
from agent.manifests import load_state
from agent.model.matrix import matrix_pods, oracle_matrix
from agent.model.oracle import verdict

EXAMPLES = sorted(p for p in (Path(__file__).parents[2] / "examples").iterdir() if p.is_dir())


def expectations(folder: Path) -> list:
    path = folder / "expected.txt"
    return parse_expectations(path.read_text(), str(path))


def check(state, expected) -> None:
    if isinstance(expected, MatrixExpectation):
        pods = matrix_pods(state, expected.namespaces or None)
        got = oracle_matrix(state, pods, expected.protocol, expected.port)
        where = f"matrix {expected.port}/{expected.protocol}"
        assert render_matrix(got) == render_matrix(expected.results), where
    else:
        assert isinstance(expected, CheckExpectation)
        v = verdict(state, expected.src, expected.dst, expected.protocol, expected.port)
        assert v.allowed is expected.allowed, f"{expected}: {v}"


def test_there_are_seven_examples():
    assert len(EXAMPLES) == 7


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
