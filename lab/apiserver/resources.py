"""The resources the lab API server serves, and its discovery documents.

Namespaces, Pods, Nodes and NetworkPolicies are validated with agent.model; Deployments
and DaemonSets drive the lab's controllers of them; Services are validated, get ClusterIPs and
NodePorts, and drive the EndpointSlice controller; every other kind listed here is
accepted and stored with no effect, so the manifests users already have apply cleanly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VERSION_INFO = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-picket-lab",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # The model validates and defaults these kinds (a 422 for what the API would refuse).
    modelled: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Unique name, as `kubectl api-resources` spells it: `pods`, `deployments.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """`Pod`, `NetworkPolicy.networking.k8s.io`: the form error messages use."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


def _r(
    gv: str,
    plural: str,
    kind: str,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    sub: tuple[str, ...] = (),
    modelled: bool = False,
) -> Resource:
    group, _, version = gv.rpartition("/")
    return Resource(group, version, plural, kind.lower(), kind, namespaced, short, sub, modelled)


RESOURCES: tuple[Resource, ...] = (
    _r("v1", "namespaces", "Namespace", False, ("ns",), ("status",), modelled=True),
    _r("v1", "pods", "Pod", True, ("po",), ("status", "binding"), modelled=True),
    _r("v1", "nodes", "Node", False, ("no",), ("status",), modelled=True),
    _r(
        "networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True, ("netpol",), modelled=True
    ),
    _r("apps/v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale")),
    _r("apps/v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",)),
    _r("discovery.k8s.io/v1", "endpointslices", "EndpointSlice", True),
    _r("v1", "services", "Service", True, ("svc",), ("status",)),
    # Stored, no effect.
    _r("v1", "configmaps", "ConfigMap", True, ("cm",)),
    _r("v1", "secrets", "Secret", True),
    _r("v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    _r("v1", "endpoints", "Endpoints", True, ("ep",)),
    _r("v1", "events", "Event", True, ("ev",)),
    _r("v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",)),
    _r("v1", "limitranges", "LimitRange", True, ("limits",)),
    _r("v1", "resourcequotas", "ResourceQuota", True, ("quota",)),
    _r("networking.k8s.io/v1", "ingresses", "Ingress", True, ("ing",)),
    _r("apps/v1", "statefulsets", "StatefulSet", True, ("sts",), ("status",)),
    _r("apps/v1", "replicasets", "ReplicaSet", True, ("rs",), ("status",)),
    _r("batch/v1", "jobs", "Job", True, (), ("status",)),
    _r("batch/v1", "cronjobs", "CronJob", True, ("cj",)),
    _r("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",)),
    _r("rbac.authorization.k8s.io/v1", "roles", "Role", True),
    _r("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", True),
    _r("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False),
    _r("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _r("scheduling.k8s.io/v1", "priorityclasses", "PriorityClass", False, ("pc",)),
)

BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}


def group_versions() -> list[tuple[str, str]]:
    """(group, version) pairs in a stable order, core first."""
    return list(dict.fromkeys((r.group, r.version) for r in RESOURCES))


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_group_list() -> dict[str, Any]:
    groups = []
    for group, version in group_versions():
        if not group:
            continue
        gv = {"groupVersion": f"{group}/{version}", "version": version}
        groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str) -> dict[str, Any] | None:
    for entry in api_group_list()["groups"]:
        if entry["name"] == group:
            return {"kind": "APIGroup", "apiVersion": "v1", **entry}
    return None


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    found = [r for r in RESOURCES if (r.group, r.version) == (group, version)]
    if not found:
        return None
    entries: list[dict[str, Any]] = []
    for r in found:
        entries.append(
            {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": list(ALL_VERBS),
                **({"shortNames": list(r.short_names)} if r.short_names else {}),
            }
        )
        for sub in r.subresources:
            verbs = ["create"] if sub == "binding" else ["get", "patch", "update"]
            kind = {"binding": "Binding", "scale": "Scale"}.get(sub, r.kind)
            entries.append(
                {
                    "name": f"{r.plural}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": kind,
                    "verbs": verbs,
                }
            )
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": entries}
