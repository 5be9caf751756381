"""The expected.txt reader (agent/expectations.py): matrices, checks, checks through a
Service (svc/NS/NAME), and errors that name the line and what is wrong with it."""

from __future__ import annotations

import pytest

from agent.expectations import (
    CheckExpectation,
    ExpectationSyntaxError,
    MatrixExpectation,
    parse_expectations,
)

TEXT = """\
# comment
matrix 5432/TCP namespaces=shop,web
from\\to   shop/api shop/db
shop/api  -        .
# a comment inside a block
shop/db   X        -

check shop/api 198.19.200.7 443/udp allowed
check 198.19.200.7 svc/shop/api 80 denied
"""


def test_matrices_and_checks_read_as_written():
    matrix, check, through = parse_expectations(TEXT)
    assert matrix == MatrixExpectation(
        5432,
        "TCP",
        ("shop", "web"),
        {"shop/api": {"shop/db": True}, "shop/db": {"shop/api": False}},
    )
    assert matrix.results == {"shop/api": {"shop/db": True}, "shop/db": {"shop/api": False}}
    assert check == CheckExpectation("shop/api", "198.19.200.7", 443, "UDP", True)
    assert check.service is None
    assert through == CheckExpectation("198.19.200.7", "svc/shop/api", 80, "TCP", False)
    assert through.service == ("shop", "api")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("check a/b c/d 80/TCP maybe", "want 'check FROM TO PORT/PROTO allowed|denied'"),
        ("check a/b c/d 80/TCP", "want 'check FROM TO"),
        ("check a/b c/d 99999 allowed", "port '99999' is not a number"),
        ("check a/b c/d 80/ICMP allowed", "protocol 'ICMP' is not one of"),
        ("check svc/a/b c/d 80 allowed", "'svc/a/b': a Service is a target, not a source"),
        ("check a/b svc/a 80 allowed", "'svc/a' is not svc/NAMESPACE/NAME"),
        ("check a/b svc/a/b/c 80 allowed", "'svc/a/b/c' is not svc/NAMESPACE/NAME"),
        ("matrix 80/TCP", "matrix without a table"),
        ("matrix 80/TCP pods=a\nfrom\\to a/a\na/a -", "unknown matrix option 'pods=a'"),
        ("matrix 80\nfrom\\to a/a a/b\na/a - . .", "row 'a/a' has 3 cells, want 2"),
        ("matrix 80\nfrom\\to a/a a/b\na/a - ?", r"cell '\?' is not"),
        ("probe a/b c/d 80 allowed", "expected 'matrix' or 'check'"),
    ],
)
def test_errors_name_the_line_and_the_fault(line, message):
    with pytest.raises(ExpectationSyntaxError, match=message) as caught:
        parse_expectations(f"# first\n\n{line}\n", "ex/expected.txt")
    assert str(caught.value).startswith("ex/expected.txt:3: ")
