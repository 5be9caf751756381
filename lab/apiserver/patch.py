"""The three PATCH content types of the Kubernetes API, as pure functions on JSON objects.

- ``application/merge-patch+json``: RFC 7386, :func:`merge_patch`, and
  ``application/json-patch+json``: RFC 6902, :func:`json_patch` (both in json_patches.py).
- ``application/strategic-merge-patch+json``: :func:`strategic_merge_patch`, what ``kubectl
  apply``, ``label``, ``annotate`` and ``patch`` send by default.

Strategic merge patch follows k8s.io/apimachinery/pkg/util/strategicpatch (``mergeMap`` with
``MergeParallelList`` and ``IgnoreUnmatchedNulls``, as the API server applies it). Upstream reads
the merge strategy of each list from Go struct tags (``patchStrategy``/``patchMergeKey``); here it
comes from :data:`PATCH_STRATEGIES`, a table of field paths per kind copied from those tags in
k8s.io/api core/v1, apps/v1, batch/v1 and networking/v1. A list not in the table is atomic: the
patch's list replaces it, as upstream does for untagged fields.

Merged lists are ordered as upstream orders them: items named by ``$setElementOrder`` (or, without
one, by the patch list) come in that order, and each other stored item stays ahead of the first
named item that followed it in the stored list. So an item the stored list lacks, added without
``$setElementOrder``, lands first (as the "kubectl patch" task page shows for a new container).

Where this module knowingly differs from upstream (each difference only removes a way for a
directive or a null to be stored in the object):

- ``$patch: delete`` in a map removes the field; upstream leaves an empty map ``{}``.
- A value the original lacks (or whose type changes) is merged into an empty value, so nested
  directives and nulls are honoured; upstream stores it after only stripping ``$patch`` maps, so
  ``$patch: replace`` on a field that does not exist yet drops the field there.
- Items of atomic lists and of ``$patch: replace`` maps are cleaned the same way; upstream stores
  them verbatim.
- ``$deleteFromPrimitiveList`` on a list without a merge strategy still deletes the values;
  upstream replaces that list with the values to delete.
- Unknown ``$``-keys are rejected instead of being stored as fields.

Nothing here does I/O, and no function mutates its arguments.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from lab.apiserver.json_patches import (
    PatchError,
    json_patch,
    json_type,
    merge_patch,
    require_object,
)
from lab.apiserver.patch_strategies import MERGE, PATCH_STRATEGIES, FieldPath, strategies_for

__all__ = [
    "MERGE",
    "PATCH_STRATEGIES",
    "PatchError",
    "json_patch",
    "merge_patch",
    "strategic_merge_patch",
]


_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_VALUES = "$deleteFromPrimitiveList/"


# --- strategic merge patch ------------------------------------------------------------------


def strategic_merge_patch(original: dict, patch: dict, kind: str) -> dict:
    """Apply a Kubernetes strategic merge patch to an object of the given kind.

    Returns a new object that contains no ``$`` directive. Raises :class:`PatchError` for a
    malformed patch."""
    require_object(original, "the object to patch")
    require_object(patch, "a strategic merge patch")
    merger = _Merger(strategies_for(kind))
    # The merge edits in place, as upstream does, so it gets private copies of both inputs.
    result = merger.merge_map(copy.deepcopy(original), copy.deepcopy(patch), ())
    return {} if result is _DELETED else result


class _Deleted:
    """Marks a value that a ``$patch: delete`` removed."""


_DELETED = _Deleted()


def _where(path: FieldPath) -> str:
    return ".".join(path) or "the object"


def _scalar_key(value: object, path: FieldPath) -> Hashable:
    """A hashable identity for a JSON scalar with Go's equality: true is not 1, 1 is 1.0."""
    if isinstance(value, dict | list):
        raise PatchError(f"{_where(path)}: expected a value, not {json_type(value)}")
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    return ("value", value)


def _loose_key(value: object) -> Hashable:
    """Like _scalar_key, but a stored non-scalar is simply never equal to anything else."""
    if isinstance(value, dict | list):
        return ("object", id(value))
    return _scalar_key(value, ())


def _merge_key(item: object, key: str, path: FieldPath) -> Hashable:
    """The merge-key identity of a patch item; the patch is malformed without one."""
    if not isinstance(item, dict):
        raise PatchError(
            f"{_where(path)}: items are merged by {key!r} and must be objects, "
            f"not {json_type(item)}"
        )
    if key not in item:
        raise PatchError(f"{_where(path)}: list item {item!r} has no merge key {key!r}")
    return _scalar_key(item[key], (*path, key))


