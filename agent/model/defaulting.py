"""The API server's defaulting, applied to raw dicts, so that a manifest means here
what it means in a cluster. Malformed shapes are left alone for validation to report."""

from __future__ import annotations

import copy
from typing import Any

from agent.model.objects import EGRESS, INGRESS, NAMESPACE_NAME_LABEL, TCP


def apply_defaults(obj: dict[str, Any]) -> dict[str, Any]:
    """A defaulted deep copy of `obj` (Namespace, Pod or NetworkPolicy; others as-is)."""
    out = copy.deepcopy(obj)
    kind = out.get("kind")
    if kind == "Namespace":
        _default_namespace(out)
    elif kind == "NetworkPolicy":
        _default_network_policy(out)
    elif kind == "Pod":
        _default_pod_spec(out.get("spec"))
    return out


def _default_namespace(ns: dict[str, Any]) -> None:
    meta = ns.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return
    labels = meta.get("labels")
    if labels is None:
        labels = meta["labels"] = {}
    if isinstance(labels, dict):
        # Every namespace carries its own name as a label, so selectors can pick it.
        labels[NAMESPACE_NAME_LABEL] = meta["name"]


def _default_network_policy(policy: dict[str, Any]) -> None:
    spec = policy.get("spec")
    if not isinstance(spec, dict):
        return
    if not spec.get("policyTypes"):
        # policyTypes omitted: Ingress always, Egress only if there are egress rules.
        types = [INGRESS]
        if isinstance(spec.get("egress"), list) and spec["egress"]:
            types.append(EGRESS)
        spec["policyTypes"] = types
    for direction in ("ingress", "egress"):
        rules = spec.get(direction)
        for rule in rules if isinstance(rules, list) else []:
            ports = rule.get("ports") if isinstance(rule, dict) else None
            _default_protocols(ports)


def _default_protocols(ports: Any) -> None:
    """A port entry without protocol means TCP."""
    for port in ports if isinstance(ports, list) else []:
        if isinstance(port, dict) and port.get("protocol") is None:
            port["protocol"] = TCP


def _default_pod_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        return
    for key in ("containers", "initContainers"):
        containers = spec.get(key)
        for container in containers if isinstance(containers, list) else []:
            if isinstance(container, dict):
                _default_protocols(container.get("ports"))
