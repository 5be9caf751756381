"""The lab API server's validation switch: strict validates as a real API server does
(through the model), off stores any well-formed object the model would refuse, and both
still check what every object needs (a name, label syntax, a Deployment's selector)."""

from __future__ import annotations

import pytest

from lab.apiserver import status as st
from lab.apiserver.handlers import Api
from lab.apiserver.resources import BY_PATH
from lab.apiserver.routing import Target
from lab.apiserver.store import Store

NAMESPACES = BY_PATH[("", "v1", "namespaces")]
PODS = BY_PATH[("", "v1", "pods")]
POLICIES = BY_PATH[("networking.k8s.io", "v1", "networkpolicies")]
DEPLOYMENTS = BY_PATH[("apps", "v1", "deployments")]

ODD_POLICY = {
    "metadata": {"name": "odd"},
    "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]}]},
}
ODD_DEPLOYMENT = {
    "metadata": {"name": "web"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 0}]}]},
        },
    },
}


def api(strict: bool) -> Api:
    out = Api(Store(window=50), strict=strict)
    out.create(Target(NAMESPACES, None, None, None), {"metadata": {"name": "x"}})
    return out


def create(server: Api, resource: object, body: dict) -> dict:
    return server.create(Target(resource, "x", None, None), body)


@pytest.mark.parametrize(
    ("resource", "body"), [(POLICIES, ODD_POLICY), (DEPLOYMENTS, ODD_DEPLOYMENT)]
)
def test_strict_refuses_what_the_model_refuses(resource, body):
    with pytest.raises(st.ApiError) as info:
        create(api(strict=True), resource, body)
    assert info.value.code == 422


def test_off_stores_a_policy_the_model_refuses_as_sent():
    server = api(strict=False)
    stored = create(server, POLICIES, ODD_POLICY)
    assert stored["spec"]["ingress"] == ODD_POLICY["spec"]["ingress"]
    assert server.get(Target(POLICIES, "x", "odd", None)) == stored


def test_off_stores_a_deployment_whose_template_the_model_refuses():
    server = api(strict=False)
    stored = create(server, DEPLOYMENTS, ODD_DEPLOYMENT)
    ports = stored["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert ports == [{"containerPort": 0, "protocol": "TCP"}]  # defaulted, not validated
    assert server.get(Target(DEPLOYMENTS, "x", "web", None)) == stored


def test_off_still_defaults_as_a_real_server():
    stored = create(api(strict=False), POLICIES, ODD_POLICY)
    assert stored["spec"]["policyTypes"] == ["Ingress"]


@pytest.mark.parametrize(
    "body",
    [
        {"metadata": {"name": "Not_A_Name"}, "spec": {"containers": []}},
        {"metadata": {"name": "a", "labels": {"bad key!": "v"}}, "spec": {}},
    ],
)
def test_off_still_checks_names_and_labels(body):
    with pytest.raises(st.ApiError) as info:
        create(api(strict=False), PODS, body)
    assert info.value.code == 422


def test_off_still_checks_a_deployments_selector():
    body = {**ODD_DEPLOYMENT, "spec": {**ODD_DEPLOYMENT["spec"], "selector": {}}}
    with pytest.raises(st.ApiError) as info:
        create(api(strict=False), DEPLOYMENTS, body)
    assert info.value.code == 422
