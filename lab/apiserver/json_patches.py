"""RFC 7386 merge patch and RFC 6902 JSON patch on JSON objects (the PATCH content types
``application/merge-patch+json`` and ``application/json-patch+json``), and the error every
patch type raises. Pure: nothing here does I/O or mutates its arguments."""

from __future__ import annotations

import copy

import jsonpatch
import jsonpointer


class PatchError(ValueError):
    """A patch that cannot be applied; the message is meant for the API client."""


def require_object(value: object, what: str) -> None:
    if not isinstance(value, dict):
        raise PatchError(f"{what} must be a JSON object, not {json_type(value)}")


def json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "unknown")


def merge_patch(target: dict, patch: dict) -> dict:
    """Apply an RFC 7386 JSON merge patch: objects merge recursively, null deletes a key,
    anything else (lists included) replaces. Returns a new object."""
    require_object(target, "the object to patch")
    require_object(patch, "a merge patch")
    result = copy.deepcopy(target)
    _merge_into(result, patch)
    return result


def _merge_into(target: dict, patch: dict) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            child = current if isinstance(current, dict) else {}
            _merge_into(child, value)
            target[key] = child
        else:
            target[key] = copy.deepcopy(value)


def json_patch(target: dict, operations: list) -> dict:
    """Apply an RFC 6902 JSON patch (a list of operations). Returns a new object."""
    require_object(target, "the object to patch")
    if not isinstance(operations, list):
        kind = json_type(operations)
        raise PatchError(f"a JSON patch must be an array of operations, not {kind}")
    for index, operation in enumerate(operations):
        if not isinstance(operation, dict):
            raise PatchError(f"JSON patch operation {index} must be an object")
    # Copies on both sides: jsonpatch inserts operation values into the result by reference.
    try:
        patch = jsonpatch.JsonPatch(copy.deepcopy(operations))
        result = patch.apply(copy.deepcopy(target), in_place=True)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise PatchError(f"JSON patch test operation failed: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchError(f"invalid JSON patch: {exc}") from exc
    if not isinstance(result, dict):
        raise PatchError(f"the JSON patch turned the object into {json_type(result)}")
    return result
