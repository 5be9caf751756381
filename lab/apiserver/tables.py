"""Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for with
`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.

Columns and cells follow upstream's printers (k8s.io/kubernetes/pkg/printers/
internalversion/printers.go). Like the API server, every row carries the wide
(priority 1) cells too: kubectl hides those columns unless `-o wide`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agent.model.errors import FieldErrors
from agent.model.selectors import parse_selector
from lab.apiserver.printing import AGE, NAME, Column, age, human_duration, name, since, sub
from lab.apiserver.selector_syntax import format_label_selector
from lab.apiserver.service_printing import SERVICE_CELLS, SERVICE_COLUMNS

__all__ = ["COLUMNS", "human_duration", "since", "to_table"]

TABLE_API_VERSION = "meta.k8s.io/v1"
INCLUDE_OBJECT = ("None", "Metadata", "Object")

_COLUMN_KEYS = ("name", "type", "priority", "description")

COLUMNS: dict[str, list[Column]] = {
    "pods": [
        NAME,
        ("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
        ("Status", "string", 0, "The aggregate status of the containers in this pod."),
        ("Restarts", "string", 0, "The number of times the containers have been restarted."),
        AGE,
        ("IP", "string", 1, "The IP address allocated to the pod."),
        ("Node", "string", 1, "The node the pod is bound to."),
        ("Nominated Node", "string", 1, "The node the pod may be scheduled onto."),
        ("Readiness Gates", "string", 1, "The readiness gates that are true."),
    ],
    "namespaces": [NAME, ("Status", "string", 0, "The status of the namespace"), AGE],
    "nodes": [
        NAME,
        ("Status", "string", 0, "The status of the node"),
        ("Roles", "string", 0, "The roles of the node"),
        AGE,
        ("Version", "string", 0, "Kubelet Version reported by the node."),
        ("Internal-IP", "string", 1, "The node's internal address."),
        ("External-IP", "string", 1, "The node's external address."),
        ("OS-Image", "string", 1, "OS Image reported by the node."),
        ("Kernel-Version", "string", 1, "Kernel Version reported by the node."),
        ("Container-Runtime", "string", 1, "ContainerRuntime Version reported by the node."),
    ],
    "networkpolicies": [
        NAME,
        ("Pod-Selector", "string", 0, "The pods to which this policy applies."),
        AGE,
    ],
    "deployments": [
        NAME,
        ("Ready", "string", 0, "Number of the pod with ready state"),
        ("Up-to-date", "string", 0, "Total number of pods with the desired template."),
        ("Available", "string", 0, "Total number of available pods."),
        AGE,
        ("Containers", "string", 1, "Names of each container in the template."),
        ("Images", "string", 1, "Images referenced by each container in the template."),
        ("Selector", "string", 1, "Label selector for pods."),
    ],
    **SERVICE_COLUMNS,
}
DEFAULT_COLUMNS = [NAME, AGE]


def to_table(
    resource: str,
    objects: list[dict],
    include_object: str = "Metadata",
    now: datetime | None = None,
    list_meta: dict | None = None,
) -> dict:
    """The Table for objects of a resource (by plural). `list_meta` gives the
    Table's resourceVersion and continue (for a single object, pass its
    resourceVersion, as upstream does). `include_object` is the `includeObject`
    parameter: "None", "Metadata" (a PartialObjectMetadata) or "Object"."""
    if include_object not in INCLUDE_OBJECT:
        raise ValueError(f"includeObject must be None, Metadata or Object, not {include_object!r}")
    when = now or datetime.now(UTC)
    cells = _CELLS.get(resource, _default_cells)
    meta_keys = ("resourceVersion", "continue", "remainingItemCount")
    return {
        "kind": "Table",
        "apiVersion": TABLE_API_VERSION,
        "metadata": {k: v for k, v in (list_meta or {}).items() if k in meta_keys},
        # kubectl prefixes the cells of the column of format "name" with the kind
        # ("pod/web") when it prints several kinds at once.
        "columnDefinitions": [
            dict(zip(_COLUMN_KEYS, c, strict=True), format="name" if c[0] == "Name" else "")
            for c in COLUMNS.get(resource, DEFAULT_COLUMNS)
        ],
        "rows": [_row(resource, obj, cells(obj, when), include_object) for obj in objects],
    }


def _row(resource: str, obj: dict, cells: list[Any], include_object: str) -> dict:
    row: dict[str, Any] = {"cells": cells}
    phase = sub(obj, "status").get("phase")
    if resource == "pods" and phase in ("Succeeded", "Failed"):
        # Upstream marks finished pods, so that clients can tell them apart.
        message = "The pod has completed successfully."
        row["conditions"] = [
            {"type": "Completed", "status": "True", "reason": phase, "message": message}
        ]
    if include_object == "Metadata":
        row["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": TABLE_API_VERSION,
            "metadata": copy.deepcopy(sub(obj, "metadata")),
        }
    elif include_object == "Object":
        row["object"] = copy.deepcopy(obj)
    return row


def _default_cells(obj: dict, now: datetime) -> list[Any]:
    return [name(obj), age(obj, now)]


def _namespace_cells(obj: dict, now: datetime) -> list[Any]:
    return [name(obj), sub(obj, "status").get("phase", ""), age(obj, now)]


def _pod_cells(pod: dict, now: datetime) -> list[Any]:
    spec, status = sub(pod, "spec"), sub(pod, "status")
    reason, ready, restarts, last_restart = _pod_state(pod)
    restarts_text = str(restarts)
    if restarts and last_restart:
        restarts_text = f"{restarts} ({since(last_restart, now)} ago)"
    ips = status.get("podIPs") or [{}]
    gates = spec.get("readinessGates") or []
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    true_gates = sum(conditions.get(g.get("conditionType")) == "True" for g in gates)
    return [
        name(pod),
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        restarts_text,
        age(pod, now),
        ips[0].get("ip") or status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        f"{true_gates}/{len(gates)}" if gates else "<none>",
    ]


def _pod_state(pod: dict) -> tuple[str, int, int, str]:
    """Status text, ready containers, restarts and the latest restart time, worked
    out from the container statuses like upstream's printPod (init containers aside)."""
    status = sub(pod, "status")
    conditions = status.get("conditions") or []
    reason = status.get("reason") or status.get("phase") or ""
    gated = [c for c in conditions if c.get("type") == "PodScheduled"]
    if any(c.get("reason") == "SchedulingGated" for c in gated):
        reason = "SchedulingGated"
    ready = restarts = 0
    last_restart, running = "", False
    # Upstream walks them backwards, so the first container's reason wins.
    for cs in reversed(status.get("containerStatuses") or []):
        restarts += cs.get("restartCount", 0)
        finished = sub(cs, "lastState", "terminated").get("finishedAt") or ""
        last_restart = max(last_restart, finished)  # RFC 3339 UTC times sort as strings
        state = sub(cs, "state")
        waiting, terminated = state.get("waiting") or {}, state.get("terminated")
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated is not None:
            reason = terminated.get("reason") or _exit_text(terminated)
        elif cs.get("ready") and "running" in state:
            running, ready = True, ready + 1
    if reason == "Completed" and running:
        pod_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        reason = "Running" if pod_ready else "NotReady"
    if sub(pod, "metadata").get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif status.get("phase") not in ("Succeeded", "Failed"):
            reason = "Terminating"
    return reason, ready, restarts, last_restart


