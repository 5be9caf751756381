"""Validation as the API server does it: each bad object names kind, object, field
path and reason, and the error text reads like kubectl's 422."""

from __future__ import annotations

import copy

import pytest

from agent.model.errors import InvalidObjectError
from agent.model.parse import parse_object
from tests.support.builders import namespace, pod, policy


def np(spec: dict) -> dict:
    return policy("y", "p", spec)


def port_rule(*ports: dict) -> dict:
    return {"podSelector": {}, "ingress": [{"ports": list(ports)}]}


def peer_rule(*peers: dict) -> dict:
    return {"podSelector": {}, "ingress": [{"from": list(peers)}]}


def with_container(**changes: object) -> dict:
    obj = pod("y", "p", "198.18.1.1")
    obj["spec"]["containers"][0].update(changes)
    return obj


def renamed(obj: dict, name: object) -> dict:
    obj = copy.deepcopy(obj)
    obj["metadata"]["name"] = name
    return obj


BAD = [
    (
        "port-zero",
        np(port_rule({"port": 0})),
        "spec.ingress[0].ports[0].port",
        "must be between 1 and 65535",
    ),
    (
        "port-too-big",
        np(port_rule({"port": 65536})),
        "spec.ingress[0].ports[0].port",
        "must be between 1 and 65535",
    ),
    (
        "end-port-below-port",
        np(port_rule({"port": 80, "endPort": 79})),
        "spec.ingress[0].ports[0].endPort",
        "must be greater than or equal to `port`",
    ),
    (
        "end-port-too-big",
        np(port_rule({"port": 80, "endPort": 70000})),
        "spec.ingress[0].ports[0].endPort",
        "must be between 1 and 65535",
    ),
    (
        "end-port-with-named-port",
        np(port_rule({"port": "http", "endPort": 90})),
        "spec.ingress[0].ports[0].endPort",
        "may not be specified when `port` is non-numeric",
    ),
    (
        "end-port-without-port",
        np(port_rule({"endPort": 90})),
        "spec.ingress[0].ports[0].endPort",
        "may not be specified when `port` is not specified",
    ),
    (
        "protocol-icmp",
        np(port_rule({"port": 80, "protocol": "ICMP"})),
        "spec.ingress[0].ports[0].protocol",
        'Unsupported value: "ICMP"',
    ),
    (
        "protocol-lowercase",
        np(port_rule({"port": 80, "protocol": "tcp"})),
        "spec.ingress[0].ports[0].protocol",
        "supported values",
    ),
    (
        "port-name-digits-only",
        np(port_rule({"port": "80"})),
        "spec.ingress[0].ports[0].port",
        "must contain at least one letter",
    ),
    (
        "port-name-too-long",
        np(port_rule({"port": "a-very-long-port-name"})),
        "spec.ingress[0].ports[0].port",
        "no more than 15 characters",
    ),
    (
        "port-name-double-hyphen",
        np(port_rule({"port": "a--b"})),
        "spec.ingress[0].ports[0].port",
        "consecutive hyphens",
    ),
    (
        "port-wrong-type",
        np(port_rule({"port": 8.5})),
        "spec.ingress[0].ports[0].port",
        "integer or a port name",
    ),
    (
        "cidr-bad-prefix",
        np(peer_rule({"ipBlock": {"cidr": "10.0.0.0/33"}})),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "valid CIDR",
    ),
    (
        "cidr-no-prefix",
        np(peer_rule({"ipBlock": {"cidr": "10.0.0.1"}})),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "valid CIDR",
    ),
    (
        "cidr-missing",
        np(peer_rule({"ipBlock": {"except": ["10.0.0.0/8"]}})),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "Required value",
    ),
    (
        "except-outside-cidr",
        np(peer_rule({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}})),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "must be a strict subset of `cidr`",
    ),
    (
        "except-equals-cidr",
        np(peer_rule({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}})),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "must be a strict subset of `cidr`",
    ),
    (
        "except-other-family",
        np(peer_rule({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["fd00::/64"]}})),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "must be a strict subset of `cidr`",
    ),
    (
        "ipblock-and-selector",
        np(peer_rule({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}})),
        "spec.ingress[0].from[0]",
        "may not specify both ipBlock and another peer",
    ),
    ("empty-peer", np(peer_rule({})), "spec.ingress[0].from[0]", "must specify a peer"),
    (
        "egress-empty-peer",
        np({"podSelector": {}, "egress": [{"to": [{}]}]}),
        "spec.egress[0].to[0]",
        "must specify a peer",
    ),
    (
        "bad-operator",
        np(
            peer_rule(
                {
                    "podSelector": {
                        "matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]
                    }
                }
            )
        ),
        "spec.ingress[0].from[0].podSelector.matchExpressions[0].operator",
        "not a valid selector operator",
    ),
    (
        "in-without-values",
        np(peer_rule({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}})),
        "spec.ingress[0].from[0].podSelector.matchExpressions[0].values",
        "must be specified when `operator` is 'In' or 'NotIn'",
    ),
    (
        "exists-with-values",
        np(
            peer_rule(
                {
                    "namespaceSelector": {
                        "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]
                    }
                }
            )
        ),
        "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values",
        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
    ),
    (
        "expression-bad-value",
        np(
            {
                "podSelector": {
                    "matchExpressions": [{"key": "a", "operator": "In", "values": ["not ok"]}]
                }
            }
        ),
        "spec.podSelector.matchExpressions[0].values[0]",
        "a valid label must be",
    ),
    (
        "selector-bad-key",
        np({"podSelector": {"matchLabels": {"bad key": "v"}}}),
        "spec.podSelector.matchLabels",
        "name part must consist of",
    ),
    (
        "selector-value-too-long",
        np({"podSelector": {"matchLabels": {"k": "v" * 64}}}),
        "spec.podSelector.matchLabels[k]",
        "no more than 63 characters",
    ),
    (
        "selector-not-object",
        np({"podSelector": "app=web"}),
        "spec.podSelector",
        "must be an object",
    ),
    (
        "too-many-policy-types",
        np({"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"]}),
        "spec.policyTypes",
        "may not specify more than two policyTypes",
    ),
    (
        "unknown-policy-type",
        np({"podSelector": {}, "policyTypes": ["Both"]}),
        "spec.policyTypes[0]",
        'Unsupported value: "Both"',
    ),
    (
        "ports-not-a-list",
        np({"podSelector": {}, "ingress": [{"ports": {"port": 80}}]}),
        "spec.ingress[0].ports",
        "must be a list",
    ),
    (
        "rule-not-an-object",
        np({"podSelector": {}, "ingress": ["all"]}),
        "spec.ingress[0]",
        "must be an object",
    ),
    (
        "spec-missing",
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "y"},
        },
        "spec",
        "Required value",
    ),
    (
        "policy-name-uppercase",
        renamed(np({"podSelector": {}}), "Allow_DB"),
        "metadata.name",
        "RFC 1123 subdomain",
    ),
    (
        "policy-name-missing",
        renamed(np({"podSelector": {}}), None),
        "metadata.name",
        "Required value",
    ),
    (
        "policy-name-not-string",
        renamed(np({"podSelector": {}}), 7),
        "metadata.name",
        "must be a string",
    ),
    (
        "wrong-api-version",
        {**np({"podSelector": {}}), "apiVersion": "extensions/v1beta1"},
        "apiVersion",
        "Unsupported value",
    ),
    ("namespace-name-with-dot", namespace("team.a"), "metadata.name", "RFC 1123 label"),
    (
        "namespace-label-value-bad",
        namespace("team", tier="-x"),
        "metadata.labels[tier]",
        "a valid label must be",
    ),
    (
        "container-port-too-big",
        with_container(ports=[{"containerPort": 70000}]),
        "spec.containers[0].ports[0].containerPort",
        "must be between 1 and 65535",
    ),
    (
        "container-port-bad-protocol",
        with_container(ports=[{"containerPort": 80, "protocol": "ICMP"}]),
        "spec.containers[0].ports[0].protocol",
        "Unsupported value",
    ),
    (
        "container-port-duplicate-name",
        with_container(
            ports=[{"containerPort": 80, "name": "http"}, {"containerPort": 81, "name": "http"}]
        ),
        "spec.containers[0].ports[1].name",
        'Duplicate value: "http"',
    ),
    (
        "container-port-bad-name",
        with_container(ports=[{"containerPort": 80, "name": "HTTP"}]),
        "spec.containers[0].ports[0].name",
        "alpha-numeric",
    ),
    (
        "container-without-image",
        with_container(image=""),
        "spec.containers[0].image",
        "Required value",
    ),
    (
        "pod-without-containers",
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}},
        "spec.containers",
        "Required value",
    ),
    (
        "pod-bad-ip",
        {**pod("y", "p", None), "status": {"podIP": "10.0.0.300"}},
        "status.podIP",
        "must be a valid IP address",
    ),
]


