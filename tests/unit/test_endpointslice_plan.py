"""The EndpointSlices of a Service, computed from the Service and its pods as the upstream
controller computes them, and the controller that keeps them in the lab API server."""

from __future__ import annotations

import copy
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from lab.apiserver.endpointslice_content import (
    CONTROLLER_NAME,
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    endpoint_ports,
)
from lab.apiserver.endpointslice_controller import SLICES, EndpointSliceController
from lab.apiserver.endpointslice_plan import SlicePlan, plan_slices
from lab.apiserver.handlers import PODS, Api
from lab.apiserver.resources import BY_PATH
from lab.apiserver.routing import Target
from lab.apiserver.store import Store

NAMESPACES = BY_PATH[("", "v1", "namespaces")]
SERVICES = BY_PATH[("", "v1", "services")]


def svc(ports=None, selector=None, **spec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "x", "uid": "svc-uid", "labels": {"team": "a"}},
        "spec": {
            "selector": {"app": "web"} if selector is None else selector,
            "ports": ports or [{"name": "", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            "clusterIP": "198.19.241.1",
            "ipFamilies": ["IPv4"],
            **spec,
        },
    }


def pod(name, ip="198.18.1.2", ready=True, labels=None, ports=(), **extra) -> dict:
    status = {
        "phase": extra.pop("phase", "Running"),
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip:
        status.update(podIP=ip, podIPs=[{"ip": ip}])
    meta = {
        "name": name,
        "namespace": "x",
        "uid": f"uid-{name}",
        "labels": labels or {"app": "web"},
    }
    meta.update(extra.pop("meta", {}))
    return {
        "metadata": meta,
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": "c", "image": "i", "ports": list(ports)}],
            **extra,
        },
        "status": status,
    }


class Slices:
    """Slices as the API server would hold them, applying plans the way the controller
    does (a create gets a generated name)."""

    def __init__(self) -> None:
        self.by_name: dict[str, dict] = {}
        self.names = (f"web-{i:05d}" for i in itertools.count())

    def apply(self, plan: SlicePlan) -> None:
        for body in plan.create:
            body = copy.deepcopy(body)
            body["metadata"]["name"] = next(self.names)
            self.by_name[body["metadata"]["name"]] = body
        for body in plan.update:
            self.by_name[body["metadata"]["name"]] = copy.deepcopy(body)
        for body in plan.delete:
            del self.by_name[body["metadata"]["name"]]

    def sync(self, service: dict, pods: list[dict]) -> SlicePlan:
        plan = plan_slices(service, pods, list(self.by_name.values()))
        self.apply(plan)
        return plan

    def summary(self) -> list[tuple]:
        """(ports, [(address, ready, serving, terminating)]) per slice, sorted."""
        out = []
        for s in self.by_name.values():
            ports = tuple((p["name"], p["port"], p["protocol"]) for p in s["ports"] or [])
            eps = sorted(
                (
                    e["addresses"][0],
                    *(e["conditions"][k] for k in ("ready", "serving", "terminating")),
                )
                for e in s["endpoints"] or []
            )
            out.append((ports, eps))
        return sorted(out)


def test_a_slice_holds_the_ready_and_the_unready_pods():
    slices = Slices()
    slices.sync(svc(), [pod("a", "198.18.1.2"), pod("b", "198.18.1.3", ready=False)])
    assert slices.summary() == [
        (
            (("", 8080, "TCP"),),
            [("198.18.1.2", True, True, False), ("198.18.1.3", False, False, False)],
        )
    ]
    (only,) = slices.by_name.values()
    assert only["addressType"] == "IPv4"
    assert only["metadata"]["generateName"] == "web-"
    assert only["metadata"]["labels"] == {
        "team": "a",
        SERVICE_NAME_LABEL: "web",
        MANAGED_BY_LABEL: CONTROLLER_NAME,
    }
    assert only["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "name": "web",
            "uid": "svc-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert only["endpoints"][0]["targetRef"] == {
        "kind": "Pod",
        "namespace": "x",
        "name": "a",
        "uid": "uid-a",
    }
    assert only["endpoints"][0]["nodeName"] == "node-1"


@pytest.mark.parametrize(
    ("pods", "want"),
    [
        ([], []),  # no endpoints: one empty placeholder
        ([pod("a", ip=None)], []),  # no address yet
        ([pod("a", phase="Succeeded")], []),  # finished
        ([pod("a", labels={"app": "db"})], []),  # not selected
        (
            [pod("a", meta={"deletionTimestamp": "2026-01-01T00:00:00Z"})],
            [("198.18.1.2", False, True, True)],  # terminating: serving, not ready
        ),
    ],
)
def test_who_is_an_endpoint(pods, want):
    slices = Slices()
    slices.sync(svc(), pods)
    (only,) = slices.summary()
    assert only[1] == want


def test_publish_not_ready_addresses_makes_every_endpoint_ready():
    slices = Slices()
    slices.sync(svc(publishNotReadyAddresses=True), [pod("a", ready=False)])
    assert slices.summary()[0][1] == [("198.18.1.2", True, False, False)]


NAMED = [{"name": "web", "port": 80, "protocol": "TCP", "targetPort": "http"}]


def test_a_named_target_port_resolves_per_pod_and_splits_slices():
    pods = [
        pod("a", "198.18.1.2", ports=[{"name": "http", "containerPort": 8080}]),
        pod("b", "198.18.1.3", ports=[{"name": "http", "containerPort": 9090}]),
        pod("c", "198.18.1.4", ports=[{"name": "http", "containerPort": 8080}]),
        # The name on another protocol does not count; a pod without it has no such port.
        pod("d", "198.18.1.5", ports=[{"name": "http", "containerPort": 80, "protocol": "UDP"}]),
    ]
    slices = Slices()
    slices.sync(svc(ports=NAMED), pods)
    assert [(ports, [e[0] for e in eps]) for ports, eps in slices.summary()] == [
        ((), ["198.18.1.5"]),
        ((("web", 8080, "TCP"),), ["198.18.1.2", "198.18.1.4"]),
        ((("web", 9090, "TCP"),), ["198.18.1.3"]),
    ]


def test_empty_lists_are_stored_as_null():
    slices = Slices()
    slices.sync(svc(ports=NAMED), [pod("a")])
    (only,) = slices.by_name.values()
    assert only["ports"] is None and only["endpoints"][0]["addresses"] == ["198.18.1.2"]
    slices = Slices()
    slices.sync(svc(), [])
    (placeholder,) = slices.by_name.values()
    assert placeholder["ports"] is None and placeholder["endpoints"] is None


def test_ports_keep_the_service_order_and_app_protocol():
    ports = [
        {"name": "b", "port": 81, "protocol": "UDP", "targetPort": 81, "appProtocol": "dns"},
        {"name": "a", "port": 80, "protocol": "TCP", "targetPort": 8080},
    ]
    assert endpoint_ports(svc(ports=ports), pod("a")) == [
        {"name": "b", "port": 81, "protocol": "UDP", "appProtocol": "dns"},
        {"name": "a", "port": 8080, "protocol": "TCP"},
    ]


def test_a_sidecar_serves_named_ports_too():
    sidecar = pod("a")
    sidecar["spec"]["initContainers"] = [
        {"name": "s", "restartPolicy": "Always", "ports": [{"name": "http", "containerPort": 7}]}
    ]
    assert endpoint_ports(svc(ports=NAMED), sidecar)[0]["port"] == 7


def test_at_most_100_endpoints_a_slice():
    pods = [pod(f"p{i:03d}", f"198.18.{1 + i // 200}.{1 + i % 200}") for i in range(250)]
    slices = Slices()
    slices.sync(svc(), pods)
    assert sorted(len(eps) for _, eps in slices.summary()) == [50, 100, 100]


def test_a_change_touches_only_the_slice_it_is_in():
    pods = [pod(f"p{i:03d}", f"198.18.1.{i + 1}") for i in range(150)]
    slices = Slices()
    slices.sync(svc(), pods)
    before = copy.deepcopy(slices.by_name)
    pods[120]["status"]["conditions"][0]["status"] = "False"
    plan = slices.sync(svc(), pods)
    assert (len(plan.create), len(plan.update), len(plan.delete)) == (0, 1, 0)
    changed = [n for n in before if before[n] != slices.by_name[n]]
    assert len(changed) == 1


def test_an_unchanged_state_plans_nothing():
    pods = [pod("a"), pod("b", "198.18.1.3")]
    slices = Slices()
    slices.sync(svc(), pods)
    assert not slices.sync(svc(), pods)
    slices.sync(svc(), [])
    assert not slices.sync(svc(), [])  # the placeholder stays


def test_the_last_endpoint_leaving_reuses_its_slice_as_placeholder():
    slices = Slices()
    slices.sync(svc(), [pod("a")])
    (name,) = slices.by_name
    plan = slices.sync(svc(), [])
    assert not plan.create and not plan.delete
    assert list(slices.by_name) == [name] and slices.summary() == [((), [])]


def test_service_labels_follow_and_headless_is_marked():
    slices = Slices()
    slices.sync(svc(), [pod("a")])
    relabelled = svc(clusterIP="None")
    relabelled["metadata"]["labels"] = {"team": "b"}
    slices.sync(relabelled, [pod("a")])
    (only,) = slices.by_name.values()
    assert only["metadata"]["labels"]["team"] == "b"
    assert only["metadata"]["labels"]["service.kubernetes.io/headless"] == ""


def test_a_service_without_selector_keeps_no_managed_slices():
    slices = Slices()
    slices.sync(svc(), [pod("a")])
    plan = slices.sync(svc(selector={}), [pod("a")])
    assert len(plan.delete) == 1 and slices.by_name == {}


def test_slices_of_another_owner_are_replaced_not_reused():
    stale = plan_slices(svc(), [pod("a")], []).create[0]
    stale["metadata"]["name"] = "web-old"
    stale["metadata"]["ownerReferences"][0]["uid"] = "an-older-service"
    plan = plan_slices(svc(), [pod("a")], [stale])
    # A slice of an older Service of the same name is the garbage collector's; it is
    # never taken over.
    assert [s["metadata"]["name"] for s in plan.delete] == ["web-old"]
    assert len(plan.create) == 1 and not plan.update


def test_a_create_meeting_a_delete_becomes_an_update():
    slices = Slices()
    slices.sync(svc(), [pod("a", ports=[{"name": "http", "containerPort": 8080}])])
    (name,) = slices.by_name
    # Same pod, other port: its old slice would go and a new one come.
    plan = slices.sync(
        svc(ports=NAMED), [pod("a", ports=[{"name": "http", "containerPort": 9090}])]
    )
    assert not plan.create and not plan.delete
    assert list(slices.by_name) == [name]
    assert slices.summary() == [((("web", 9090, "TCP"),), [("198.18.1.2", True, True, False)])]


# Random pods, readiness, labels and named ports, changed step by step: after each
# sync every selected pod with an address is in exactly one slice, under the ports it
# serves, no slice holds more than 100, and a second sync changes nothing.
_pod = hs.fixed_dictionaries(
    {
        "selected": hs.booleans(),
        "ready": hs.booleans(),
        "has_ip": hs.booleans(),
        "port": hs.sampled_from([None, 8080, 9090]),
    }
)


def _pods(specs: list[dict]) -> list[dict]:
    out = []
    for i, s in enumerate(specs):
        ports = [{"name": "http", "containerPort": s["port"]}] if s["port"] else []
        labels = {"app": "web" if s["selected"] else "db"}
        ip = f"198.18.{1 + i // 250}.{1 + i % 250}" if s["has_ip"] else None
        out.append(pod(f"p{i:03d}", ip, s["ready"], labels, ports))
    return out


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.lists(_pod, max_size=230), min_size=1, max_size=4))
def test_slices_always_hold_exactly_the_endpoints(steps):
    slices = Slices()
    service = svc(ports=NAMED)
    for specs in steps:
        pods = _pods(specs)
        slices.sync(service, pods)
        assert not plan_slices(service, pods, list(slices.by_name.values()))
        want = {
            (p["status"]["podIP"], s["port"], s["ready"])
            for p, s in zip(pods, specs, strict=True)
            if s["selected"] and s["has_ip"]
        }
        got = []
        for body in slices.by_name.values():
            assert len(body["endpoints"] or []) <= 100
            port = (body["ports"] or [{}])[0].get("port")
            got += [
                (e["addresses"][0], port, e["conditions"]["ready"]) for e in body["endpoints"] or []
            ]
        assert sorted(got, key=str) == sorted(want, key=str)
        assert len(slices.by_name) >= 1


