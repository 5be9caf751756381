"""Services and EndpointSlices from API dicts: what the model reads (defaults as the API
server applies them, null lists), what it refuses (naming object and field), and how
the agent reads one it refuses (fail closed: more transit endpoints, never fewer)."""

from __future__ import annotations

import copy
from ipaddress import ip_address
from typing import Any

import pytest

from agent.loop.snapshot import Snapshotter
from agent.model.errors import InvalidObjectError
from agent.model.objects import EndpointPort, EndpointSlice, Service, ServicePort, SliceEndpoint
from agent.model.parse import parse_object
from tests.support.builders import endpoint, endpoint_slice, service


def svc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec}


def eps(**fields: Any) -> dict[str, Any]:
    obj = endpoint_slice("default", "s-1", "s", None)
    obj.update(fields)
    return obj


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        pytest.param({}, Service("default", "s"), id="clusterip-by-default"),
        pytest.param(
            {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]},
            Service(
                "default",
                "s",
                "NodePort",
                ports=(ServicePort(80, "TCP", None, None, 30080),),
                external_traffic_policy="Cluster",
            ),
            id="nodeport-defaults-cluster-and-tcp",
        ),
        pytest.param(
            {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
            Service("default", "s", "LoadBalancer", external_traffic_policy="Local"),
            id="loadbalancer-local",
        ),
        pytest.param(
            {"externalIPs": ["198.19.100.1"]},
            Service(
                "default",
                "s",
                external_traffic_policy="Cluster",
                external_ips=(ip_address("198.19.100.1"),),
            ),
            id="clusterip-with-external-ips-is-reachable",
        ),
        pytest.param(
            {"externalTrafficPolicy": "Local"},
            Service("default", "s"),
            id="traffic-policy-means-nothing-on-clusterip",
        ),
        pytest.param(
            {"clusterIP": "None", "clusterIPs": ["None"], "selector": {}},
            Service("default", "s", headless=True),
            id="headless-and-empty-selector",
        ),
        pytest.param(
            {"clusterIP": "198.19.0.10", "clusterIPs": ["198.19.0.10", "2001:2::a"]},
            Service(
                "default", "s", cluster_ips=(ip_address("198.19.0.10"), ip_address("2001:2::a"))
            ),
            id="dual-stack",
        ),
        pytest.param(
            {"ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}]},
            Service("default", "s", ports=(ServicePort(53, "UDP", "dns", "dns"),)),
            id="named-target-port",
        ),
        pytest.param(
            {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "web"}},
            Service(
                "default", "s", ports=(ServicePort(80, "TCP", None, 8080),), selector={"app": "web"}
            ),
            id="numeric-target-port",
        ),
        pytest.param({"ports": None}, Service("default", "s"), id="null-ports"),
        pytest.param(
            {"type": "ExternalName", "externalName": "db.example"},
            Service("default", "s", "ExternalName"),
            id="external-name",
        ),
    ],
)
def test_service_reads(spec, want):
    got = parse_object(svc(**spec))
    assert got == want
    assert got.selector == want.selector  # not in ==: hash=False fields still compare


@pytest.mark.parametrize(
    ("spec", "path", "text"),
    [
        ({"type": "Nodeport"}, "spec.type", "Unsupported value"),
        (
            {"type": "NodePort", "externalTrafficPolicy": "Global"},
            "spec.externalTrafficPolicy",
            "Unsupported value",
        ),
        ({"ports": [{"name": "x"}]}, "spec.ports[0].port", "Required value"),
        ({"ports": [{"port": 70000}]}, "spec.ports[0].port", "between 1 and 65535"),
        (
            {"ports": [{"port": 80, "protocol": "tcp"}]},
            "spec.ports[0].protocol",
            "Unsupported value",
        ),
        (
            {"ports": [{"port": 80, "targetPort": [80]}]},
            "spec.ports[0].targetPort",
            "integer or a string",
        ),
        ({"ports": "80"}, "spec.ports", "must be a list"),
        ({"clusterIP": "10.0.0.300"}, "spec.clusterIP", "valid IP address"),
        ({"externalIPs": ["nope"]}, "spec.externalIPs[0]", "valid IP address"),
    ],
)
def test_service_refusals_name_object_and_field(spec, path, text):
    with pytest.raises(InvalidObjectError) as info:
        parse_object(svc(**spec))
    assert str(info.value).startswith("Service default/s is invalid: ")
    assert [e.path for e in info.value.errors] == [path]
    assert text in str(info.value)


def test_service_lenient_where_the_api_server_validated():
    """What the API would have refused but reads plainly is kept (a long port name)."""
    got = parse_object(svc(ports=[{"name": "a-very-long-port-name", "port": 80}]))
    assert got.ports == (ServicePort(80, "TCP", "a-very-long-port-name"),)