def _exit_text(terminated: dict) -> str:
    if terminated.get("signal"):
        return f"Signal:{terminated['signal']}"
    return f"ExitCode:{terminated.get('exitCode', 0)}"


def _node_cells(node: dict, now: datetime) -> list[Any]:
    meta, spec, status = sub(node, "metadata"), sub(node, "spec"), sub(node, "status")
    info = sub(status, "nodeInfo")
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    states = ["Ready" if ready[-1].get("status") == "True" else "NotReady"] if ready else []
    states = states or ["Unknown"]
    if spec.get("unschedulable"):
        states.append("SchedulingDisabled")
    labels, prefix = meta.get("labels") or {}, "node-role.kubernetes.io/"
    roles = {k.removeprefix(prefix) for k in labels if k.startswith(prefix) and k != prefix}
    roles |= {v for k, v in labels.items() if k == "kubernetes.io/role" and v}
    addresses = status.get("addresses") or []

    def address(kind: str) -> str:
        return next((a.get("address") for a in addresses if a.get("type") == kind), "<none>")

    return [
        name(node),
        ",".join(states),
        ",".join(sorted(roles)) or "<none>",
        age(node, now),
        info.get("kubeletVersion", ""),
        address("InternalIP"),
        address("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def _selector_text(raw: Any) -> str:
    errs = FieldErrors()
    selector = parse_selector(raw if raw is not None else {}, "selector", errs)
    return "<error>" if errs else format_label_selector(selector)


def _policy_cells(policy: dict, now: datetime) -> list[Any]:
    pod_selector = _selector_text(sub(policy, "spec").get("podSelector"))
    return [name(policy), pod_selector or "<none>", age(policy, now)]


def _deployment_cells(deploy: dict, now: datetime) -> list[Any]:
    spec, status = sub(deploy, "spec"), sub(deploy, "status")
    # The API server defaults spec.replicas to 1; the printer sees the defaulted value.
    desired = spec.get("replicas", 1)
    containers = sub(spec, "template", "spec").get("containers") or []
    return [
        name(deploy),
        f"{status.get('readyReplicas', 0)}/{desired}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        age(deploy, now),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        _selector_text(spec.get("selector")),
    ]


_CELLS: dict[str, Callable[[dict, datetime], list[Any]]] = {
    "pods": _pod_cells,
    "namespaces": _namespace_cells,
    "nodes": _node_cells,
    "networkpolicies": _policy_cells,
    "deployments": _deployment_cells,
    **SERVICE_CELLS,
}
