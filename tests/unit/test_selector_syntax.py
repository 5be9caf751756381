"""The labelSelector text syntax: table cases per operator and error, and round trips."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.model.selectors import LabelSelector, Requirement
from lab.apiserver.selector_syntax import format_label_selector, parse_label_selector

R = Requirement


def sel(labels: dict[str, str] | None = None, *reqs: Requirement) -> LabelSelector:
    return LabelSelector(tuple(sorted((labels or {}).items())), tuple(sorted(set(reqs))))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", sel(), id="empty-selects-all"),
        pytest.param("  \t", sel(), id="blank-selects-all"),
        pytest.param("app=web", sel({"app": "web"}), id="equals"),
        pytest.param("app==web", sel({"app": "web"}), id="double-equals"),
        pytest.param("app!=web", sel(None, R("app", "NotIn", ("web",))), id="not-equals"),
        pytest.param("app=", sel({"app": ""}), id="equals-empty-value"),
        pytest.param("app==", sel({"app": ""}), id="double-equals-empty-value"),
        pytest.param("app=,tier=db", sel({"app": "", "tier": "db"}), id="empty-value-then-comma"),
        pytest.param("app in (web,db)", sel(None, R("app", "In", ("db", "web"))), id="in"),
        pytest.param("app notin (web)", sel(None, R("app", "NotIn", ("web",))), id="notin"),
        pytest.param("app in ()", sel(None, R("app", "In", ("",))), id="in-empty-set"),
        pytest.param("x in (a,,b)", sel(None, R("x", "In", ("", "a", "b"))), id="in-double-comma"),
        pytest.param("x in (,a)", sel(None, R("x", "In", ("", "a"))), id="in-leading-comma"),
        pytest.param("x in (a,)", sel(None, R("x", "In", ("", "a"))), id="in-trailing-comma"),
        pytest.param("x in (a,a)", sel(None, R("x", "In", ("a",))), id="in-duplicate-value"),
        pytest.param("app", sel(None, R("app", "Exists")), id="exists"),
        pytest.param("!app", sel(None, R("app", "DoesNotExist")), id="does-not-exist"),
        pytest.param("! app", sel(None, R("app", "DoesNotExist")), id="not-space-key"),
        pytest.param(
            " app = web , tier in ( a , b ) ,\n!x ",
            sel({"app": "web"}, R("tier", "In", ("a", "b")), R("x", "DoesNotExist")),
            id="whitespace-everywhere",
        ),
        pytest.param("a=b,a=b", sel({"a": "b"}), id="repeated-same-value"),
        pytest.param(
            "a=b,a=c", sel(None, R("a", "In", ("b",)), R("a", "In", ("c",))), id="repeated-key"
        ),
        pytest.param(
            "a=b,a in (b,c)", sel({"a": "b"}, R("a", "In", ("b", "c"))), id="equals-and-in"
        ),
        pytest.param(
            "example.com/tier=db,k8s.io/x-y_z.w",
            sel({"example.com/tier": "db"}, R("k8s.io/x-y_z.w", "Exists")),
            id="prefixed-keys",
        ),
        pytest.param("in in (in,notin)", sel(None, R("in", "In", ("in", "notin"))), id="keywords"),
        pytest.param("notin", sel(None, R("notin", "Exists")), id="keyword-as-key"),
        pytest.param("a=in", sel({"a": "in"}), id="keyword-as-value"),
        pytest.param("a in(x)", sel(None, R("a", "In", ("x",))), id="no-space-before-paren"),
    ],
)
def test_parse(text: str, expected: LabelSelector) -> None:
    assert parse_label_selector(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(",", "found ',', expected: !, identifier", id="leading-comma"),
        pytest.param("a,", "found end of string, expected: identifier after ','", id="trailing"),
        pytest.param("a,,b", "found ',', expected: identifier after ','", id="double-comma"),
        pytest.param("a b", "found 'b', expected: in, notin, =, ==, !=", id="missing-operator"),
        pytest.param("a in x", "found 'x', expected: '('", id="in-without-paren"),
        pytest.param("a in (x", "found end of string, expected: ',' or ')'", id="unclosed"),
        pytest.param("a in (x y)", "found 'y', expected: ',' or ')'", id="missing-comma"),
        pytest.param(
            "a in (=)", "found '=', expected: ',', ')' or identifier", id="operator-in-set"
        ),
        pytest.param("a===b", "found '=', expected: identifier", id="triple-equals"),
        pytest.param("!a=b", "found '=', expected: ',' or 'end of string'", id="not-with-value"),
        pytest.param("!", "found end of string, expected: identifier", id="bare-not"),
        pytest.param("a=b c", "found 'c', expected: ',' or 'end of string'", id="junk-after"),
        pytest.param("a>1", "operator '>' is not supported", id="gt"),
        pytest.param("a<1", "operator '<' is not supported", id="lt"),
        pytest.param("a$=b", "invalid label key 'a$'", id="bad-key"),
        pytest.param(
            "/a", "invalid label key '/a': prefix part must be non-empty", id="bad-prefix"
        ),
        pytest.param("a=-b", "invalid label value '-b'", id="bad-value"),
        pytest.param("a in (x,-y)", "invalid label value '-y'", id="bad-set-value"),
        pytest.param("a=" + "v" * 64, "must be no more than 63 characters", id="long-value"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_label_selector(text)
    assert message in str(info.value)
    assert repr(text) in str(info.value)  # the message says where: the offset in the text


def test_error_names_the_offset() -> None:
    with pytest.raises(ValueError, match=re.escape("at offset 8 of label selector 'a in (x y)'")):
        parse_label_selector("a in (x y)")


@pytest.mark.parametrize(
    ("selector", "text"),
    [
        pytest.param(sel(), "", id="empty"),
        pytest.param(sel({"b": "1", "a": ""}), "a=,b=1", id="labels-sorted"),
        pytest.param(
            sel({"b": "x"}, R("a", "DoesNotExist"), R("b", "Exists"), R("c", "NotIn", ("1", "2"))),
            "!a,b=x,b,c notin (1,2)",
            id="ordered-by-key",
        ),
        pytest.param(sel(None, R("a", "In", ("", "x"))), "a in (,x)", id="empty-value-in-set"),
    ],
)
def test_format(selector: LabelSelector, text: str) -> None:
    assert format_label_selector(selector) == text
    assert parse_label_selector(text) == selector


@pytest.mark.parametrize(
    "bad",
    [R("a", "In"), R("a", "NotIn"), R("a", "Exists", ("x",)), R("a", "Gt", ("1",))],
    ids=["in-no-values", "notin-no-values", "exists-with-values", "unknown-operator"],
)
def test_format_refuses_what_has_no_text(bad: Requirement) -> None:
    with pytest.raises(ValueError, match="a"):
        format_label_selector(LabelSelector((), (bad,)))


# Keys and values: valid names, prefixed keys, the empty value, and the keywords,
# which are only keywords where an operator is expected.
_NAME = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,6}[A-Za-z0-9])?", fullmatch=True)
_PREFIX = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,3}[a-z0-9])?(\.[a-z0-9]{1,4}){0,2}", fullmatch=True)
keys = st.one_of(
    st.sampled_from(["app", "tier", "in", "notin", "example.com/app"]),
    _NAME,
    st.builds(lambda p, n: f"{p}/{n}", _PREFIX, _NAME),
)
values = st.one_of(st.sampled_from(["", "web", "db", "in", "notin"]), _NAME)
value_sets = st.lists(values, min_size=1, max_size=3, unique=True).map(lambda v: tuple(sorted(v)))
requirements = st.one_of(
    st.builds(Requirement, keys, st.sampled_from(["In", "NotIn"]), value_sets),
    st.builds(Requirement, keys, st.sampled_from(["Exists", "DoesNotExist"])),
)
selectors = st.builds(
    lambda labels, reqs: LabelSelector(tuple(sorted(labels.items())), tuple(sorted(set(reqs)))),
    st.dictionaries(keys, values, max_size=3),
    st.lists(requirements, max_size=4),
)
label_sets = st.dictionaries(
    st.sampled_from(["app", "tier", "in", "notin", "example.com/app"]),
    st.sampled_from(["", "web", "db", "in"]),
    max_size=4,
)


@given(selectors)
def test_format_parse_round_trip(selector: LabelSelector) -> None:
    assert parse_label_selector(format_label_selector(selector)) == selector


@given(selectors, label_sets)
def test_round_trip_keeps_matching(selector: LabelSelector, labels: dict[str, str]) -> None:
    again = parse_label_selector(format_label_selector(selector))
    assert again.matches(labels) == selector.matches(labels)


# Text-level requirements with upstream's meaning, to check the translation (repeated
# keys, `!=`) against a direct reading of labels.Requirement.Matches.
_SMALL_KEYS = st.sampled_from(["app", "tier", "in"])
_SMALL_VALUES = st.sampled_from(["", "web", "db"])
text_requirements = st.one_of(
    st.tuples(_SMALL_KEYS, st.sampled_from(["=", "==", "!="]), _SMALL_VALUES.map(lambda v: (v,))),
    st.tuples(
        _SMALL_KEYS,
        st.sampled_from([" in ", " notin "]),
        st.lists(_SMALL_VALUES, min_size=1, max_size=3, unique=True).map(tuple),
    ),
    st.tuples(_SMALL_KEYS, st.sampled_from(["", "!"]), st.just(())),
)


def _render(key: str, op: str, vals: tuple[str, ...]) -> str:
    if op in ("", "!"):
        return f"{op}{key}"
    if op.strip() in ("in", "notin"):
        return f"{key}{op}({','.join(vals)})"
    return f"{key}{op}{vals[0]}"


def _upstream_matches(key: str, op: str, vals: tuple[str, ...], labels: dict[str, str]) -> bool:
    if op == "":
        return key in labels
    if op == "!":
        return key not in labels
    if op in ("=", "==", " in "):
        return key in labels and labels[key] in vals
    return key not in labels or labels[key] not in vals


@given(st.lists(text_requirements, max_size=5), label_sets)
def test_parsed_text_matches_like_upstream(reqs: list, labels: dict[str, str]) -> None:
    text = ",".join(_render(*r) for r in reqs)
    expected = all(_upstream_matches(*r, labels) for r in reqs)
    assert parse_label_selector(text).matches(labels) == expected, text
