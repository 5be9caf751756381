"""The fieldSelector parameter: parsing, supported fields and matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.apiserver.fieldselect import (
    SUPPORTED_FIELDS,
    FieldRequirement,
    FieldSelectorError,
    check_fields,
    field_value,
    format_field_selector,
    matches,
    parse_field_selector,
)

F = FieldRequirement


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", [], id="empty"),
        pytest.param("metadata.name=a", [F("metadata.name", "=", "a")], id="equals"),
        pytest.param("metadata.name==a", [F("metadata.name", "=", "a")], id="double-equals"),
        pytest.param("status.phase!=Running", [F("status.phase", "!=", "Running")], id="not"),
        pytest.param("spec.nodeName=", [F("spec.nodeName", "=", "")], id="empty-value"),
        pytest.param(
            "spec.nodeName=n1,status.phase!=Failed",
            [F("spec.nodeName", "=", "n1"), F("status.phase", "!=", "Failed")],
            id="and",
        ),
        pytest.param("a=b,,c=d,", [F("a", "=", "b"), F("c", "=", "d")], id="empty-terms-skipped"),
        pytest.param(r"a=x\,y", [F("a", "=", "x,y")], id="escaped-comma"),
        pytest.param(r"a=x\=y", [F("a", "=", "x=y")], id="escaped-equals"),
        pytest.param(r"a=x\\y", [F("a", "=", "x\\y")], id="escaped-backslash"),
        pytest.param("a=x!y", [F("a", "=", "x!y")], id="bang-in-value"),
        pytest.param("a==b", [F("a", "=", "b")], id="double-before-single"),
        pytest.param(" a = b", [F(" a ", "=", " b")], id="no-trimming"),
    ],
)
def test_parse(text: str, expected: list[FieldRequirement]) -> None:
    assert parse_field_selector(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("metadata.name", "can't understand 'metadata.name'", id="no-operator"),
        pytest.param("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'", id="second"),
        pytest.param("a=b=c", "unescaped character in value: '='", id="unescaped-equals"),
        pytest.param("a!=b=c", "unescaped character in value: '='", id="unescaped-after-not"),
        pytest.param("a!==b", "unescaped character in value: '='", id="first-operator-wins"),
        pytest.param(r"a=b\x", r"invalid escape sequence: \x", id="bad-escape"),
        pytest.param("a=b\\", "invalid escape sequence: \\", id="trailing-backslash"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(FieldSelectorError) as info:
        parse_field_selector(text)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_supported_fields_per_resource() -> None:
    for fields in SUPPORTED_FIELDS.values():
        assert {"metadata.name", "metadata.namespace"} <= set(fields)
    assert set(SUPPORTED_FIELDS["pods"]) >= {
        "spec.nodeName",
        "status.phase",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.podIP",
        "status.nominatedNodeName",
        "spec.hostNetwork",
    }
    assert "spec.unschedulable" in SUPPORTED_FIELDS["nodes"]
    assert "status.phase" in SUPPORTED_FIELDS["namespaces"]


@pytest.mark.parametrize(
    ("resource", "text", "bad"),
    [
        pytest.param("pods", "spec.nodeName=n1,status.phase=Running", None, id="pods-ok"),
        pytest.param("pods", "metadata.namespace=x", None, id="namespace-ok"),
        pytest.param("pods", "spec.nodename=n1", "spec.nodename", id="case-matters"),
        pytest.param("pods", "metadata.labels=x", "metadata.labels", id="labels-not-a-field"),
        pytest.param("nodes", "spec.unschedulable=true", None, id="nodes-ok"),
        pytest.param("nodes", "status.phase=Running", "status.phase", id="nodes-no-phase"),
        pytest.param("namespaces", "status.phase=Active", None, id="namespaces-ok"),
        pytest.param("networkpolicies", "metadata.name=p", None, id="default-ok"),
        pytest.param("networkpolicies", "spec.podSelector=x", "spec.podSelector", id="default"),
        pytest.param("services", "a=b,metadata.name=c", "a", id="first-bad-field"),
        pytest.param("events", "involvedObject.name=a,involvedObject.uid=u", None, id="events"),
    ],
)
def test_check_fields(resource: str, text: str, bad: str | None) -> None:
    reqs = parse_field_selector(text)
    if bad is None:
        check_fields(resource, reqs)
        return
    with pytest.raises(FieldSelectorError) as info:
        check_fields(resource, reqs)
    assert str(info.value) == f"field label not supported: {bad}"


POD = {
    "metadata": {"name": "a", "namespace": "x"},
    "spec": {"nodeName": "node-1", "hostNetwork": True, "restartPolicy": "Always"},
    "status": {"phase": "Running", "podIP": "198.18.1.11"},
}
NODE = {"metadata": {"name": "node-1"}, "spec": {}}
EVENT = {"involvedObject": {"name": "a"}, "source": {"component": "kubelet"}, "count": 3}


@pytest.mark.parametrize(
    ("obj", "text", "expected"),
    [
        pytest.param(POD, "", True, id="no-requirements"),
        pytest.param(POD, "metadata.name=a", True, id="name"),
        pytest.param(POD, "metadata.name=b", False, id="other-name"),
        pytest.param(POD, "metadata.namespace=x,spec.nodeName=node-1", True, id="and-both"),
        pytest.param(POD, "metadata.namespace=x,spec.nodeName=node-2", False, id="and-one"),
        pytest.param(POD, "status.phase!=Running", False, id="not-equal-same"),
        pytest.param(POD, "status.phase!=Failed", True, id="not-equal-other"),
        pytest.param(POD, "spec.hostNetwork=true", True, id="bool-true"),
        pytest.param(POD, "spec.hostNetwork=True", False, id="bool-lowercase"),
        pytest.param(NODE, "spec.unschedulable=false", True, id="absent-bool-is-false"),
        pytest.param(NODE, "spec.unschedulable=", False, id="absent-bool-not-empty"),
        pytest.param(POD, "status.nominatedNodeName=", True, id="missing-is-empty"),
        pytest.param(POD, "status.nominatedNodeName!=", False, id="missing-not-empty"),
        pytest.param(NODE, "metadata.namespace=", True, id="cluster-scoped-namespace"),
        pytest.param(POD, "metadata=", True, id="object-is-not-a-scalar"),
        pytest.param(EVENT, "source=kubelet", True, id="renamed-field"),
        pytest.param(EVENT, "count=3", True, id="number"),
    ],
)
def test_matches(obj: dict, text: str, expected: bool) -> None:
    assert matches(obj, parse_field_selector(text)) is expected


def test_field_value_walks_paths() -> None:
    assert field_value(POD, "status.podIP") == "198.18.1.11"
    assert field_value(POD, "spec.nodeName.deeper") == ""
    assert field_value({}, "spec.hostNetwork") == "false"


@given(
    st.lists(
        st.builds(
            FieldRequirement,
            st.sampled_from(["metadata.name", "spec.nodeName", "a.b"]),
            st.sampled_from(["=", "!="]),
            st.text(alphabet="ab,=\\! ", max_size=6),
        ),
        max_size=4,
    )
)
def test_format_parse_round_trip(reqs: list[FieldRequirement]) -> None:
    assert parse_field_selector(format_field_selector(reqs)) == reqs
