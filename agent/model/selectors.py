"""Label selectors (metav1.LabelSelector): parsing, validation and matching.

The API's rules: the requirements of a selector are ANDed; an empty selector `{}`
matches everything; a null selector matches nothing (callers decide where the API
gives a null selector another meaning, such as a peer without podSelector).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.model.errors import FieldErrors
from agent.model.fields import get_list, get_str, get_str_map, list_of_maps
from agent.model.names import check_labels, label_value_problems, qualified_name_problems

IN, NOT_IN, EXISTS, DOES_NOT_EXIST = "In", "NotIn", "Exists", "DoesNotExist"
OPERATORS = (IN, NOT_IN, EXISTS, DOES_NOT_EXIST)


@dataclass(frozen=True, order=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == IN:
            return labels.get(self.key) in self.values
        if self.operator == NOT_IN:
            # NotIn also matches objects that do not have the key at all.
            return labels.get(self.key) not in self.values
        if self.operator == EXISTS:
            return self.key in labels
        return self.key not in labels

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return f"!{self.key}"
        word = "in" if self.operator == IN else "notin"
        return f"{self.key} {word} ({','.join(self.values)})"


@dataclass(frozen=True)
class LabelSelector:
    """A validated, normalised selector: equal selectors compare and hash equal."""

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[Requirement, ...] = field(default=())

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        """An empty selector matches everything; all requirements must hold."""
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.expressions
        )

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels] + [str(r) for r in self.expressions]
        return ",".join(parts) if parts else "(all)"


MATCH_ALL = LabelSelector()


def parse_selector(raw: Any, path: str, errs: FieldErrors) -> LabelSelector:
    """Parse a selector object; problems go to `errs` and the result is still usable."""
    if not isinstance(raw, dict):
        errs.invalid(path, raw, "must be an object")
        return MATCH_ALL
    labels = get_str_map(raw, "matchLabels", f"{path}.matchLabels", errs)
    check_labels(labels, f"{path}.matchLabels", errs)
    items = get_list(raw, "matchExpressions", f"{path}.matchExpressions", errs)
    reqs = [
        _parse_requirement(item, p, errs)
        for p, item in list_of_maps(items, f"{path}.matchExpressions", errs)
    ]
    return LabelSelector(
        match_labels=tuple(sorted(labels.items())),
        expressions=tuple(sorted({r for r in reqs if r is not None})),
    )


def _parse_requirement(raw: dict, path: str, errs: FieldErrors) -> Requirement | None:
    before = len(errs)
    key = get_str(raw, "key", f"{path}.key", errs, required=True)
    op = get_str(raw, "operator", f"{path}.operator", errs, required=True)
    values_raw = get_list(raw, "values", f"{path}.values", errs) or []
    values = []
    for i, v in enumerate(values_raw):
        if not isinstance(v, str):
            errs.invalid(f"{path}.values[{i}]", v, "must be a string")
            continue
        for msg in label_value_problems(v):
            errs.invalid(f"{path}.values[{i}]", v, msg)
        values.append(v)
    if key is not None:
        for msg in qualified_name_problems(key):
            errs.invalid(f"{path}.key", key, msg)
    if op is not None and op not in OPERATORS:
        errs.invalid(f"{path}.operator", op, "not a valid selector operator")
    elif op in (IN, NOT_IN) and not values_raw:
        errs.required(f"{path}.values", "must be specified when `operator` is 'In' or 'NotIn'")
    elif op in (EXISTS, DOES_NOT_EXIST) and values_raw:
        errs.forbidden(
            f"{path}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
        )
    if len(errs) != before or key is None or op is None:
        return None
    return Requirement(key, op, tuple(sorted(set(values))))


def selector_to_dict(selector: LabelSelector) -> dict[str, Any]:
    """The API form of a selector, for output and round trips."""
    out: dict[str, Any] = {}
    if selector.match_labels:
        out["matchLabels"] = dict(selector.match_labels)
    if selector.expressions:
        out["matchExpressions"] = [
            {
                "key": r.key,
                "operator": r.operator,
                **({"values": list(r.values)} if r.values else {}),
            }
            for r in selector.expressions
        ]
    return out
