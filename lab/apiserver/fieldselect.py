"""The `fieldSelector` query parameter (apimachinery's `fields.ParseSelector`) and the
fields each resource can be selected by (the field label conversions of the API).

Syntax: comma-separated terms, all of which must hold; each `field=value`,
`field==value` or `field!=value`. The field is everything before the first operator,
taken literally (upstream trims no whitespace, and neither do we). In a value, `\\,`,
`\\=` and `\\\\` stand for `,`, `=` and `\\`; an unescaped `,` or `=` is an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_META = ("metadata.name", "metadata.namespace")

SUPPORTED_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": (
        *_META,
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "nodes": (*_META, "spec.unschedulable"),
    "namespaces": (*_META, "status.phase"),
    "secrets": (*_META, "type"),
    # `kubectl describe` finds an object's events by these.
    "events": (
        *_META,
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
}
DEFAULT_FIELDS = _META

# Fields whose selector name is not their path in the object (core/v1 events).
_PATHS = {"source": "source.component", "reportingComponent": "reportingController"}
# Upstream reads these from Go bools, so an absent one is "false", not "".
_BOOLEAN_FIELDS = frozenset({"spec.hostNetwork", "spec.unschedulable"})

_OPERATORS = ("!=", "==", "=")  # "==" before "=" so that no "=" is left on the value
_ESCAPABLE = "\\,="


class FieldSelectorError(ValueError):
    """A field selector that does not parse, or names a field the resource lacks."""


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    operator: str  # "=" (for both "=" and "==") or "!="
    value: str

    def matches(self, obj: dict[str, Any]) -> bool:
        equal = field_value(obj, self.field) == self.value
        return equal if self.operator == "=" else not equal

    def __str__(self) -> str:
        return f"{self.field}{self.operator}{escape_value(self.value)}"


def parse_field_selector(text: str) -> list[FieldRequirement]:
    """The requirements of a field selector, in order; "" selects everything."""
    reqs = []
    for term in _split_terms(text):
        if not term:
            continue  # upstream skips empty terms, so "a=b,,c=d" and "a=b," are fine
        field, op, raw = _split_term(term)
        if not op:
            raise FieldSelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        reqs.append(FieldRequirement(field, "!=" if op == "!=" else "=", _unescape(raw)))
    return reqs


def format_field_selector(reqs: Iterable[FieldRequirement]) -> str:
    """The text form of requirements, escaping values so that it parses back."""
    return ",".join(str(r) for r in reqs)


def escape_value(value: str) -> str:
    return "".join("\\" + c if c in _ESCAPABLE else c for c in value)


def _split_terms(text: str) -> list[str]:
    # A backslash protects the next character, so "\," does not end a term.
    terms, start, escaped = [], 0, False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str]:
    for i in range(len(term)):
        for op in _OPERATORS:
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return term, "", ""


def _unescape(raw: str) -> str:
    out, escaped = [], False
    for c in raw:
        if escaped:
            if c not in _ESCAPABLE:
                raise FieldSelectorError(
                    f"invalid field selector: invalid escape sequence: \\{c} in value {raw!r}"
                )
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c in ",=":
            raise FieldSelectorError(
                f"invalid field selector: unescaped character in value: '{c}' in {raw!r}"
            )
        else:
            out.append(c)
    if escaped:
        raise FieldSelectorError(f"invalid field selector: invalid escape sequence: \\ in {raw!r}")
    return "".join(out)


def supported_fields(resource: str) -> tuple[str, ...]:
    """The selectable fields of a resource (by plural); any other resource has the
    metadata fields only, like upstream's default conversion."""
    return SUPPORTED_FIELDS.get(resource, DEFAULT_FIELDS)


def check_fields(resource: str, reqs: Iterable[FieldRequirement]) -> None:
    """Raise FieldSelectorError, with upstream's message, for the first field the
    resource cannot be selected by."""
    allowed = supported_fields(resource)
    for r in reqs:
        if r.field not in allowed:
            raise FieldSelectorError(f"field label not supported: {r.field}")


def field_value(obj: dict[str, Any], field: str) -> str:
    """A field's value as the selector compares it: strings as they are, booleans as
    "true"/"false", numbers in decimal; absent (or not a scalar) as ""."""
    node: Any = obj
    for part in _PATHS.get(field, field).split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None and field in _BOOLEAN_FIELDS:
        node = False
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, str | int | float):
        return str(node)
    return ""


def matches(obj: dict[str, Any], reqs: Iterable[FieldRequirement]) -> bool:
    """Whether an object satisfies every requirement (no requirements: it does)."""
    return all(r.matches(obj) for r in reqs)
