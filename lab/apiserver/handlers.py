"""The verbs of the API on the store: get, list, create, update, patch, delete, bind.

Each raises ApiError with the Status the real server would send; none does network I/O.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from agent.model.errors import INVALID, FieldError
from lab.apiserver import status as st
from lab.apiserver.admission import Allocate, admit_create, admit_update
from lab.apiserver.fieldselect import check_fields, parse_field_selector
from lab.apiserver.fieldselect import matches as field_matches
from lab.apiserver.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from lab.apiserver.resources import BY_PATH, RESOURCES, Resource
from lab.apiserver.routing import Target
from lab.apiserver.selector_syntax import parse_label_selector
from lab.apiserver.service_registry import SERVICES, ServiceRegistry
from lab.apiserver.store import Store, now_rfc3339
from lab.apiserver.watch import Matcher
from lab.config import NODEPORT_RANGE, SERVICE_CIDR

NAMESPACES = BY_PATH[("", "v1", "namespaces")]
PODS = BY_PATH[("", "v1", "pods")]
# The real server refuses to delete these (the namespace lifecycle admission plugin).
IMMORTAL_NAMESPACES = ("default", "kube-system", "kube-public")
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def matcher(target: Target, params: Mapping[str, str]) -> Matcher:
    """labelSelector AND fieldSelector, validated (400 on a bad selector)."""
    try:
        labels = parse_label_selector(params.get("labelSelector", ""))
        fields = parse_field_selector(params.get("fieldSelector", ""))
        check_fields(target.resource.plural, fields)
    except ValueError as exc:
        raise st.bad_request(str(exc)) from None

    def matches(obj: dict[str, Any]) -> bool:
        obj_labels = (obj.get("metadata") or {}).get("labels") or {}
        return labels.matches(obj_labels) and field_matches(obj, fields)

    return matches


def _random_suffix(n: int = 5) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the real server's, without vowels
    return "".join(secrets.choice(alphabet) for _ in range(n))


class Api:
    def __init__(
        self,
        store: Store,
        defer: Callable[[Callable[[], None]], None] | None = None,
        strict: bool = True,
        services: ServiceRegistry | None = None,
    ) -> None:
        self.store = store
        # ClusterIPs and NodePorts, from the ranges a real server takes as
        # --service-cluster-ip-range and --service-node-port-range.
        self.services = services or ServiceRegistry(store, [SERVICE_CIDR], NODEPORT_RANGE)
        # strict: kinds the model knows are validated by it; off: only names and labels.
        self.strict = strict
        # How work that the real server does in the background (finalizing a terminating
        # namespace) is scheduled; by default it happens at once.
        self.defer = defer or (lambda work: work())

    def _allocator(self, resource: Resource) -> Allocate | None:
        return self.services.allocate if resource is SERVICES else None

    def list(self, target: Target, params: Mapping[str, str]) -> tuple[list[dict], int]:
        matches = matcher(target, params)
        items = [o for o in self.store.items(target.resource.key, target.namespace) if matches(o)]
        return items, self.store.rv

    def get(self, target: Target) -> dict[str, Any]:
        obj = self.store.get(target.resource.key, target.namespace or "", target.name or "")
        if obj is None:
            raise st.not_found(target.resource, target.name or "")
        return obj

    def create(self, target: Target, body: Any, dry_run: bool = False) -> dict[str, Any]:
        resource = target.resource
        obj = self._body_object(resource, body, target.namespace)
        meta = obj["metadata"]
        if not meta.get("name") and isinstance(meta.get("generateName"), str):
            meta["name"] = meta["generateName"] + _random_suffix()
        obj = admit_create(resource, obj, self.strict, self._allocator(resource))
        namespace = meta.get("namespace", "") if resource.namespaced else ""
        if resource.namespaced:
            owner = self.store.get(NAMESPACES.key, "", namespace)
            if owner is None:
                raise st.namespace_not_found(namespace)
            if owner["metadata"].get("deletionTimestamp"):
                raise st.ApiError(
                    403,
                    "Forbidden",
                    f'{resource.key} "{meta.get("name")}" is '
                    f"forbidden: unable to create new content in namespace "
                    f"{namespace} because it is being terminated",
                )
        if self.store.get(resource.key, namespace, obj["metadata"]["name"]) is not None:
            raise st.already_exists(resource, obj["metadata"]["name"])
        if dry_run:
            return obj
        return self.store.create(resource.key, namespace, obj)

    def update(self, target: Target, body: Any, dry_run: bool = False) -> dict[str, Any]:
        old = self.get(target)
        obj = self._body_object(target.resource, body, target.namespace)
        if obj["metadata"].get("name") != target.name:
            raise st.bad_request("the name of the object does not match the name on the URL")
        wanted = obj["metadata"].get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise st.conflict(target.resource, target.name or "")
        return self._store_update(target, old, obj, dry_run)

    def patch(
        self, target: Target, raw: bytes, content_type: str, dry_run: bool = False
    ) -> dict[str, Any]:
        old = self.get(target)
        try:
            patch = json.loads(raw or b"null")
            if content_type == MERGE:
                new = merge_patch(old, patch)
            elif content_type == STRATEGIC:
                new = strategic_merge_patch(old, patch, target.resource.kind)
            elif content_type == JSON_PATCH:
                new = json_patch(old, patch)
            else:
                raise st.unsupported_media_type(content_type)
        except (ValueError, PatchError) as exc:
            raise st.bad_request(f"the patch could not be applied: {exc}") from None
        wanted = (new.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise st.conflict(target.resource, target.name or "")
        return self._store_update(target, old, new, dry_run)

    def _store_update(
        self, target: Target, old: dict[str, Any], new: dict[str, Any], dry_run: bool
    ) -> dict[str, Any]:
        allocate = None if target.subresource else self._allocator(target.resource)
        stored = admit_update(target.resource, old, new, target.subresource, self.strict, allocate)
        if dry_run:
            return stored
        if stored == old:
            return old  # a no-op update keeps its resourceVersion, as the real server's does
        return self.store.replace(target.resource.key, target.namespace or "", stored)

    def delete(self, target: Target, dry_run: bool = False) -> dict[str, Any]:
        obj = self.get(target)
        if target.resource is NAMESPACES and target.name in IMMORTAL_NAMESPACES:
            raise st.ApiError(
                403,
                "Forbidden",
                f'namespaces "{target.name}" is forbidden: this namespace may not be deleted',
            )
        if dry_run:
            return obj
        if target.resource is NAMESPACES:
            return self._terminate_namespace(obj)
        return self.store.delete(target.resource.key, target.namespace or "", target.name or "")

    def _terminate_namespace(self, namespace: dict[str, Any]) -> dict[str, Any]:
        """Like the real server: the namespace turns Terminating at once (its objects can
        still be read and deleted, no new ones created), then its contents and itself go."""
        if namespace["metadata"].get("deletionTimestamp"):
            return namespace
        new = copy.deepcopy(namespace)
        new["metadata"]["deletionTimestamp"] = now_rfc3339()
        new.setdefault("status", {})["phase"] = "Terminating"
        stored = self.store.replace(NAMESPACES.key, "", new)
        self.defer(lambda: self._finalize_namespace(new["metadata"]["name"]))
        return stored

    def _finalize_namespace(self, name: str) -> None:
        if self.store.get(NAMESPACES.key, "", name) is None:
            return
        self._empty_namespace(name)
        self.store.delete(NAMESPACES.key, "", name)

    def delete_collection(self, target: Target, params: Mapping[str, str]) -> list[dict]:
        items, _ = self.list(target, params)
        return [
            self.store.delete(
                target.resource.key, o["metadata"].get("namespace", ""), o["metadata"]["name"]
            )
            for o in list(items)
        ]

    def _empty_namespace(self, namespace: str) -> None:
        """Deleting a namespace deletes everything in it (the namespace controller's job)."""
        for resource in RESOURCES:
            if resource.namespaced:
                for obj in list(self.store.items(resource.key, namespace)):
                    self.store.delete(resource.key, namespace, obj["metadata"]["name"])

    def get_scale(self, target: Target) -> dict[str, Any]:
        obj = self.get(Target(target.resource, target.namespace, target.name, None))
        meta = obj["metadata"]
        labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            },
        }

    def patched_scale(self, target: Target, raw: bytes, content_type: str) -> dict[str, Any]:
        try:
            patch = json.loads(raw or b"null")
            current = self.get_scale(target)
            if content_type == JSON_PATCH:
                return json_patch(current, patch)
            if content_type in (MERGE, STRATEGIC):
                return merge_patch(current, patch)
        except (ValueError, PatchError) as exc:
            raise st.bad_request(f"the patch could not be applied: {exc}") from None
        raise st.unsupported_media_type(content_type)

    def set_scale(self, target: Target, scale: Any, dry_run: bool = False) -> dict[str, Any]:
        replicas = (
            ((scale or {}).get("spec") or {}).get("replicas") if isinstance(scale, dict) else None
        )
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise st.invalid(
                target.resource,
                target.name or "",
                [
                    FieldError(
                        INVALID, "spec.replicas", "must be greater than or equal to 0", replicas
                    )
                ],
            )
        main = Target(target.resource, target.namespace, target.name, None)
        old = self.get(main)
        new = copy.deepcopy(old)
        new.setdefault("spec", {})["replicas"] = replicas
        self._store_update(main, old, new, dry_run)
        return (
            self.get_scale(target)
            if not dry_run
            else {**self.get_scale(target), "spec": {"replicas": replicas}}
        )

    def bind(self, target: Target, body: Any) -> dict[str, Any]:
        """pods/binding: the scheduler's way to set spec.nodeName, once."""
        pod = self.get(target)
        node = ((body or {}).get("target") or {}).get("name") if isinstance(body, dict) else None
        if not node:
            raise st.bad_request("a binding needs target.name")
        current = (pod.get("spec") or {}).get("nodeName")
        if current:
            raise st.ApiError(
                409,
                "Conflict",
                f"Operation cannot be fulfilled on pods/binding "
                f'"{target.name}": pod {target.name} is already assigned to node '
                f'"{current}"',
            )
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = node
        self.store.replace(PODS.key, target.namespace or "", new)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }

    @staticmethod
    def _body_object(resource: Resource, body: Any, namespace: str | None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise st.bad_request("the body of the request must be a JSON object")
        obj = copy.deepcopy(body)
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if (kind and kind != resource.kind) or (
            api_version and api_version != resource.api_version
        ):
            raise st.bad_request(
                f"the object kind {api_version}/{kind} does not match the "
                f"resource {resource.key} ({resource.api_version}/{resource.kind})"
            )
        obj["kind"], obj["apiVersion"] = resource.kind, resource.api_version
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise st.bad_request("metadata must be an object")
        if resource.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise st.bad_request(
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj
