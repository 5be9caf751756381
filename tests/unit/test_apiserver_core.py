"""The lab API server's verbs on its store, without the network: what clients can
observe of creates, updates, patches, deletes, watches and discovery."""

from __future__ import annotations

import asyncio
import json

import pytest

from lab.apiserver import status as st
from lab.apiserver.deployments import DeploymentController
from lab.apiserver.handlers import STRATEGIC, Api
from lab.apiserver.resources import BY_PATH, api_resource_list
from lab.apiserver.routing import Discovery, Target, parse_path
from lab.apiserver.store import ADDED, DELETED, MODIFIED, Event, Store
from lab.apiserver.watch import translate

PODS = BY_PATH[("", "v1", "pods")]
NAMESPACES = BY_PATH[("", "v1", "namespaces")]
POLICIES = BY_PATH[("networking.k8s.io", "v1", "networkpolicies")]
DEPLOYMENTS = BY_PATH[("apps", "v1", "deployments")]


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("/api/v1/pods", Target(PODS, None, None, None)),
        ("/api/v1/namespaces/x/pods", Target(PODS, "x", None, None)),
        ("/api/v1/namespaces/x/pods/a", Target(PODS, "x", "a", None)),
        ("/api/v1/namespaces/x/pods/a/status", Target(PODS, "x", "a", "status")),
        ("/api/v1/namespaces/x", Target(NAMESPACES, None, "x", None)),
        ("/api/v1/namespaces/x/status", Target(NAMESPACES, None, "x", "status")),
        (
            "/apis/networking.k8s.io/v1/namespaces/y/networkpolicies/p",
            Target(POLICIES, "y", "p", None),
        ),
        ("/api/v1/watch/namespaces/x/pods", Target(PODS, "x", None, None, legacy_watch=True)),
        ("/api", Discovery(None, None, "api")),
        ("/apis", Discovery(None, None, "apis")),
        ("/apis/apps", Discovery("apps", None, "apis")),
        ("/apis/apps/v1", Discovery("apps", "v1", "apis")),
    ],
)
def test_paths(path, want):
    assert parse_path(path) == want


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/widgets",
        "/api/v1/namespaces/x/pods/a/exec",
        "/api/v1/pods/a",
        "/metrics",
        "/api/v1/namespaces/x/pods/a/b/c",
    ],
)
def test_unknown_paths_are_404(path):
    with pytest.raises(st.ApiError) as info:
        parse_path(path)
    assert info.value.code == 404


def api_with_namespace(*names: str) -> Api:
    api = Api(Store(window=50))
    for name in names:
        api.create(Target(NAMESPACES, None, None, None), {"metadata": {"name": name}})
    return api


def new_pod(api: Api, name: str, **spec: object) -> dict:
    body = {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "i"}], **spec},
        "status": {"podIP": "10.0.0.1", "phase": "Running"},
    }
    return api.create(Target(PODS, "x", None, None), body)


