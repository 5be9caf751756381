"""The merge strategies of strategic merge patch, by kind: which lists merge by which
key, copied from the `patchStrategy`/`patchMergeKey` tags of k8s.io/api core/v1, apps/v1,
batch/v1 and networking/v1. A list not in the table is atomic (replaced by the patch's).
"""

from __future__ import annotations

from collections.abc import Mapping

FieldPath = tuple[str, ...]

# The strategy of a list of primitives that merges as a set union (upstream patchStrategy:"merge"
# without a patchMergeKey). Any other strategy value is the merge key of a list of objects.
MERGE = "merge"


def _object_meta(prefix: FieldPath) -> dict[FieldPath, str]:
    return {(*prefix, "finalizers"): MERGE, (*prefix, "ownerReferences"): "uid"}


def _container_lists(prefix: FieldPath) -> dict[FieldPath, str]:
    # Container and EphemeralContainerCommon carry the same tags for these four lists.
    keys = {"ports": "containerPort", "env": "name", "volumeMounts": "mountPath"}
    keys["volumeDevices"] = "devicePath"
    table: dict[FieldPath, str] = {}
    for containers in ("containers", "initContainers", "ephemeralContainers"):
        table[(*prefix, containers)] = "name"
        for field, key in keys.items():
            table[(*prefix, containers, field)] = key
    return table


def _pod_spec(prefix: FieldPath) -> dict[FieldPath, str]:
    table = _container_lists(prefix)
    table[(*prefix, "volumes")] = "name"
    table[(*prefix, "imagePullSecrets")] = "name"
    table[(*prefix, "hostAliases")] = "ip"
    table[(*prefix, "schedulingGates")] = "name"
    table[(*prefix, "resourceClaims")] = "name"
    table[(*prefix, "topologySpreadConstraints")] = "topologyKey"
    # tolerations, readinessGates, containers[].resizePolicy: atomic upstream.
    return table


def _pod_template(prefix: FieldPath) -> dict[FieldPath, str]:
    return _object_meta((*prefix, "metadata")) | _pod_spec((*prefix, "spec"))


_METADATA = _object_meta(("metadata",))
_CONDITIONS = {("status", "conditions"): "type"}


def _workload() -> dict[FieldPath, str]:
    # A fresh table per kind, so that editing one kind's entries leaves the others alone.
    return _METADATA | _pod_template(("spec", "template")) | _CONDITIONS


PATCH_STRATEGIES: dict[str, dict[FieldPath, str]] = {
    "Pod": _METADATA
    | _pod_spec(("spec",))
    | _CONDITIONS
    | {
        ("status", "podIPs"): "ip",
        ("status", "hostIPs"): "ip",
        ("status", "resourceClaimStatuses"): "name",
        # containerStatuses, initContainerStatuses, ephemeralContainerStatuses: atomic.
    },
    "PodTemplate": _METADATA | _pod_template(("template",)),
    "ReplicationController": _workload(),
    "Deployment": _workload(),
    "ReplicaSet": _workload(),
    "StatefulSet": _workload(),
    "DaemonSet": _workload(),
    "Job": _workload(),
    "CronJob": _METADATA | _pod_template(("spec", "jobTemplate", "spec", "template")),
    "Node": _METADATA
    | _CONDITIONS
    | {
        ("spec", "podCIDRs"): MERGE,
        # spec.taints carries no patch tags upstream: atomic, so `kubectl taint k-` can remove.
        ("status", "addresses"): "type",
    },
    "Service": _METADATA | _CONDITIONS | {("spec", "ports"): "port"},
    "Namespace": _METADATA | _CONDITIONS,
    # NetworkPolicy: ingress, egress, policyTypes, from, to, ports are all atomic upstream.
    "NetworkPolicy": dict(_METADATA),
}


def strategies_for(kind: str) -> Mapping[FieldPath, str]:
    # Every kind has ObjectMeta, so an unknown kind still merges finalizers and ownerReferences.
    return PATCH_STRATEGIES.get(kind, _METADATA)
