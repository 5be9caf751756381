"""Typed access to the untyped dicts the API returns.

Every getter records a field error instead of raising, so that a malformed object
reports all its problems and never crashes the caller with a KeyError or TypeError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.model.errors import FieldErrors


def _typed(
    obj: Mapping[str, Any],
    key: str,
    types: tuple[type, ...],
    what: str,
    path: str,
    errs: FieldErrors,
    required: bool,
) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            errs.required(path)
        return None
    # bool is an int in Python but not in JSON.
    if isinstance(value, bool) and bool not in types:
        errs.invalid(path, value, f"must be {what}")
        return None
    if not isinstance(value, types):
        errs.invalid(path, value, f"must be {what}")
        return None
    return value


def get_map(
    obj: Mapping[str, Any], key: str, path: str, errs: FieldErrors, required: bool = False
) -> dict[str, Any] | None:
    return _typed(obj, key, (dict,), "an object", path, errs, required)


def get_list(
    obj: Mapping[str, Any], key: str, path: str, errs: FieldErrors, required: bool = False
) -> list[Any] | None:
    return _typed(obj, key, (list,), "a list", path, errs, required)


def get_str(
    obj: Mapping[str, Any], key: str, path: str, errs: FieldErrors, required: bool = False
) -> str | None:
    value = _typed(obj, key, (str,), "a string", path, errs, required)
    if required and value == "":
        errs.required(path)
        return None
    return value


def get_int(
    obj: Mapping[str, Any], key: str, path: str, errs: FieldErrors, required: bool = False
) -> int | None:
    return _typed(obj, key, (int,), "an integer", path, errs, required)


def get_bool(obj: Mapping[str, Any], key: str, path: str, errs: FieldErrors) -> bool:
    return bool(_typed(obj, key, (bool,), "a boolean", path, errs, False))


def get_optional_bool(
    obj: Mapping[str, Any], key: str, path: str, errs: FieldErrors
) -> bool | None:
    """A boolean whose absence means something of its own (a condition not reported)."""
    return _typed(obj, key, (bool,), "a boolean", path, errs, False)


def get_str_map(obj: Mapping[str, Any], key: str, path: str, errs: FieldErrors) -> dict[str, str]:
    """A map of strings to strings, such as labels or annotations."""
    raw = get_map(obj, key, path, errs) or {}
    result = {}
    for k, v in raw.items():
        if not isinstance(v, str):
            errs.invalid(f"{path}[{k}]", v, "must be a string")
            continue
        result[str(k)] = v
    return result


def list_of_maps(items: list[Any] | None, path: str, errs: FieldErrors) -> list[tuple[str, dict]]:
    """(path, item) for each entry that is an object; other entries are field errors."""
    out = []
    for i, item in enumerate(items or []):
        item_path = f"{path}[{i}]"
        if isinstance(item, dict):
            out.append((item_path, item))
        else:
            errs.invalid(item_path, item, "must be an object")
    return out
