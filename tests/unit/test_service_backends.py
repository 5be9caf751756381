"""Where a connection to a Service goes (agent/model/service_backends.py): the backend
pods and target ports kube-proxy may DNAT a Service port to, from the EndpointSlices
when there are any, else as the EndpointSlice controller would fill them; and the
oracle's verdict through a Service, which is the verdict to the backend."""

from __future__ import annotations

from typing import Any

import pytest

from agent.model.service_backends import (
    ServiceLookupError,
    service_backends,
    service_verdicts,
)
from tests.support.builders import (
    endpoint,
    endpoint_slice,
    model_cluster,
    pod,
    policy,
    state_of,
)


def svc(ports: list[dict[str, Any]], selector: dict | None = None, **spec: Any) -> dict:
    """Service y/web with these ports, on a ClusterIP of the lab's Service range."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "y"},
        "spec": {"clusterIP": "198.19.241.1", "ports": ports, **spec}
        | ({"selector": selector} if selector is not None else {}),
    }


def port(number: int, target: int | str | None = None, protocol: str = "TCP", name: str = ""):
    found: dict[str, Any] = {"port": number, "protocol": protocol}
    if target is not None:
        found["targetPort"] = target
    return found | ({"name": name} if name else {})


def backends(*objs: dict, number: int = 80, protocol: str = "TCP") -> list[tuple[str, int]]:
    state = state_of([*model_cluster(), *objs])
    return [(b.pod.ref, b.port) for b in service_backends(state, "y", "web", number, protocol)]


@pytest.mark.parametrize(
    ("service", "number", "protocol", "want"),
    [
        # The selector chooses pods of the Service's own namespace only.
        (svc([port(80, 81)], {"pod": "a"}), 80, "TCP", [("y/a", 81)]),
        (svc([port(80, 81)], {}), 80, "TCP", []),  # an empty selector is no selector
        (svc([port(80, 81)]), 80, "TCP", []),
        # targetPort unset: the Service port itself.
        (svc([port(81)], {"pod": "c"}), 81, "TCP", [("y/c", 81)]),
        # A named targetPort is the pod's container port of that name and protocol.
        (svc([port(8080, "serve-81-udp", "UDP")], {"pod": "b"}), 8080, "UDP", [("y/b", 81)]),
        (svc([port(8080, "serve-81-udp", "TCP")], {"pod": "b"}), 8080, "TCP", []),
    ],
)
def test_backends_from_the_selector_as_the_controller_would_fill_them(
    service, number, protocol, want
):
    assert backends(service, number=number, protocol=protocol) == want


def test_a_named_target_port_resolves_per_pod_and_skips_pods_without_it():
    other = pod("y", "d", "198.18.2.14", {"pod": "a"}, "node-2", [{"containerPort": 9000}])
    special = pod(
        "y", "e", "198.18.2.15", {"pod": "a"}, "node-2", [{"containerPort": 7, "name": "web"}]
    )
    service = svc([port(80, "web")], {"pod": "a"})
    assert backends(service, other, special) == [("y/e", 7)]


def test_pods_that_are_no_endpoints_are_no_backends():
    host = pod("y", "h", "198.18.0.1", {"pod": "a"}, host_network=True, ports=[])
    done = pod("y", "f", "198.18.1.99", {"pod": "a"}, phase="Succeeded")
    pending = pod("y", "p", None, {"pod": "a"})
    assert backends(svc([port(80)], {"pod": "a"}), host, done, pending) == [("y/a", 80)]


def test_slices_decide_where_there_are_any_as_kube_proxy_reads_them():
    ports = [{"name": "http", "port": 81, "protocol": "TCP"}]
    service = svc([port(80, 9999, name="http")], {"pod": "a"})
    ready = endpoint("198.18.2.13", "y/c")
    unready = endpoint("198.18.1.12", "y/b", ready=False)
    slices = endpoint_slice("y", "web-1", "web", [ready, unready], ports)
    assert backends(service, slices) == [("y/c", 81)]  # not y/a, the selector's pod


def test_a_slice_port_is_matched_by_name_and_protocol():
    udp_only = endpoint_slice(
        "y", "web-1", "web", [endpoint("198.18.2.13")], [{"port": 81, "protocol": "UDP"}]
    )
    other_name = endpoint_slice(
        "y", "web-2", "web", [endpoint("198.18.1.11")], [{"name": "x", "port": 81}]
    )
    assert backends(svc([port(80)]), udp_only, other_name) == []
    assert backends(svc([port(80, protocol="UDP")]), udp_only, number=80, protocol="UDP") == [
        ("y/c", 81)
    ]


@pytest.mark.parametrize(
    ("service", "number", "protocol", "message"),
    [
        (None, 80, "TCP", "no Service y/web"),
        (svc([port(80)], clusterIP="None"), 80, "TCP", "Service y/web is headless"),
        (svc([port(80)]), 80, "UDP", r"Service y/web has no port 80/UDP \(it has 80/TCP\)"),
        (svc([port(80), port(53, protocol="UDP")]), 81, "TCP", "it has 80/TCP, 53/UDP"),
    ],
)
def test_lookup_errors_name_the_service_and_why(service, number, protocol, message):
    with pytest.raises(ServiceLookupError, match=message):
        backends(*([service] if service else []), number=number, protocol=protocol)


def test_a_connection_through_a_service_is_judged_at_the_backend_and_its_target_port():
    # y/a admits x's pods on 81 only; the Service maps 80 -> 81 and 8080 -> 80.
    only_81 = policy(
        "y",
        "a-81",
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}],
                    "ports": [{"port": 81}],
                }
            ],
        },
    )
    state = state_of([*model_cluster(), svc([port(80, 81), port(8080, 80)], {"pod": "a"}), only_81])
    through = {n: service_verdicts(state, "x/b", "y", "web", n, "TCP") for n in (80, 8080)}
    assert {n: {r: v.allowed for r, v in got.items()} for n, got in through.items()} == {
        80: {"y/a": True},
        8080: {"y/a": False},
    }
    assert through[80]["y/a"].port == 81
    # y/b is not in x: the policy's peer does not admit it on any port.
    assert not service_verdicts(state, "y/b", "y", "web", 80, "TCP")["y/a"].allowed
    # The backend reaching itself through its own Service (hairpin) is a pod reaching itself.
    assert service_verdicts(state, "y/a", "y", "web", 8080, "TCP")["y/a"].allowed