def test_create_stamps_identity_and_resets_pod_status():
    api = api_with_namespace("x")
    pod = new_pod(api, "a")
    meta = pod["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and int(meta["resourceVersion"]) > 0
    assert pod["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    assert (pod["kind"], pod["apiVersion"], meta["namespace"]) == ("Pod", "v1", "x")


def test_create_errors():
    api = api_with_namespace("x")
    new_pod(api, "a")
    cases = [
        (lambda: new_pod(api, "a"), 409, "AlreadyExists"),
        (
            lambda: api.create(Target(PODS, "nope", None, None), {"metadata": {"name": "b"}}),
            422,
            "Invalid",
        ),
        (
            lambda: api.create(
                Target(PODS, "x", None, None), {"kind": "Service", "metadata": {"name": "b"}}
            ),
            400,
            "BadRequest",
        ),
        (lambda: api.get(Target(PODS, "x", "zz", None)), 404, "NotFound"),
    ]
    for call, code, reason in cases:
        with pytest.raises(st.ApiError) as info:
            call()
        assert (info.value.code, info.value.reason) == (code, reason)


def test_namespace_must_exist():
    api = api_with_namespace("x")
    body = {"metadata": {"name": "b"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    with pytest.raises(st.ApiError) as info:
        api.create(Target(PODS, "nope", None, None), body)
    assert info.value.code == 404 and info.value.message == 'namespaces "nope" not found'


def test_generate_name():
    api = api_with_namespace("x")
    body = {
        "metadata": {"generateName": "web-"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    name = api.create(Target(PODS, "x", None, None), body)["metadata"]["name"]
    assert name.startswith("web-") and len(name) == 9


def test_update_conflict_and_noop():
    api = api_with_namespace("x")
    pod = new_pod(api, "a")
    target = Target(PODS, "x", "a", None)
    same = api.update(target, pod)
    assert same["metadata"]["resourceVersion"] == pod["metadata"]["resourceVersion"]
    changed = json.loads(json.dumps(pod))
    changed["metadata"]["labels"] = {"k": "v"}
    newer = api.update(target, changed)
    assert int(newer["metadata"]["resourceVersion"]) > int(pod["metadata"]["resourceVersion"])
    with pytest.raises(st.ApiError) as info:
        api.update(target, changed)  # still carries the old resourceVersion
    assert (info.value.code, info.value.reason) == (409, "Conflict")


def test_status_subresource_changes_only_status():
    api = api_with_namespace("x")
    new_pod(api, "a")
    body = {"metadata": {"labels": {"sneaky": "1"}}, "status": {"phase": "Running"}}
    raw = json.dumps(body).encode()
    got = api.patch(Target(PODS, "x", "a", "status"), raw, STRATEGIC)
    assert got["status"]["phase"] == "Running"
    assert "sneaky" not in (got["metadata"].get("labels") or {})
    main = api.patch(
        Target(PODS, "x", "a", None),
        json.dumps({"status": {"phase": "Failed"}}).encode(),
        STRATEGIC,
    )
    assert main["status"]["phase"] == "Running"


def test_pod_spec_is_immutable_but_image():
    api = api_with_namespace("x")
    new_pod(api, "a")
    target = Target(PODS, "x", "a", None)
    ok = api.patch(target, b'{"spec":{"containers":[{"name":"c","image":"i2"}]}}', STRATEGIC)
    assert ok["spec"]["containers"][0]["image"] == "i2"
    with pytest.raises(st.ApiError) as info:
        api.patch(target, b'{"spec":{"hostNetwork":true}}', STRATEGIC)
    assert info.value.code == 422 and "pod updates may not change" in info.value.message


def test_binding_sets_node_once():
    api = api_with_namespace("x")
    new_pod(api, "a")
    target = Target(PODS, "x", "a", "binding")
    api.bind(target, {"target": {"kind": "Node", "name": "node-1"}})
    assert api.get(Target(PODS, "x", "a", None))["spec"]["nodeName"] == "node-1"
    with pytest.raises(st.ApiError) as info:
        api.bind(target, {"target": {"kind": "Node", "name": "node-2"}})
    assert info.value.code == 409


def test_deleting_a_namespace_deletes_its_objects():
    api = api_with_namespace("x", "y")
    new_pod(api, "a")
    api.delete(Target(NAMESPACES, None, "x", None))
    assert list(api.store.items(PODS.key)) == []
    assert [n["metadata"]["name"] for n in api.store.items(NAMESPACES.key)] == ["y"]


def test_compaction_makes_old_versions_unavailable():
    store = Store(window=3, first_rv=100)
    assert store.events_since(100) == []
    for i in range(5):
        store.create("pods", "x", {"metadata": {"name": f"p{i}"}})
    assert store.events_since(100) is None
    assert [e.rv for e in store.events_since(102)] == [103, 104, 105]
    assert store.events_since(101) is None


def ev(kind: str, new: dict, old: dict | None) -> Event:
    return Event(
        7,
        kind,
        "pods",
        "x",
        {"metadata": {"labels": new}},
        ({"metadata": {"labels": old}} if old is not None else None),
    )


def web(obj: dict) -> bool:
    return obj["metadata"]["labels"].get("app") == "web"


@pytest.mark.parametrize(
    ("event", "want"),
    [
        (ev(ADDED, {"app": "web"}, None), ADDED),
        (ev(ADDED, {"app": "db"}, None), None),
        (ev(MODIFIED, {"app": "web"}, {"app": "web"}), MODIFIED),
        (ev(MODIFIED, {"app": "web"}, {"app": "db"}), ADDED),
        (ev(MODIFIED, {"app": "db"}, {"app": "web"}), DELETED),
        (ev(MODIFIED, {"app": "db"}, {"app": "db"}), None),
        (ev(DELETED, {"app": "web"}, {"app": "web"}), DELETED),
        (ev(DELETED, {"app": "db"}, {"app": "db"}), None),
    ],
)
def test_filtered_watch_translation(event, want):
    found = translate(event, "pods", None, web)
    assert (found[0] if found else None) == want


def test_other_namespace_or_resource_is_not_seen():
    event = ev(ADDED, {"app": "web"}, None)
    assert translate(event, "pods", "y", web) is None
    assert translate(event, "services", None, web) is None


def test_discovery_lists_subresources():
    doc = api_resource_list("", "v1")
    names = {r["name"] for r in doc["resources"]}
    assert {"pods", "pods/status", "pods/binding", "namespaces", "nodes"} <= names
    pods = next(r for r in doc["resources"] if r["name"] == "pods")
    assert pods["namespaced"] and "watch" in pods["verbs"] and pods["shortNames"] == ["po"]
    assert api_resource_list("apps", "v1")["groupVersion"] == "apps/v1"
    assert api_resource_list("nope", "v1") is None


def deployment(replicas: int, image: str = "i") -> dict:
    return {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
        },
    }


def test_deployment_controller_keeps_replicas():
    async def scenario() -> list[list[str]]:
        api = api_with_namespace("x")
        DeploymentController(api).start()
        seen = []
        api.create(Target(DEPLOYMENTS, "x", None, None), deployment(3))
        await asyncio.sleep(0.05)
        seen.append(sorted(p["metadata"]["name"] for p in api.store.items(PODS.key)))
        current = api.get(Target(DEPLOYMENTS, "x", "web", None))
        api.update(Target(DEPLOYMENTS, "x", "web", None), {**current, **deployment(2, "i2")})
        await asyncio.sleep(0.05)
        pods = list(api.store.items(PODS.key))
        seen.append([p["spec"]["containers"][0]["image"] for p in pods])
        api.delete(Target(DEPLOYMENTS, "x", "web", None))
        await asyncio.sleep(0.05)
        seen.append([p["metadata"]["name"] for p in api.store.items(PODS.key)])
        return seen

    created, images, after_delete = asyncio.run(scenario())
    assert len(created) == 3 and all(n.startswith("web-") for n in created)
    assert images == ["i2", "i2"]
    assert after_delete == []


def test_invalid_deployment_is_422():
    api = api_with_namespace("x")
    bad = deployment(1)
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(st.ApiError) as info:
        api.create(Target(DEPLOYMENTS, "x", None, None), bad)
    assert info.value.code == 422 and "`selector` does not match template `labels`" in (
        info.value.message
    )


def test_a_deleted_namespace_terminates_before_it_goes():
    pending = []
    api = Api(Store(), defer=pending.append)
    api.create(Target(NAMESPACES, None, None, None), {"metadata": {"name": "x"}})
    new_pod(api, "a")
    gone = api.delete(Target(NAMESPACES, None, "x", None))
    assert gone["status"]["phase"] == "Terminating" and gone["metadata"]["deletionTimestamp"]
    assert api.get(Target(PODS, "x", "a", None))  # still readable, still deletable
    with pytest.raises(st.ApiError) as info:
        new_pod(api, "b")
    assert info.value.code == 403 and "being terminated" in info.value.message
    (finalize,) = pending
    finalize()
    assert list(api.store.items(PODS.key)) == [] and list(api.store.items(NAMESPACES.key)) == []


@pytest.mark.parametrize("name", ["default", "kube-system", "kube-public"])
def test_system_namespaces_cannot_be_deleted(name):
    api = api_with_namespace(name)
    with pytest.raises(st.ApiError) as info:
        api.delete(Target(NAMESPACES, None, name, None))
    assert info.value.code == 403 and "may not be deleted" in info.value.message
