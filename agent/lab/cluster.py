"""The lab seen through its API, with the real client: pods, where they live (which
network namespace), and whether they are ready."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config

from agent.lab.config import LabNode, pod_netns


def core_api(kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))


@dataclass(frozen=True)
class LabPod:
    ref: str
    ip: str | None
    node: str | None
    netns: str | None  # where its sockets live (the node's for hostNetwork pods)
    ready: bool
    host_network: bool


def _lab_pod(obj: dict[str, Any]) -> LabPod:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    node = spec.get("nodeName")
    host_network = bool(spec.get("hostNetwork"))
    netns = None
    if node and node.startswith("node-") and node[5:].isdigit():
        netns = LabNode(int(node[5:])).netns if host_network else pod_netns(meta["uid"])
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return LabPod(
        f"{meta['namespace']}/{meta['name']}",
        status.get("podIP"),
        node,
        netns,
        ready and bool(status.get("podIP")),
        host_network,
    )


def list_pods(api: client.CoreV1Api, namespaces: list[str] | None = None) -> list[LabPod]:
    resp = api.list_pod_for_all_namespaces(_preload_content=False)
    items = json.loads(resp.data)["items"]
    pods = [_lab_pod(o) for o in items]
    if namespaces:
        pods = [p for p in pods if p.ref.split("/", 1)[0] in namespaces]
    return sorted(pods, key=lambda p: p.ref)


def get_pod(api: client.CoreV1Api, ref: str) -> LabPod:
    namespace, _, name = ref.partition("/")
    if not name:
        raise ValueError(f"{ref!r} is not NAMESPACE/POD")
    resp = api.read_namespaced_pod(name, namespace, _preload_content=False)
    return _lab_pod(json.loads(resp.data))


def list_nodes(api: client.CoreV1Api) -> list[dict[str, Any]]:
    resp = api.list_node(_preload_content=False)
    return json.loads(resp.data)["items"]
