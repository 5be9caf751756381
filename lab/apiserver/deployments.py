"""The lab's deployment controller: keeps `replicas` pods of each Deployment's template,
named `<deployment>-<template hash>-<suffix>`, replacing pods of an older template, and
reports status. It acts through the same verbs as any client."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from typing import Any

from lab.apiserver import status as st
from lab.apiserver.handlers import PODS
from lab.apiserver.resources import BY_PATH
from lab.apiserver.routing import Target
from lab.apiserver.store import DELETED, Event
from lab.apiserver.workloads import OwnerController, controller_of

DEPLOYMENTS = BY_PATH[("apps", "v1", "deployments")]
HASH_LABEL = "pod-template-hash"
log = logging.getLogger("picket.lab.deployments")


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class DeploymentController(OwnerController):
    def _on_event(self, event: Event) -> None:
        if event.resource == DEPLOYMENTS.key and event.type == DELETED:
            self.collect_soon(event.namespace, event.obj["metadata"]["uid"])
        elif event.resource == DEPLOYMENTS.key:
            self.soon((event.namespace, event.obj["metadata"]["name"]))
        elif event.resource == PODS.key:
            owner = controller_of(event.obj, "Deployment")
            if owner is not None:
                self.soon((event.namespace, owner))

    def reconcile(self, key: tuple[str, str]) -> None:
        namespace, name = key
        deployment = self.api.store.get(DEPLOYMENTS.key, namespace, name)
        if deployment is None:
            return
        pods = self.owned_pods(namespace, deployment["metadata"]["uid"])
        spec = deployment.get("spec") or {}
        want_hash = template_hash(spec.get("template") or {})
        current = [p for p in pods if p["metadata"].get("labels", {}).get(HASH_LABEL) == want_hash]
        for pod in [p for p in pods if p not in current] + current[spec.get("replicas", 1) :]:
            self.api.store.delete(PODS.key, namespace, pod["metadata"]["name"])
        for _ in range(spec.get("replicas", 1) - len(current)):
            self._create_pod(deployment, want_hash)
        self._update_status(deployment, current[: spec.get("replicas", 1)])

    def _create_pod(self, deployment: dict[str, Any], want_hash: str) -> None:
        meta = deployment["metadata"]
        template = copy.deepcopy(deployment["spec"].get("template") or {})
        pod_meta = template.get("metadata") or {}
        pod_meta.setdefault("labels", {})[HASH_LABEL] = want_hash
        pod_meta["generateName"] = f"{meta['name']}-{want_hash}-"
        pod_meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": pod_meta,
            "spec": template.get("spec") or {},
        }
        try:
            self.api.create(Target(PODS, meta["namespace"], None, None), pod)
        except st.ApiError as exc:
            log.warning(
                "deployment %s/%s: cannot create a pod: %s",
                meta["namespace"],
                meta["name"],
                exc.message,
            )

    def _update_status(self, deployment: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        ready = sum(_ready(p) for p in pods)
        status = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": len(pods),
            "updatedReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
        if deployment.get("status") != status:
            new = copy.deepcopy(deployment)
            new["status"] = status
            self.api.store.replace(DEPLOYMENTS.key, deployment["metadata"]["namespace"], new)
