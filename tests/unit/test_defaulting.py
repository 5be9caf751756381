"""The API server's defaulting, so that raw manifests mean what they mean in a cluster."""

from __future__ import annotations

import pytest

from agent.model.defaulting import apply_defaults
from agent.model.parse import parse_object
from tests.support.builders import namespace, pod, policy


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        pytest.param({}, ["Ingress"], id="nothing-means-ingress"),
        pytest.param({"ingress": [{}]}, ["Ingress"], id="ingress-rules"),
        pytest.param({"egress": [{}]}, ["Ingress", "Egress"], id="egress-rules-add-egress"),
        pytest.param({"egress": []}, ["Ingress"], id="empty-egress-list"),
        pytest.param({"policyTypes": []}, ["Ingress"], id="empty-types-list"),
        pytest.param({"policyTypes": ["Egress"], "ingress": [{}]}, ["Egress"], id="explicit-kept"),
    ],
)
def test_policy_types_defaulting(spec, types):
    assert apply_defaults(policy("y", "p", spec))["spec"]["policyTypes"] == types


def test_port_protocol_defaults_to_tcp_in_both_directions():
    spec = {
        "ingress": [{"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}],
        "egress": [{"ports": [{"port": "dns"}]}],
    }
    out = apply_defaults(policy("y", "p", spec))["spec"]
    assert [p["protocol"] for p in out["ingress"][0]["ports"]] == ["TCP", "UDP"]
    assert out["egress"][0]["ports"][0]["protocol"] == "TCP"


def test_defaulting_does_not_modify_input():
    raw = policy("y", "p", {"ingress": [{"ports": [{"port": 80}]}]})
    apply_defaults(raw)
    assert "policyTypes" not in raw["spec"]
    assert "protocol" not in raw["spec"]["ingress"][0]["ports"][0]


def test_namespace_gets_its_name_label():
    out = apply_defaults(namespace("team-a", purpose="x"))
    assert out["metadata"]["labels"] == {"purpose": "x", "kubernetes.io/metadata.name": "team-a"}
    assert parse_object(namespace("q")).labels == {"kubernetes.io/metadata.name": "q"}


def test_name_label_overrides_a_user_value():
    out = apply_defaults(namespace("team-a", **{"kubernetes.io/metadata.name": "other"}))
    assert out["metadata"]["labels"]["kubernetes.io/metadata.name"] == "team-a"


def test_container_port_protocol_defaults_to_tcp():
    raw = pod("y", "p", "198.18.1.1", ports=[{"containerPort": 80, "name": "http"}])
    out = apply_defaults(raw)
    assert out["spec"]["containers"][0]["ports"][0]["protocol"] == "TCP"
    assert parse_object(raw).named_ports("http", "TCP") == (80,)


def test_defaulting_leaves_malformed_shapes_for_validation():
    weird = policy("y", "p", {"ingress": "all", "egress": [None, {"ports": 7}]})
    assert apply_defaults(weird)["spec"]["ingress"] == "all"


def test_parsed_policy_reflects_defaults():
    parsed = parse_object(policy("y", "p", {"egress": [{"ports": [{"port": 53}]}]}))
    assert parsed.policy_types == ("Ingress", "Egress")
    assert parsed.egress[0].ports[0].protocol == "TCP"
    assert parsed.pod_selector.is_empty
