"""The lab's deployment controller: keeps `replicas` pods of each Deployment's template,
named `<deployment>-<template hash>-<suffix>`, replacing pods of an older template, and
reports status. It acts through the same verbs as any client."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
from typing import Any

from lab.apiserver import status as st
from lab.apiserver.handlers import PODS, Api
from lab.apiserver.resources import BY_PATH
from lab.apiserver.routing import Target
from lab.apiserver.store import DELETED, Event

DEPLOYMENTS = BY_PATH[("apps", "v1", "deployments")]
HASH_LABEL = "pod-template-hash"
log = logging.getLogger("picket.lab.deployments")


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def _owned_by(pod: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences") or [])


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class DeploymentController:
    def __init__(self, api: Api) -> None:
        self.api = api
        self._pending: set[tuple[str, str]] = set()

    def start(self) -> None:
        self.api.store.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        loop = asyncio.get_running_loop()
        if event.resource == DEPLOYMENTS.key and event.type == DELETED:
            # Garbage collection: the pods a deleted Deployment owned go with it.
            loop.call_soon(self._collect, event.namespace, event.obj["metadata"]["uid"])
            return
        if event.resource == DEPLOYMENTS.key:
            key = (event.namespace, event.obj["metadata"]["name"])
        elif event.resource == PODS.key:
            owners = [
                r
                for r in event.obj["metadata"].get("ownerReferences") or []
                if r.get("kind") == "Deployment"
            ]
            if not owners:
                return
            key = (event.namespace, owners[0]["name"])
        else:
            return
        # Reconcile after the change that triggered us has been fully committed.
        if key not in self._pending:
            self._pending.add(key)
            loop.call_soon(self._reconcile, key)

    def _reconcile(self, key: tuple[str, str]) -> None:
        self._pending.discard(key)
        namespace, name = key
        deployment = self.api.store.get(DEPLOYMENTS.key, namespace, name)
        if deployment is None:
            return
        pods = [
            p
            for p in self.api.store.items(PODS.key, namespace)
            if _owned_by(p, deployment["metadata"]["uid"])
        ]
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

    def _collect(self, namespace: str, uid: str) -> None:
        for pod in list(self.api.store.items(PODS.key, namespace)):
            if _owned_by(pod, uid):
                self.api.store.delete(PODS.key, namespace, pod["metadata"]["name"])
