"""What the real API server does to an object before storing it: defaulting,
validation (422 with field errors, through agent.model for the kinds the model knows,
lab.apiserver.service_validation for Services), status reset on create, and the update
rules clients can observe. What needs the store (a Service's ClusterIP and NodePorts)
comes in as an `allocate` step, run after defaulting and before validation, as the
real registry allocates before it validates.

Validation is strict (the default) or off. Off skips the model's parser (for modelled
kinds and a Deployment's pod template) and keeps only the checks every object gets
(a name, label syntax, a Deployment's selector), so the lab can store what a real server
would although the model refuses it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from agent.model.defaulting import apply_defaults
from agent.model.errors import FieldErrors, InvalidObjectError
from agent.model.names import check_labels, dns1123_subdomain_problems
from agent.model.parse import parse_object
from lab.apiserver import status as st
from lab.apiserver.resources import Resource
from lab.apiserver.service_defaults import default_service, prepare_create, prepare_update
from lab.apiserver.service_validation import dns1035_label_problems, validate_service

# Fills in what an object is allocated from shared ranges: (object, old object or None).
Allocate = Callable[[dict[str, Any], dict[str, Any] | None], None]

# Pod spec fields a pod update may change (the rest is immutable once created).
_MUTABLE_POD_SPEC = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def _validate(
    resource: Resource, obj: dict[str, Any], strict: bool, old: dict[str, Any] | None = None
) -> None:
    name = obj.get("metadata", {}).get("name", "")
    if resource.modelled and strict:
        try:
            parse_object(obj)
        except InvalidObjectError as exc:
            raise st.invalid(resource, name, exc.errors) from None
        return
    errs = FieldErrors()
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    if not isinstance(meta.get("name"), str) or not meta["name"]:
        errs.required("metadata.name", "name or generateName is required")
    else:
        # A Service's name is a DNS label (it names DNS records); others are subdomains.
        name_rule = (
            dns1035_label_problems if resource.kind == "Service" else dns1123_subdomain_problems
        )
        for msg in name_rule(meta["name"]):
            errs.invalid("metadata.name", meta["name"], msg)
    labels = meta.get("labels") or {}
    if isinstance(labels, dict):
        check_labels({str(k): str(v) for k, v in labels.items()}, "metadata.labels", errs)
    if resource.kind == "Deployment":
        _validate_deployment(obj, errs, strict)
    if resource.kind == "Service" and strict:
        errs.extend(validate_service(obj, old))
    if errs:
        raise st.invalid(resource, name, errs)


def _validate_deployment(obj: dict[str, Any], errs: FieldErrors, strict: bool) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        errs.invalid("spec.replicas", replicas, "must be greater than or equal to 0")
    selector = (
        (spec.get("selector") or {}).get("matchLabels")
        if isinstance(spec.get("selector"), dict)
        else None
    )
    template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector:
        errs.required("spec.selector")
    elif any(labels.get(k) != v for k, v in selector.items()):
        errs.invalid(
            "spec.template.metadata.labels", labels, "`selector` does not match template `labels`"
        )
    if strict:
        _validate_template(template, labels, errs)


def _validate_template(template: dict[str, Any], labels: Any, errs: FieldErrors) -> None:
    """The template is a pod: the model checks its containers and ports."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "template", "labels": labels},
        "spec": template.get("spec"),
    }
    try:
        parse_object(pod)
    except InvalidObjectError as exc:
        for e in exc.errors:
            errs.append(type(e)(e.kind, f"spec.template.{e.path}", e.detail, e.value))


def default_pod_template(template: Any) -> None:
    """Pod-template defaulting (Deployments embed one): a pod's, applied in place."""
    if isinstance(template, dict) and "spec" in template:
        template["spec"] = apply_defaults({"kind": "Pod", "spec": template["spec"]})["spec"]


def _default(resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    obj = apply_defaults(obj)
    if resource.kind == "Deployment" and isinstance(obj.get("spec"), dict):
        obj["spec"].setdefault("replicas", 1)
        default_pod_template(obj["spec"].get("template"))
    if resource.kind == "DaemonSet" and isinstance(obj.get("spec"), dict):
        obj["spec"].setdefault("updateStrategy", {"type": "RollingUpdate"})
        default_pod_template(obj["spec"].get("template"))
    if resource.kind == "Pod" and isinstance(obj.get("spec"), dict):
        obj["spec"].setdefault("restartPolicy", "Always")
        obj["spec"].setdefault("schedulerName", "default-scheduler")
    if resource.kind == "Service":
        default_service(obj)
    return obj


def admit_create(
    resource: Resource,
    obj: dict[str, Any],
    strict: bool = True,
    allocate: Allocate | None = None,
) -> dict[str, Any]:
    obj = _default(resource, obj)
    if resource.kind == "Pod":
        # A new pod's status is the server's, not the client's.
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif resource.kind == "Namespace":
        obj["status"] = {"phase": "Active"}
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
    elif resource.kind == "Service":
        prepare_create(obj)
    if allocate is not None:
        allocate(obj, None)
    _validate(resource, obj, strict)
    return obj


def admit_update(
    resource: Resource,
    old: dict[str, Any],
    new: dict[str, Any],
    subresource: str | None,
    strict: bool = True,
    allocate: Allocate | None = None,
) -> dict[str, Any]:
    """The object to store for an update of the main resource or its status."""
    new = _default(resource, new)
    merged = copy.deepcopy(old)
    if subresource == "status":
        # The status subresource changes status only.
        merged["status"] = new.get("status", {})
        merged["metadata"] = copy.deepcopy(old["metadata"])
    else:
        merged.update({k: v for k, v in new.items() if k != "status"})
        if "status" in old or resource.kind in ("Pod", "Node"):
            merged["status"] = old.get("status", {})
        merged["metadata"] = _kept_metadata(old["metadata"], new.get("metadata", {}))
        if resource.kind == "Pod":
            _check_pod_spec_update(resource, old, merged)
        if resource.kind == "Service":
            prepare_update(merged, old)
        if allocate is not None:
            allocate(merged, old)
        if merged.get("spec") != old.get("spec"):
            merged["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
    _validate(resource, merged, strict, None if subresource == "status" else old)
    return merged


def _kept_metadata(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Clients may change labels, annotations and the like; identity stays."""
    meta = {k: v for k, v in new.items() if k not in ("resourceVersion",)}
    for key in ("uid", "creationTimestamp", "namespace", "name", "generation", "resourceVersion"):
        if key in old:
            meta[key] = old[key]
    return meta


def _check_pod_spec_update(resource: Resource, old: dict[str, Any], merged: dict[str, Any]) -> None:
    def frozen(spec: dict[str, Any]) -> dict[str, Any]:
        spec = copy.deepcopy(spec)
        for key in _MUTABLE_POD_SPEC:
            spec.pop(key, None)
        for list_key in ("containers", "initContainers"):
            for container in spec.get(list_key) or []:
                if isinstance(container, dict):
                    container.pop("image", None)
        return spec

    if frozen(old.get("spec") or {}) != frozen(merged.get("spec") or {}):
        errs = FieldErrors()
        errs.forbidden(
            "spec",
            "pod updates may not change fields other than "
            "`spec.containers[*].image`, `spec.initContainers[*].image`, "
            "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to "
            "existing tolerations), `spec.terminationGracePeriodSeconds`",
        )
        raise st.invalid(resource, old["metadata"]["name"], errs)
