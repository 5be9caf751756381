"""Validation errors shaped like the Kubernetes API server's field errors.

An error names the object (kind and namespace/name), the field path and the reason,
and renders like `kubectl` shows a 422: `spec.ingress[0].ports[0].endPort: Invalid
value: 79: must be greater than or equal to `port``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# The `reason` strings of metav1.StatusCause, as the API server sends them.
REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
FORBIDDEN = "FieldValueForbidden"
DUPLICATE = "FieldValueDuplicate"
TOO_MANY = "FieldValueTooMany"

_TITLES = {
    REQUIRED: "Required value",
    INVALID: "Invalid value",
    NOT_SUPPORTED: "Unsupported value",
    FORBIDDEN: "Forbidden",
    DUPLICATE: "Duplicate value",
    TOO_MANY: "Too many",
}
_SHOWS_VALUE = {INVALID, NOT_SUPPORTED, DUPLICATE}


def _render_value(value: object) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except TypeError:
        return repr(value)


@dataclass(frozen=True)
class FieldError:
    """One problem with one field: `kind` is a StatusCause reason constant above."""

    kind: str
    path: str
    detail: str = ""
    value: Any = None

    def __str__(self) -> str:
        text = f"{self.path}: {_TITLES[self.kind]}"
        if self.kind in _SHOWS_VALUE:
            text += f": {_render_value(self.value)}"
        if self.detail:
            text += f": {self.detail}"
        return text


class FieldErrors(list[FieldError]):
    """An accumulator, so that one object reports all its problems at once."""

    def required(self, path: str, detail: str = "") -> None:
        self.append(FieldError(REQUIRED, path, detail))

    def invalid(self, path: str, value: object, detail: str) -> None:
        self.append(FieldError(INVALID, path, detail, value))

    def not_supported(self, path: str, value: object, supported: list[str]) -> None:
        choices = ", ".join(json.dumps(s) for s in supported)
        self.append(FieldError(NOT_SUPPORTED, path, f"supported values: {choices}", value))

    def forbidden(self, path: str, detail: str) -> None:
        self.append(FieldError(FORBIDDEN, path, detail))

    def duplicate(self, path: str, value: object) -> None:
        self.append(FieldError(DUPLICATE, path, "", value))


class InvalidObjectError(ValueError):
    """An API object failed validation. `ref` is `namespace/name` (or `name`)."""

    def __init__(self, kind: str, ref: str, errors: list[FieldError]) -> None:
        self.kind = kind
        self.ref = ref
        self.errors = list(errors)
        details = "; ".join(str(e) for e in self.errors)
        super().__init__(f"{kind} {ref or '(unnamed)'} is invalid: {details}")

    @property
    def name(self) -> str:
        return self.ref.rsplit("/", 1)[-1]
