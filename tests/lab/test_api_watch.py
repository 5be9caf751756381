"""List and watch with the real `kubernetes` client against the lab API server:
resuming from a list's resourceVersion, bookmarks, 410 Gone then re-list, filtered
watches, selectors and the Status objects clients react to.

The server runs as its own process here, with a small event window (so that 410 is
reachable in a test) and short bookmark intervals; it is the binary `lab up` runs."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config, watch

from lab.tls import write_credentials
from tests.support.lab_cli import ROOT, Kubectl

WINDOW = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("apiserver")
    port = _free_port()
    kubeconfig = write_credentials(folder, f"https://127.0.0.1:{port}", ["127.0.0.1"])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lab.apiserver",
            "--bind-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--tls-cert",
            str(folder / "apiserver.crt"),
            "--tls-key",
            str(folder / "apiserver.key"),
            "--token-file",
            str(folder / "token"),
            "--event-window",
            str(WINDOW),
            "--bookmark-interval",
            "0.3",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    context = ssl.create_default_context(cafile=str(folder / "ca.crt"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=context, timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    try:
        yield kubeconfig
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.fixture(scope="module")
def api(server: Path) -> client.CoreV1Api:
    v1 = client.CoreV1Api(config.new_client_from_config(str(server)))
    v1.create_namespace({"metadata": {"name": "w"}})
    return v1


def pod(name: str, labels: dict[str, str] | None = None, node: str = "node-1") -> dict:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
    }


def list_rv(api: client.CoreV1Api, **kwargs: str) -> tuple[list[str], str]:
    doc = json.loads(api.list_namespaced_pod("w", _preload_content=False, **kwargs).data)
    return sorted(p["metadata"]["name"] for p in doc["items"]), doc["metadata"]["resourceVersion"]


def events(api: client.CoreV1Api, rv: str, seconds: int = 1, **kwargs: object) -> list[tuple]:
    stream = watch.Watch().stream(
        api.list_namespaced_pod, "w", resource_version=rv, timeout_seconds=seconds, **kwargs
    )
    return [
        (
            e["type"],
            e["raw_object"]["metadata"].get("name"),
            e["raw_object"]["metadata"]["resourceVersion"],
        )
        for e in stream
    ]


def test_watch_resumes_from_a_lists_resource_version(api):
    api.create_namespaced_pod("w", pod("p1"))
    names, rv = list_rv(api)
    assert names == ["p1"]
    api.create_namespaced_pod("w", pod("p2"))
    api.patch_namespaced_pod("p1", "w", {"metadata": {"labels": {"x": "y"}}})
    api.delete_namespaced_pod("p2", "w")
    seen = [(kind, name) for kind, name, _ in events(api, rv)]
    assert seen == [("ADDED", "p2"), ("MODIFIED", "p1"), ("DELETED", "p2")]


def test_resource_versions_increase(api):
    _, rv = list_rv(api)
    api.patch_namespaced_pod("p1", "w", {"metadata": {"labels": {"n": "1"}}})
    api.patch_namespaced_pod("p1", "w", {"metadata": {"labels": {"n": "2"}}})
    versions = [int(v) for _, _, v in events(api, rv)]
    assert versions == sorted(versions) and len(set(versions)) == 2
    assert all(v > int(rv) for v in versions)


def test_bookmarks_when_asked(api):
    _, rv = list_rv(api)
    found = events(api, rv, seconds=2, allow_watch_bookmarks=True)
    bookmarks = [e for e in found if e[0] == "BOOKMARK"]
    assert bookmarks, "an idle watch with allowWatchBookmarks gets bookmarks"
    assert all(int(v) >= int(rv) for _, _, v in bookmarks)
    assert not [e for e in events(api, rv, seconds=1) if e[0] == "BOOKMARK"]


def test_too_old_resource_version_is_410_then_relist_works(api):
    _, old = list_rv(api)
    for i in range(WINDOW + 5):
        api.patch_namespaced_pod("p1", "w", {"metadata": {"labels": {"n": str(i)}}})
    with pytest.raises(client.ApiException) as info:
        events(api, old)
    assert info.value.status == 410
    assert "Expired" in str(info.value.reason)
    names, fresh = list_rv(api)
    assert names == ["p1"]
    api.patch_namespaced_pod("p1", "w", {"metadata": {"labels": {"n": "after"}}})
    assert [e[0] for e in events(api, fresh)] == ["MODIFIED"]


def test_filtered_watch_sees_objects_enter_and_leave(api):
    api.create_namespaced_pod("w", pod("f1", {"app": "web"}))
    _, rv = list_rv(api)
    api.patch_namespaced_pod("f1", "w", {"metadata": {"labels": {"app": "db"}}})
    api.patch_namespaced_pod("f1", "w", {"metadata": {"labels": {"app": "web"}}})
    api.patch_namespaced_pod("p1", "w", {"metadata": {"labels": {"unrelated": "1"}}})
    seen = [(k, n) for k, n, _ in events(api, rv, label_selector="app=web")]
    assert seen == [("DELETED", "f1"), ("ADDED", "f1")]


def test_label_and_field_selectors(api):
    api.create_namespaced_pod("w", pod("s1", {"tier": "a"}, node="node-2"))
    api.create_namespaced_pod("w", pod("s2", {"tier": "b"}, node="node-2"))
    assert list_rv(api, label_selector="tier in (a,b)")[0] == ["s1", "s2"]
    assert list_rv(api, label_selector="tier,tier!=a")[0] == ["s2"]
    assert list_rv(api, field_selector="spec.nodeName=node-2")[0] == ["s1", "s2"]
    assert list_rv(api, field_selector="metadata.name=s1")[0] == ["s1"]
    assert list_rv(api, field_selector="spec.nodeName=node-2,metadata.name!=s1")[0] == ["s2"]
    with pytest.raises(client.ApiException) as info:
        list_rv(api, field_selector="spec.color=red")
    assert info.value.status == 400
    assert "field label not supported: spec.color" in info.value.body


def _status(exc: client.ApiException) -> dict:
    return json.loads(exc.body)


def test_status_objects(api):
    with pytest.raises(client.ApiException) as info:
        api.read_namespaced_pod("missing", "w")
    doc = _status(info.value)
    assert (info.value.status, doc["reason"], doc["kind"]) == (404, "NotFound", "Status")
    assert doc["message"] == 'pods "missing" not found'
    with pytest.raises(client.ApiException) as info:
        api.create_namespaced_pod("w", pod("p1"))
    assert (info.value.status, _status(info.value)["reason"]) == (409, "AlreadyExists")
    stale = json.loads(api.read_namespaced_pod("p1", "w", _preload_content=False).data)
    api.patch_namespaced_pod("p1", "w", {"metadata": {"labels": {"bump": "1"}}})
    with pytest.raises(client.ApiException) as info:
        api.replace_namespaced_pod("p1", "w", stale)
    assert (info.value.status, _status(info.value)["reason"]) == (409, "Conflict")
    with pytest.raises(client.ApiException) as info:
        api.create_namespaced_pod("nope", pod("x"))
    assert info.value.status == 404
    assert _status(info.value)["message"] == 'namespaces "nope" not found'


def test_invalid_object_is_422_with_causes(api, server):
    net = client.NetworkingV1Api(config.new_client_from_config(str(server)))
    body = {
        "metadata": {"name": "bad"},
        "spec": {
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/24"]}}]}],
        },
    }
    with pytest.raises(client.ApiException) as info:
        net.create_namespaced_network_policy("w", body)
    doc = _status(info.value)
    assert (info.value.status, doc["reason"]) == (422, "Invalid")
    assert doc["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "field": "spec.ingress[0].from[0].ipBlock.except[0]",
            "message": 'Invalid value: "11.0.0.0/24": must be a strict subset of `cidr`',
        }
    ]


def test_defaulting_on_create(api, server):
    net = client.NetworkingV1Api(config.new_client_from_config(str(server)))
    body = {
        "metadata": {"name": "eg"},
        "spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]},
    }
    created = json.loads(
        net.create_namespaced_network_policy("w", body, _preload_content=False).data
    )
    assert created["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert created["spec"]["egress"][0]["ports"][0]["protocol"] == "TCP"
    ns = json.loads(api.read_namespace("w", _preload_content=False).data)
    assert ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "w"


def test_no_token_is_401(server):
    doc = config.new_client_from_config(str(server))
    doc.configuration.api_key = {}
    with pytest.raises(client.ApiException) as info:
        client.CoreV1Api(doc).list_namespace()
    assert info.value.status == 401


def test_kubectl_patch_types(server, api):
    kubectl = Kubectl(str(server))
    kubectl(
        "patch",
        "pod",
        "-n",
        "w",
        "p1",
        "--type=merge",
        "-p",
        '{"metadata":{"annotations":{"a":"1"}}}',
    )
    kubectl(
        "patch",
        "pod",
        "-n",
        "w",
        "p1",
        "--type=json",
        "-p",
        '[{"op":"add","path":"/metadata/annotations/b","value":"2"}]',
    )
    kubectl(
        "patch", "pod", "-n", "w", "p1", "-p", '{"spec":{"containers":[{"name":"c","image":"i2"}]}}'
    )
    got = kubectl.json("get", "pod", "-n", "w", "p1")
    assert got["metadata"]["annotations"] == {"a": "1", "b": "2"}
    assert got["spec"]["containers"] == [{"name": "c", "image": "i2"}]
    refused = kubectl(
        "patch",
        "pod",
        "-n",
        "w",
        "p1",
        "-p",
        '{"spec":{"containers":[{"name":"c","ports":[{"containerPort":9}]}]}}',
        check=False,
    )
    assert refused.returncode != 0 and "pod updates may not change fields" in refused.stderr
