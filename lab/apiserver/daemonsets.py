"""The lab's DaemonSet controller: one pod of each DaemonSet's template on every lab node
its nodeSelector admits, replaced node by node on a template change (RollingUpdate with
maxUnavailable, the default 1, and no surge; OnDelete replaces only deleted pods), with
the status `kubectl rollout status` reads. Pods are bound to their node at creation.
Virtual nodes are left out: nothing of a pod runs there. Taints are not consulted: the
lab's nodes have none unless a test adds them. It acts through the same verbs as any
client; the plan is pure (`plan`), the controller applies it."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from lab.apiserver import status as st
from lab.apiserver.deployments import template_hash
from lab.apiserver.handlers import PODS
from lab.apiserver.resources import BY_PATH
from lab.apiserver.routing import Target
from lab.apiserver.store import DELETED, Event
from lab.apiserver.workloads import OwnerController, controller_of

DAEMONSETS = BY_PATH[("apps", "v1", "daemonsets")]
NODES = BY_PATH[("", "v1", "nodes")]
HASH_LABEL = "controller-revision-hash"
VIRTUAL_LABEL = "picket.io/lab-node"
log = logging.getLogger("picket.lab.daemonsets")


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _hash(pod: dict[str, Any]) -> str:
    return (pod["metadata"].get("labels") or {}).get(HASH_LABEL, "")


def eligible_nodes(daemonset: dict[str, Any], nodes: list[dict[str, Any]]) -> list[str]:
    template = (daemonset.get("spec") or {}).get("template") or {}
    selector = (template.get("spec") or {}).get("nodeSelector") or {}
    chosen = []
    for node in nodes:
        labels = node["metadata"].get("labels") or {}
        if labels.get(VIRTUAL_LABEL) == "virtual":
            continue
        if all(labels.get(k) == v for k, v in selector.items()):
            chosen.append(node["metadata"]["name"])
    return sorted(chosen)


def max_unavailable(daemonset: dict[str, Any], desired: int) -> int:
    strategy = (daemonset.get("spec") or {}).get("updateStrategy") or {}
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1)
    if isinstance(value, str) and value.endswith("%"):
        value = math.ceil(desired * int(value[:-1]) / 100)
    return max(int(value), 1)


@dataclass
class Plan:
    delete: list[str] = field(default_factory=list)  # pod names
    create: list[str] = field(default_factory=list)  # node names
    status: dict[str, Any] = field(default_factory=dict)


def plan(daemonset: dict[str, Any], nodes: list[str], pods: list[dict[str, Any]]) -> Plan:
    """What to delete and create now, and the status, for `pods` (the DaemonSet's)."""
    spec = daemonset.get("spec") or {}
    want = template_hash(spec.get("template") or {})
    result = Plan()
    by_node: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName") or ""
        if node in nodes:
            by_node.setdefault(node, []).append(pod)
        else:
            result.delete.append(pod["metadata"]["name"])
    kept: dict[str, dict[str, Any]] = {}
    for node in nodes:
        here = sorted(
            by_node.get(node, []),
            key=lambda p: (_hash(p) != want, not _ready(p), p["metadata"]["name"]),
        )
        if not here:
            result.create.append(node)
            continue
        kept[node] = here[0]
        result.delete += [p["metadata"]["name"] for p in here[1:]]
    old = [node for node in nodes if node in kept and _hash(kept[node]) != want]
    rolling = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
    if rolling:
        unavailable = sum(1 for node in nodes if node not in kept or not _ready(kept[node]))
        budget = max_unavailable(daemonset, len(nodes)) - unavailable
        for node in old:
            if not _ready(kept[node]):  # already unavailable: replacing costs nothing
                result.delete.append(kept[node]["metadata"]["name"])
            elif budget > 0:
                result.delete.append(kept[node]["metadata"]["name"])
                budget -= 1
    ready = sum(1 for pod in kept.values() if _ready(pod))
    result.status = {
        "observedGeneration": daemonset["metadata"].get("generation", 1),
        "desiredNumberScheduled": len(nodes),
        "currentNumberScheduled": len(kept),
        "updatedNumberScheduled": sum(1 for pod in kept.values() if _hash(pod) == want),
        "numberReady": ready,
        "numberAvailable": ready,
        "numberUnavailable": len(nodes) - ready,
        "numberMisscheduled": 0,
    }
    return result


class DaemonSetController(OwnerController):
    def _on_event(self, event: Event) -> None:
        if event.resource == DAEMONSETS.key and event.type == DELETED:
            self.collect_soon(event.namespace, event.obj["metadata"]["uid"])
        elif event.resource == DAEMONSETS.key:
            self.soon((event.namespace, event.obj["metadata"]["name"]))
        elif event.resource == PODS.key:
            owner = controller_of(event.obj, "DaemonSet")
            if owner is not None:
                self.soon((event.namespace, owner))
        elif event.resource == NODES.key:
            for daemonset in self.api.store.items(DAEMONSETS.key):
                self.soon((daemonset["metadata"]["namespace"], daemonset["metadata"]["name"]))

    def reconcile(self, key: tuple[str, str]) -> None:
        namespace, name = key
        daemonset = self.api.store.get(DAEMONSETS.key, namespace, name)
        if daemonset is None:
            return
        pods = self.owned_pods(namespace, daemonset["metadata"]["uid"])
        nodes = eligible_nodes(daemonset, list(self.api.store.items(NODES.key)))
        todo = plan(daemonset, nodes, pods)
        for pod_name in todo.delete:
            if self.api.store.get(PODS.key, namespace, pod_name) is not None:
                self.api.store.delete(PODS.key, namespace, pod_name)
        for node in todo.create:
            self._create_pod(daemonset, node)
        if daemonset.get("status") != todo.status:
            new = copy.deepcopy(daemonset)
            new["status"] = todo.status
            self.api.store.replace(DAEMONSETS.key, namespace, new)

    def _create_pod(self, daemonset: dict[str, Any], node: str) -> None:
        meta = daemonset["metadata"]
        template = copy.deepcopy(daemonset["spec"].get("template") or {})
        pod_meta = template.get("metadata") or {}
        pod_meta.setdefault("labels", {})[HASH_LABEL] = template_hash(
            daemonset["spec"].get("template") or {}
        )
        pod_meta["generateName"] = f"{meta['name']}-"
        pod_meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        pod_spec = template.get("spec") or {}
        pod_spec["nodeName"] = node
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pod_spec}
        try:
            self.api.create(Target(PODS, meta["namespace"], None, None), pod)
        except st.ApiError as exc:
            log.warning(
                "daemonset %s/%s: cannot create a pod on %s: %s",
                meta["namespace"],
                meta["name"],
                node,
                exc.message,
            )
