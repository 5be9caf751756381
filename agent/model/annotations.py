"""Picket's namespace annotations: audit mode and the drop-log opt-out.

A value Picket does not know falls back to the safe side: an unknown enforcement mode
enforces (a typo must not open traffic that policy denies), an unknown drop-log value
logs. `problems` names the field so the agent can say what it ignored."""

from __future__ import annotations

from agent.model.objects import Namespace

ENFORCEMENT = "picket.io/enforcement"
ENFORCE, AUDIT = "enforce", "audit"
DROP_LOG = "picket.io/drop-log"
DROP_LOG_ON, DROP_LOG_OFF = "on", "off"


def audited(namespace: Namespace | None) -> bool:
    """Policies in an audited namespace are evaluated, not enforced: what they would
    deny passes and is logged as would-drop."""
    return namespace is not None and namespace.annotations.get(ENFORCEMENT) == AUDIT


def drop_log_enabled(namespace: Namespace | None) -> bool:
    return namespace is None or namespace.annotations.get(DROP_LOG) != DROP_LOG_OFF


def problems(namespace: Namespace) -> list[str]:
    """What is wrong with this namespace's Picket annotations, field by field."""
    found = []
    for key, allowed, fallback in (
        (ENFORCEMENT, (ENFORCE, AUDIT), ENFORCE),
        (DROP_LOG, (DROP_LOG_ON, DROP_LOG_OFF), DROP_LOG_ON),
    ):
        value = namespace.annotations.get(key)
        if value is not None and value not in allowed:
            found.append(
                f"Namespace {namespace.name}: metadata.annotations[{key}]: Unsupported value: "
                f"{value!r}: supported values: {', '.join(repr(a) for a in allowed)} "
                f"(using {fallback!r})"
            )
    return found