def _stored_key(item: object, key: str) -> Hashable:
    """The merge-key identity of a stored item; one without a key matches nothing."""
    if isinstance(item, dict) and key in item:
        return _loose_key(item[key])
    return ("unkeyed", id(item))


def _directive_field(key: str, prefix: str, path: FieldPath) -> str:
    field = key[len(prefix) :]
    if not field:
        raise PatchError(f"{_where(path)}: directive {key!r} names no field")
    return field


class _Merger:
    """Strategic merge of a patch into an original, both private copies it may edit."""

    def __init__(self, strategies: Mapping[FieldPath, str]) -> None:
        self._strategies = strategies

    def _ident(self, path: FieldPath) -> Callable[[object], Hashable]:
        key = self._strategies[path]
        return _loose_key if key == MERGE else lambda item: _stored_key(item, key)

    def _strict_ident(self, path: FieldPath) -> Callable[[object], Hashable]:
        key = self._strategies[path]
        if key == MERGE:
            return lambda value: _scalar_key(value, path)
        return lambda item: _merge_key(item, key, path)

    def merge_map(self, original: dict, patch: dict, path: FieldPath) -> dict | _Deleted:
        if _DIRECTIVE in patch:
            return self._map_directive(patch, path)
        _apply_retain_keys(original, patch, path)
        for key in [k for k in patch if k.startswith(_SET_ORDER)]:
            field = _directive_field(key, _SET_ORDER, path)
            self._order_field(original, patch, field, patch.pop(key), (*path, field))
        # Deletions from primitive lists go last so that they never depend on key order.
        for key in sorted(patch, key=lambda k: k.startswith(_DELETE_VALUES)):
            self._merge_field(original, key, patch[key], path)
        return original

    def _map_directive(self, patch: dict, path: FieldPath) -> dict | _Deleted:
        directive = patch.pop(_DIRECTIVE)
        if directive == "replace":
            # "Exactly this content": merging into nothing drops nulls and nested directives.
            return self.merge_map({}, patch, path)
        if directive == "delete":
            return _DELETED
        raise PatchError(
            f"{_where(path)}: unknown $patch directive {directive!r} (want replace or delete)"
        )

    def _merge_field(self, original: dict, key: str, value: Any, path: FieldPath) -> None:
        if key.startswith(_DELETE_VALUES):
            field = _directive_field(key, _DELETE_VALUES, path)
            _delete_values(original, field, value, (*path, field))
            return
        if key.startswith("$"):
            raise PatchError(f"{_where(path)}: unknown patch directive {key!r}")
        if value is None:
            original.pop(key, None)
            return
        current, sub = original.get(key), (*path, key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged = self.merge_map(current, value, sub)
        elif isinstance(current, list) and isinstance(value, list):
            merged = self.merge_list(current, value, sub)
        else:
            merged = self.fresh(value, sub)
        if merged is _DELETED:
            original.pop(key, None)
        else:
            original[key] = merged

    def fresh(self, value: Any, path: FieldPath) -> Any:
        """A patch value with nothing to merge into: merged into an empty one, so that its
        nulls and directives are applied rather than stored."""
        if isinstance(value, dict):
            return self.merge_map({}, value, path)
        if isinstance(value, list):
            return self.merge_list([], value, path)
        return value

    def merge_list(self, original: list, patch: list, path: FieldPath) -> list:
        strategy = self._strategies.get(path)
        if strategy is None:
            # Atomic: the patch's list is the new list.
            items = (self.fresh(item, path) for item in patch)
            return [item for item in items if item is not _DELETED]
        if strategy == MERGE:
            for value in patch:
                _scalar_key(value, path)  # a set of values cannot hold objects
            return _normalize_order(_dedupe(original + patch), patch, original, _loose_key)
        return self._merge_keyed(original, patch, strategy, path)

    def _merge_keyed(self, original: list, patch: list, key: str, path: FieldPath) -> list:
        original, items = _split_special_items(original, patch, key, path)
        merged = list(original)
        for item in items:
            wanted = _merge_key(item, key, path)
            found = [i for i, old in enumerate(merged) if _stored_key(old, key) == wanted]
            if found:
                merged[found[0]] = self.merge_map(merged[found[0]], item, path)
            else:
                merged.append(self.merge_map({}, item, path))
        return _normalize_order(merged, items, original, self._ident(path))

    def _order_field(
        self, original: dict, patch: dict, field: str, order: Any, path: FieldPath
    ) -> None:
        """Apply ``$setElementOrder/<field>``: merge the field, then order it like ``order``."""
        if not isinstance(order, list):
            raise PatchError(f"{_where(path)}: $setElementOrder must be an array")
        incoming = patch.get(field)
        if path not in self._strategies or (field in patch and incoming is None):
            return  # atomic lists keep the patch's own order; a null deletes the list anyway
        strict = self._strict_ident(path)
        for entry in order:
            strict(entry)
        current = original.get(field)
        current = current if isinstance(current, list) else None
        if incoming is not None:
            if not isinstance(incoming, list):
                raise PatchError(f"{_where(path)}: expected an array, not {json_type(incoming)}")
            _check_order(incoming, order, strict, path)
            merged = self.merge_list(current or [], incoming, path)
        elif current is None:
            return
        else:
            merged = list(current)
        original[field] = _normalize_order(merged, order, current or [], self._ident(path))
        patch.pop(field, None)


def _apply_retain_keys(original: dict, patch: dict, path: FieldPath) -> None:
    """``$retainKeys``: the original keeps only the listed fields, and the patch may set only
    listed fields (union types such as a Deployment's strategy or a volume's source)."""
    if _RETAIN_KEYS not in patch:
        return
    keep = patch.pop(_RETAIN_KEYS)
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise PatchError(f"{_where(path)}: $retainKeys must be an array of field names")
    for key, value in patch.items():
        if value is not None and not key.startswith("$") and key not in keep:
            raise PatchError(f"{_where(path)}: the patch sets {key!r}, which $retainKeys omits")
    for key in [k for k in original if k not in keep]:
        del original[key]


def _delete_values(original: dict, field: str, values: Any, path: FieldPath) -> None:
    if not isinstance(values, list):
        raise PatchError(f"{_where(path)}: $deleteFromPrimitiveList must be an array")
    doomed = {_scalar_key(value, path) for value in values}
    current = original.get(field)
    if isinstance(current, list):
        original[field] = [v for v in current if _loose_key(v) not in doomed]


def _split_special_items(
    original: list, patch: list, key: str, path: FieldPath
) -> tuple[list, list]:
    """Apply the ``$patch`` items of a keyed list: ``delete`` drops the original item with that
    key, ``replace`` drops every original item. Returns (original, plain patch items)."""
    plain, replace = [], False
    for item in patch:
        if not isinstance(item, dict):
            _merge_key(item, key, path)  # raises: the item is no object
        elif _DIRECTIVE not in item:
            plain.append(item)
        elif item[_DIRECTIVE] == "delete":
            doomed = _merge_key(item, key, path)
            original = [old for old in original if _stored_key(old, key) != doomed]
        elif item[_DIRECTIVE] == "replace":
            replace = True
        else:
            raise PatchError(
                f"{_where(path)}: unknown $patch directive {item[_DIRECTIVE]!r} in a list item"
            )
    return ([] if replace else original), plain


def _check_order(
    incoming: list, order: list, ident: Callable[[object], Hashable], path: FieldPath
) -> None:
    """Every plain patch item must appear in ``$setElementOrder``, in the same relative order."""
    items = [i for i in incoming if not (isinstance(i, dict) and _DIRECTIVE in i)]
    position = 0
    for entry in order:
        if position < len(items) and ident(items[position]) == ident(entry):
            position += 1
    if position < len(items):
        raise PatchError(
            f"{_where(path)}: the patch list {incoming!r} does not follow "
            f"$setElementOrder {order!r}"
        )


def _dedupe(values: list) -> list:
    seen: set[Hashable] = set()
    out = []
    for value in values:
        if (key := _loose_key(value)) not in seen:
            seen.add(key)
            out.append(value)
    return out


def _normalize_order(
    merged: list, patch_order: list, server_order: list, ident: Callable[[object], Hashable]
) -> list:
    """Order a merged list as upstream's normalizeElementOrder does: items named by the patch
    in the patch's order, the others in their stored order, then the two interleaved so that a
    stored item stays ahead of a patch item it preceded in the stored list."""
    patch_rank = _rank(patch_order, ident)
    server_rank = _rank(server_order, ident)
    named = [item for item in merged if ident(item) in patch_rank]
    others = [item for item in merged if ident(item) not in patch_rank]
    named.sort(key=lambda item: patch_rank[ident(item)])
    others.sort(key=lambda item: server_rank.get(ident(item), len(server_rank)))
    out, i, j = [], 0, 0
    while i < len(others) and j < len(named):
        left, right = server_rank.get(ident(others[i])), server_rank.get(ident(named[j]))
        if left is not None and right is not None and left < right:
            out.append(others[i])
            i += 1
        else:
            out.append(named[j])
            j += 1
    return out + others[i:] + named[j:]


def _rank(items: list, ident: Callable[[object], Hashable]) -> dict[Hashable, int]:
    rank: dict[Hashable, int] = {}
    for index, item in enumerate(items):
        rank.setdefault(ident(item), index)
    return rank
