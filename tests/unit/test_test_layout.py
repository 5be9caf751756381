"""The tests' own layout (DESIGN.md): shared helpers live in tests/support/, and no test
module imports another test module or a conftest (fixtures reach tests through pytest)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parents[1]


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_test_code_imports_tests_only_from_the_support_package():
    offending = {
        str(path.relative_to(TESTS)): sorted(
            m
            for m in _imported_modules(path)
            if m.startswith("tests.") and not m.startswith("tests.support")
        )
        for path in sorted(TESTS.rglob("*.py"))
    }
    assert {path: ms for path, ms in offending.items() if ms} == {}
