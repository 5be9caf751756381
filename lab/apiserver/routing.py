"""Request paths of the Kubernetes REST API, parsed into what they address."""

from __future__ import annotations

from dataclasses import dataclass

from lab.apiserver import status as st
from lab.apiserver.resources import BY_PATH, Resource


@dataclass(frozen=True)
class Target:
    resource: Resource
    namespace: str | None  # None: cluster-scoped, or every namespace for a list
    name: str | None  # None: the collection
    subresource: str | None
    legacy_watch: bool = False  # the deprecated /watch/ path prefix


@dataclass(frozen=True)
class Discovery:
    group: str | None  # None: /api or /apis roots
    version: str | None
    root: str  # "api" or "apis"


def parse_path(path: str) -> Target | Discovery:
    """`/api/v1/namespaces/x/pods/a/status` -> Target(pods, "x", "a", "status")."""
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        raise st.ApiError(404, "NotFound", "the server could not find the requested resource")
    root = parts[0]
    if root == "api":
        group, rest = "", parts[1:]
    else:
        if len(parts) < 2:
            return Discovery(None, None, root)
        group, rest = parts[1], parts[2:]
    if not rest:
        return Discovery(group if root == "apis" else None, None, root)
    version, rest = rest[0], rest[1:]
    if not rest:
        return Discovery(group, version, root)
    return _resource_target(group, version, rest)


def _resource_target(group: str, version: str, rest: list[str]) -> Target:
    legacy_watch = rest[0] == "watch"
    if legacy_watch:
        rest = rest[1:]
    namespace = None
    if (
        len(rest) >= 3
        and rest[0] == "namespaces"
        and (found := BY_PATH.get((group, version, rest[2])))
        and found.namespaced
    ):
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise st.ApiError(404, "NotFound", "the server could not find the requested resource")
    resource = BY_PATH.get((group, version, rest[0]))
    if resource is None:
        raise st.ApiError(404, "NotFound", "the server could not find the requested resource")
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and sub not in resource.subresources:
        raise st.ApiError(404, "NotFound", "the server could not find the requested resource")
    if resource.namespaced and name is not None and namespace is None:
        raise st.ApiError(404, "NotFound", "the server could not find the requested resource")
    return Target(resource, namespace, name, sub, legacy_watch)
