"""Just enough OpenAPI for kubectl.

`kubectl apply` (validate=strict, the default) asks /openapi/v3 whether the server
supports server-side field validation for the object's kind, by looking for the PATCH
operation tagged with the kind and a `fieldValidation` parameter. We advertise it, so
kubectl leaves validation to the server (our 422s) instead of needing full schemas;
strategic-merge patches are then computed by kubectl from its compiled-in types.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from lab.apiserver.resources import RESOURCES, Resource, group_versions

FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "description": "how the server handles unknown or duplicate fields",
    "schema": {"type": "string", "uniqueItems": True},
}


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _item_path(r: Resource) -> str:
    base = "/" + _gv_path(r.group, r.version)
    scope = "/namespaces/{namespace}" if r.namespaced else ""
    return f"{base}{scope}/{r.plural}/{{name}}"


def _operations(r: Resource) -> dict[str, Any]:
    gvk = {"group": r.group, "version": r.version, "kind": r.kind}
    ok = {"responses": {"200": {"description": "OK"}}}
    return {
        verb: {
            "operationId": f"{verb}{r.kind}",
            "x-kubernetes-group-version-kind": gvk,
            "x-kubernetes-action": action,
            "parameters": [FIELD_VALIDATION],
            **ok,
        }
        for verb, action in (
            ("get", "get"),
            ("put", "put"),
            ("patch", "patch"),
            ("delete", "delete"),
        )
    }


def _digest(gv_path: str) -> str:
    doc = json.dumps(openapi_v3_group(gv_path), sort_keys=True).encode()
    return hashlib.sha256(doc).hexdigest()[:16].upper()


def openapi_v3_index() -> dict[str, Any]:
    # kubectl caches each document on disk by this hash: it must change with the content.
    return {
        "paths": {
            _gv_path(g, v): {
                "serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash={_digest(_gv_path(g, v))}"
            }
            for g, v in group_versions()
        }
    }


def openapi_v3_group(gv_path: str) -> dict[str, Any] | None:
    found = [r for r in RESOURCES if _gv_path(r.group, r.version) == gv_path]
    if not found:
        return None
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (picket lab)", "version": "v1.32.0"},
        "paths": {_item_path(r): _operations(r) for r in found},
        "components": {"schemas": {}},
    }


def openapi_v2() -> dict[str, Any]:
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes (picket lab)", "version": "v1.32.0"},
        "paths": {},
        "definitions": {},
    }


def _pb_string(field: int, value: str) -> bytes:
    """A protobuf length-delimited field (wire type 2); short values only."""
    data = value.encode()
    return bytes([field << 3 | 2, len(data)]) + data


def openapi_v2_protobuf() -> bytes:
    """The v2 document as kubectl fetches it (gnostic's OpenAPIv2 Document protobuf):
    `swagger` (1) and `info` (2: title 1, version 2), no definitions. kubectl validates a
    `List` client-side against v2, and skips kinds it finds no schema for."""
    info = _pb_string(1, "Kubernetes (picket lab)") + _pb_string(2, "v1.32.0")
    return _pb_string(1, "2.0") + bytes([2 << 3 | 2, len(info)]) + info