@pytest.mark.parametrize(
    ("fields", "want"),
    [
        pytest.param({}, EndpointSlice("default", "s-1", "s"), id="null-endpoints-and-ports"),
        pytest.param(
            {"endpoints": [endpoint("198.18.1.1", "y/a", ready=None, node_name="node-1")]},
            EndpointSlice(
                "default",
                "s-1",
                "s",
                endpoints=(
                    SliceEndpoint((ip_address("198.18.1.1"),), None, None, None, "node-1", "y/a"),
                ),
            ),
            id="no-conditions-means-ready",
        ),
        pytest.param(
            {"endpoints": [endpoint("198.18.1.1", ready=False, serving=True)]},
            EndpointSlice(
                "default",
                "s-1",
                "s",
                endpoints=(SliceEndpoint((ip_address("198.18.1.1"),), False, True),),
            ),
            id="terminating-serving",
        ),
        pytest.param(
            {
                "endpoints": [
                    {"addresses": ["198.18.1.1"], "targetRef": {"kind": "Pod", "name": "a"}}
                ]
            },
            EndpointSlice(
                "default",
                "s-1",
                "s",
                endpoints=(SliceEndpoint((ip_address("198.18.1.1"),), target_pod="default/a"),),
            ),
            id="target-ref-in-the-slice-namespace",
        ),
        pytest.param(
            {
                "endpoints": [
                    {"addresses": ["198.18.1.1"], "targetRef": {"kind": "Node", "name": "n"}}
                ]
            },
            EndpointSlice(
                "default", "s-1", "s", endpoints=(SliceEndpoint((ip_address("198.18.1.1"),)),)
            ),
            id="target-ref-not-a-pod",
        ),
        pytest.param(
            {"addressType": "FQDN", "endpoints": [{"addresses": ["db.example"]}]},
            EndpointSlice("default", "s-1", "s", "FQDN", endpoints=(SliceEndpoint(),)),
            id="fqdn-has-no-addresses",
        ),
        pytest.param(
            {"ports": [{"name": "http", "port": 8080}, {"protocol": "UDP"}]},
            EndpointSlice(
                "default",
                "s-1",
                "s",
                ports=(EndpointPort(8080, "TCP", "http"), EndpointPort(None, "UDP")),
            ),
            id="ports-default-tcp-and-null-port",
        ),
        pytest.param(
            {"metadata": {"name": "s-1", "namespace": "y"}},
            EndpointSlice("y", "s-1"),
            id="no-service-name-label",
        ),
    ],
)
def test_endpoint_slice_reads(fields, want):
    assert parse_object(eps(**fields)) == want


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"addressType": None}, "addressType"),
        ({"addressType": "IPv5"}, "addressType"),
        ({"endpoints": [{"addresses": ["nope"]}]}, "endpoints[0].addresses[0]"),
        ({"endpoints": [{}]}, "endpoints[0].addresses"),
        (
            {"endpoints": [{"addresses": ["198.18.1.1"], "conditions": {"ready": "yes"}}]},
            "endpoints[0].conditions.ready",
        ),
        ({"endpoints": "all"}, "endpoints"),
        ({"ports": [{"port": "80"}]}, "ports[0].port"),
    ],
)
def test_endpoint_slice_refusals_name_object_and_field(fields, path):
    with pytest.raises(InvalidObjectError) as info:
        parse_object(eps(**fields))
    assert str(info.value).startswith("EndpointSlice default/s-1 is invalid: ")
    assert [e.path for e in info.value.errors] == [path]


def raw(obj: dict[str, Any], version: str = "1") -> dict[str, Any]:
    """As an informer holds it: no kind or apiVersion, a resourceVersion."""
    found = copy.deepcopy({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
    found["metadata"]["resourceVersion"] = version
    return found


def test_a_refused_service_is_read_as_balanced_across_nodes(caplog):
    bad = service("y", "web", "ClusterIP")
    bad["spec"]["type"] = "Nodeport"
    snapshots = Snapshotter()
    got = snapshots.parse("Service", raw(bad))
    assert got == Service("y", "web", "NodePort", external_traffic_policy="Cluster")
    assert snapshots.invalid == {"Service": 1}
    assert "Service y/web is invalid: spec.type: Unsupported value" in caplog.text


def test_a_refused_endpoint_slice_keeps_what_it_can_read_as_ready():
    bad = endpoint_slice(
        "y",
        "web-1",
        "web",
        [
            endpoint("198.18.1.1", "y/a", ready=False),
            {"addresses": ["nope", "198.18.1.2"], "conditions": {"ready": "no"}},
        ],
    )
    snapshots = Snapshotter()
    got = snapshots.parse("EndpointSlice", raw(bad))
    assert got == EndpointSlice(
        "y",
        "web-1",
        "web",
        endpoints=(
            SliceEndpoint((ip_address("198.18.1.1"),), True, target_pod="y/a"),
            SliceEndpoint((ip_address("198.18.1.2"),), True),
        ),
    )
    assert snapshots.invalid == {"EndpointSlice": 1}


def test_informer_objects_parse_at_their_api_version():
    snapshots = Snapshotter()
    assert snapshots.parse("EndpointSlice", raw(eps())) == EndpointSlice("default", "s-1", "s")
    assert snapshots.parse("Service", raw(svc())) == Service("default", "s")
    assert snapshots.invalid == {}
