"""Random objects never crash the parser: they parse, or raise InvalidObjectError
naming the object and at least one field."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.model.errors import InvalidObjectError
from agent.model.oracle import verdict
from agent.model.parse import parse_object
from agent.model.state import ClusterState
from tests.support.builders import model_cluster, policy

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-70000, 70000)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["TCP", "UDP", "In", "Egress", "10.0.0.0/8", "http", "80", "a=b"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "podSelector",
                    "namespaceSelector",
                    "ipBlock",
                    "cidr",
                    "except",
                    "ports",
                    "port",
                    "endPort",
                    "protocol",
                    "from",
                    "to",
                    "matchLabels",
                    "matchExpressions",
                    "key",
                    "operator",
                    "values",
                    "ingress",
                    "egress",
                    "policyTypes",
                    "name",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)

VALID_POLICY = policy(
    "y",
    "p",
    {
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [{"key": "ns", "operator": "In", "values": ["x"]}]
                        },
                        "podSelector": {},
                    },
                    {"ipBlock": {"cidr": "198.19.0.0/16", "except": ["198.19.1.0/24"]}},
                ],
                "ports": [{"port": 80, "endPort": 90}, {"port": "http", "protocol": "UDP"}],
            }
        ],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"a": "b"}}}], "ports": [{"port": 53}]}],
    },
)


def _paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _replace(obj: object, path: tuple, value: object) -> object:
    if not path:
        return value
    clone = copy.deepcopy(obj)
    target = clone
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return clone


def _parse_or_documented_error(obj: object) -> None:
    try:
        parse_object(obj)
    except InvalidObjectError as exc:
        assert exc.errors, "an InvalidObjectError carries at least one field error"
        assert all(e.path for e in exc.errors)


@given(json_values)
def test_random_values_never_crash(value):
    _parse_or_documented_error(value)


@given(json_values)
def test_random_specs_never_crash(spec):
    _parse_or_documented_error(policy("y", "p", spec))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_paths(VALID_POLICY)[1:]), json_values)
def test_one_field_replaced_never_crashes(path, value):
    _parse_or_documented_error(_replace(VALID_POLICY, path, value))


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_paths(VALID_POLICY["spec"])[1:]),
    json_values,
    st.sampled_from(["x/a", "y/b", "198.19.1.5", "198.19.2.5"]),
    st.sampled_from(["y/a", "y/c", "x/b"]),
    st.sampled_from(["TCP", "UDP", "SCTP"]),
    st.integers(1, 65535),
)
def test_oracle_answers_for_any_policy_that_parses(path, value, src, dst, proto, port):
    raw = _replace(VALID_POLICY, ("spec", *path), value)
    try:
        parsed = parse_object(raw)
    except InvalidObjectError:
        return
    state = ClusterState.from_objects([*(parse_object(o) for o in model_cluster()), parsed])
    assert isinstance(verdict(state, src, dst, proto, port).allowed, bool)