# The controller in the API server, driven step by step (its work queue is ours).
def controller_api() -> tuple[Api, list]:
    api = Api(Store())
    queue: list = []
    EndpointSliceController(api, defer=queue.append).start()
    api.create(Target(NAMESPACES, None, None, None), {"metadata": {"name": "x"}})
    return api, queue


def settle(queue: list) -> None:
    while queue:
        queue.pop(0)()


def slices_of(api: Api) -> list[dict]:
    return list(api.store.items(SLICES.key, "x"))


def put_pod(api: Api, body: dict) -> None:
    status = body.pop("status")
    created = api.create(Target(PODS, "x", None, None), body)
    api.update(Target(PODS, "x", body["metadata"]["name"], "status"), {**created, "status": status})


def test_the_controller_follows_pods_and_collects_slices():
    api, queue = controller_api()
    api.create(Target(SERVICES, "x", None, None), copy.deepcopy(svc()))
    settle(queue)
    assert [s["endpoints"] for s in slices_of(api)] == [None]
    for p in (pod("a"), pod("b", "198.18.1.3")):
        p["metadata"].pop("uid")
        put_pod(api, p)
    settle(queue)
    addresses = [e["addresses"][0] for s in slices_of(api) for e in s["endpoints"]]
    assert sorted(addresses) == ["198.18.1.2", "198.18.1.3"]
    relabelled = copy.deepcopy(api.get(Target(PODS, "x", "b", None)))
    relabelled["metadata"]["labels"] = {"app": "db"}
    api.update(Target(PODS, "x", "b", None), relabelled)
    settle(queue)
    assert [e["addresses"][0] for s in slices_of(api) for e in s["endpoints"]] == ["198.18.1.2"]
    api.delete(Target(SERVICES, "x", "web", None))
    settle(queue)
    assert slices_of(api) == []


def test_the_controller_leaves_slices_of_selectorless_services_alone():
    api, queue = controller_api()
    api.create(Target(SERVICES, "x", None, None), copy.deepcopy(svc(selector={})))
    user_slice = {
        "metadata": {"name": "web-manual", "labels": {SERVICE_NAME_LABEL: "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 80, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["198.19.200.7"]}],
    }
    api.create(Target(SLICES, "x", None, None), user_slice)
    put_pod(api, pod("a"))
    settle(queue)
    assert [s["metadata"]["name"] for s in slices_of(api)] == ["web-manual"]
    assert slices_of(api)[0]["endpoints"] == user_slice["endpoints"]


def test_the_controller_puts_back_a_managed_slice_someone_deleted():
    api, queue = controller_api()
    api.create(Target(SERVICES, "x", None, None), copy.deepcopy(svc()))
    put_pod(api, pod("a"))
    settle(queue)
    (first,) = slices_of(api)
    api.delete(Target(SLICES, "x", first["metadata"]["name"], None))
    settle(queue)
    (again,) = slices_of(api)
    assert again["endpoints"][0]["addresses"] == ["198.18.1.2"]
