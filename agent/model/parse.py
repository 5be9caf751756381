"""One entry point from API dicts to typed objects: default, validate, build."""

from __future__ import annotations

from typing import Any

from agent.model.defaulting import apply_defaults
from agent.model.errors import INVALID, FieldError, FieldErrors, InvalidObjectError
from agent.model.objects import EndpointSlice, Namespace, NetworkPolicy, Node, Pod, Service
from agent.model.parse_core import parse_namespace, parse_node, parse_pod
from agent.model.parse_policy import parse_network_policy
from agent.model.parse_service import parse_endpoint_slice, parse_service

ApiObject = Namespace | Node | Pod | NetworkPolicy | Service | EndpointSlice

# kind -> (apiVersions the API serves it under, namespaced)
KINDS: dict[str, tuple[tuple[str, ...], bool]] = {
    "Namespace": (("v1",), False),
    "Node": (("v1",), False),
    "Pod": (("v1",), True),
    "NetworkPolicy": (("networking.k8s.io/v1",), True),
    "Service": (("v1",), True),
    "EndpointSlice": (("discovery.k8s.io/v1",), True),
}


def is_modelled(obj: Any) -> bool:
    """Whether `obj` is a kind the model understands (others are stored, not enforced)."""
    return isinstance(obj, dict) and _kind(obj) in KINDS


def _kind(obj: dict[str, Any]) -> str | None:
    kind = obj.get("kind")
    return kind if isinstance(kind, str) else None


def object_ref(obj: Any, default_namespace: str = "default") -> str:
    """`namespace/name` (or `name`) of a raw object, for messages, never raising."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    name = meta.get("name") if isinstance(meta.get("name"), str) else ""
    kind = _kind(obj) if isinstance(obj, dict) else None
    if kind in KINDS and not KINDS[kind][1]:
        return name
    namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else ""
    return f"{namespace or default_namespace}/{name}"


def parse_object(obj: Any, default_namespace: str = "default") -> ApiObject:
    """Default and validate `obj`; raise InvalidObjectError naming object and fields."""
    if not isinstance(obj, dict):
        raise InvalidObjectError(
            "object", "", [FieldError(INVALID, "(root)", "must be an object", obj)]
        )
    kind = _kind(obj)
    errs = FieldErrors()
    if kind not in KINDS:
        errs.not_supported("kind", obj.get("kind"), list(KINDS))
        raise InvalidObjectError(
            str(obj.get("kind") or "object"), object_ref(obj, default_namespace), errs
        )
    versions = KINDS[kind][0]
    if obj.get("apiVersion") not in versions:
        errs.not_supported("apiVersion", obj.get("apiVersion"), list(versions))
    defaulted = apply_defaults(obj)
    result: ApiObject
    if kind == "Namespace":
        result = parse_namespace(defaulted, errs)
    elif kind == "Node":
        result = parse_node(defaulted, errs)
    elif kind == "Pod":
        result = parse_pod(defaulted, errs, default_namespace)
    elif kind == "Service":
        result = parse_service(defaulted, errs, default_namespace)
    elif kind == "EndpointSlice":
        result = parse_endpoint_slice(defaulted, errs, default_namespace)
    else:
        result = parse_network_policy(defaulted, errs, default_namespace)
    if errs:
        raise InvalidObjectError(kind, object_ref(obj, default_namespace), errs)
    return result