@pytest.mark.parametrize(("obj", "path", "reason"), [pytest.param(*c[1:], id=c[0]) for c in BAD])
def test_invalid_object_names_field_and_reason(obj, path, reason):
    with pytest.raises(InvalidObjectError) as info:
        parse_object(obj)
    matching = [e for e in info.value.errors if e.path == path]
    assert matching, f"no error at {path}: {info.value}"
    assert any(reason in str(e) for e in matching), str(info.value)
    assert f"{path}: " in str(info.value)


def test_error_names_kind_and_object():
    with pytest.raises(InvalidObjectError) as info:
        parse_object(np(port_rule({"port": 80, "endPort": 79})))
    assert info.value.kind == "NetworkPolicy"
    assert info.value.ref == "y/p"
    assert str(info.value) == (
        "NetworkPolicy y/p is invalid: spec.ingress[0].ports[0].endPort: Invalid value: 79: "
        "must be greater than or equal to `port`"
    )


def test_all_problems_reported_at_once():
    bad = np(
        {
            "podSelector": {},
            "policyTypes": ["Both"],
            "ingress": [{"ports": [{"port": 0}, {"protocol": "ICMP"}]}],
        }
    )
    with pytest.raises(InvalidObjectError) as info:
        parse_object(bad)
    assert {e.path for e in info.value.errors} == {
        "spec.policyTypes[0]",
        "spec.ingress[0].ports[0].port",
        "spec.ingress[0].ports[1].protocol",
    }


def test_unknown_kind_is_an_error():
    with pytest.raises(InvalidObjectError, match="kind: Unsupported value"):
        parse_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}})


GOOD = [
    ("ipv6-block", np(peer_rule({"ipBlock": {"cidr": "fd00::/48", "except": ["fd00::/64"]}}))),
    ("prefixed-label-key", np({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "x"}}})),
    ("empty-label-value", np({"podSelector": {"matchLabels": {"tier": ""}}})),
    ("end-port-equal", np(port_rule({"port": 80, "endPort": 80}))),
    ("named-port-max-length", np(port_rule({"port": "abcdefghijklmno"}))),
    ("no-spec-fields", np({})),
    ("sctp", np(port_rule({"port": 9, "protocol": "SCTP"}))),
]


@pytest.mark.parametrize("obj", [pytest.param(c[1], id=c[0]) for c in GOOD])
def test_valid_objects_parse(obj):
    parse_object(obj)
