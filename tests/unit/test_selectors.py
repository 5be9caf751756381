"""Label selectors: table cases and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.model.errors import FieldErrors
from agent.model.selectors import (
    LabelSelector,
    Requirement,
    parse_selector,
    selector_to_dict,
)

LABELS = {"app": "web", "tier": "front", "env": ""}


def sel(raw: dict) -> LabelSelector:
    errs = FieldErrors()
    out = parse_selector(raw, "s", errs)
    assert not errs, errs
    return out


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param({}, True, id="empty-matches-all"),
        pytest.param({"matchLabels": {"app": "web"}}, True, id="label-equal"),
        pytest.param({"matchLabels": {"app": "db"}}, False, id="label-differs"),
        pytest.param({"matchLabels": {"app": "web", "tier": "back"}}, False, id="labels-anded"),
        pytest.param({"matchLabels": {"env": ""}}, True, id="empty-value-present"),
        pytest.param({"matchLabels": {"zone": ""}}, False, id="empty-value-absent-key"),
        pytest.param(
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "web"]}]},
            True,
            id="in",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]},
            False,
            id="not-in-set",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
            False,
            id="in-missing-key",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]},
            False,
            id="notin-listed",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]},
            True,
            id="notin-missing-key",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "env", "operator": "Exists"}]},
            True,
            id="exists-empty-value",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "zone", "operator": "Exists"}]},
            False,
            id="exists-missing",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]},
            True,
            id="does-not-exist",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
            False,
            id="does-not-exist-present",
        ),
        pytest.param(
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}],
            },
            False,
            id="labels-and-expressions-anded",
        ),
    ],
)
def test_selector_table(raw, expected):
    assert sel(raw).matches(LABELS) is expected


def test_selector_string_form():
    s = sel(
        {
            "matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [
                {"key": "k", "operator": "NotIn", "values": ["y", "x"]},
                {"key": "e", "operator": "Exists"},
                {"key": "d", "operator": "DoesNotExist"},
            ],
        }
    )
    assert str(s) == "a=1,b=2,!d,e,k notin (x,y)"
    assert str(LabelSelector()) == "(all)"


def test_equal_selectors_are_equal_whatever_the_order():
    one = sel(
        {
            "matchLabels": {"a": "1", "b": "2"},
            "matchExpressions": [{"key": "k", "operator": "In", "values": ["x", "y"]}],
        }
    )
    two = sel(
        {
            "matchExpressions": [{"key": "k", "operator": "In", "values": ["y", "x", "x"]}],
            "matchLabels": {"b": "2", "a": "1"},
        }
    )
    assert one == two
    assert hash(one) == hash(two)


keys = st.sampled_from(["app", "tier", "env", "example.com/team", "zone"])
values = st.sampled_from(["", "a", "b", "web", "db"])
label_sets = st.dictionaries(keys, values, max_size=5)
requirements = st.one_of(
    st.builds(
        Requirement,
        keys,
        st.sampled_from(["In", "NotIn"]),
        st.lists(values, min_size=1, max_size=3, unique=True).map(lambda v: tuple(sorted(v))),
    ),
    st.builds(Requirement, keys, st.sampled_from(["Exists", "DoesNotExist"])),
)
selectors = st.builds(
    LabelSelector,
    st.dictionaries(keys, values, max_size=3).map(lambda d: tuple(sorted(d.items()))),
    st.lists(requirements, max_size=3, unique=True).map(lambda r: tuple(sorted(r))),
)


@given(label_sets)
def test_empty_selector_matches_everything(labels):
    assert LabelSelector().matches(labels)


@given(label_sets, st.data())
def test_subset_of_labels_matches(labels, data):
    subset = data.draw(st.sets(st.sampled_from(sorted(labels)) if labels else st.nothing()))
    assert LabelSelector(tuple(sorted((k, labels[k]) for k in subset))).matches(labels)


@given(label_sets, keys, st.lists(values, min_size=1, max_size=3))
def test_in_and_notin_are_complements(labels, key, vals):
    vals = tuple(sorted(set(vals)))
    inside = Requirement(key, "In", vals).matches(labels)
    assert inside != Requirement(key, "NotIn", vals).matches(labels)


@given(label_sets, keys)
def test_exists_and_does_not_exist_are_complements(labels, key):
    assert Requirement(key, "Exists").matches(labels) != Requirement(key, "DoesNotExist").matches(
        labels
    )


@given(selectors, selectors, label_sets)
def test_requirements_are_anded(one, two, labels):
    both = LabelSelector(
        tuple(sorted(set(one.match_labels) | set(two.match_labels))),
        tuple(sorted(set(one.expressions) | set(two.expressions))),
    )
    if len(dict(both.match_labels)) == len(both.match_labels):  # no conflicting keys
        assert both.matches(labels) == (one.matches(labels) and two.matches(labels))


@given(selectors)
def test_round_trip_through_api_form(selector):
    assert sel(selector_to_dict(selector)) == selector
