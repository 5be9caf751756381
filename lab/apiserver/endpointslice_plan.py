"""What the EndpointSlice controller changes for one Service: the slices to create,
update and delete so that they hold exactly the Service's endpoints, moving as few
endpoints as it can (upstream's reconciler.go):

- an endpoint stays in the slice it is in; a slice whose endpoints all went is deleted;
- new endpoints fill slices that change anyway (fullest first), then the unchanged
  slice closest to full that takes them all, then new slices of up to 100;
- a Service with no endpoints keeps one empty placeholder slice;
- a create that meets a delete becomes an update of that slice (its name is kept);
- a Service the controller does not fill loses the slices it made (see
  endpointslice_content.py for why this departs from upstream).

Pure, and deterministic: pods are taken in name order."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from lab.apiserver.endpointslice_content import (
    MAX_ENDPOINTS_PER_SLICE,
    EndpointKey,
    PortKey,
    address_types,
    endpoint_key,
    endpoint_ports,
    new_slice,
    owned_by,
    pod_endpoint,
    port_key,
    same_endpoint,
    selects,
    served,
    slice_labels,
    stored_form,
    sub,
)


@dataclass
class SlicePlan:
    create: list[dict[str, Any]] = field(default_factory=list)
    update: list[dict[str, Any]] = field(default_factory=list)
    delete: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.create or self.update or self.delete)


@dataclass
class _Group:
    """The endpoints that share one resolved port list, and so one set of slices."""

    ports: list[dict[str, Any]]
    endpoints: dict[EndpointKey, dict[str, Any]] = field(default_factory=dict)


def plan_slices(
    service: dict[str, Any],
    pods: list[dict[str, Any]],
    existing: list[dict[str, Any]],
    zones: dict[str, str] | None = None,
) -> SlicePlan:
    """`existing`: the slices labelled with the Service's name and managed by the
    controller. `zones`: node name to its topology.kubernetes.io/zone label."""
    plan = SlicePlan()
    if not served(service):
        plan.delete = list(existing)
        return plan
    types = address_types(service)
    plan.delete = [s for s in existing if s.get("addressType") not in types]
    for address_type in types:
        groups = _groups(service, pods, address_type, zones or {})
        mine = [s for s in existing if s.get("addressType") == address_type]
        _plan_address_type(service, address_type, groups, mine, plan)
    for body in plan.create + plan.update:
        stored_form(body)
    return plan


def _groups(
    service: dict[str, Any], pods: list[dict[str, Any]], address_type: str, zones: dict[str, str]
) -> dict[PortKey, _Group]:
    groups: dict[PortKey, _Group] = {}
    for pod in sorted(pods, key=lambda p: str(sub(p, "metadata").get("name"))):
        if not selects(service, pod):
            continue
        endpoint = pod_endpoint(service, pod, address_type, zones)
        if endpoint is None:
            continue
        ports = endpoint_ports(service, pod)
        group = groups.setdefault(port_key(ports), _Group(ports))
        group.endpoints[endpoint_key(endpoint)] = endpoint
    return groups


def _plan_address_type(
    service: dict[str, Any],
    address_type: str,
    groups: dict[PortKey, _Group],
    existing: list[dict[str, Any]],
    plan: SlicePlan,
) -> None:
    here = SlicePlan(delete=[s for s in existing if not owned_by(s, service)])
    by_ports: dict[PortKey, list[dict[str, Any]]] = {}
    for slice_ in existing:
        if owned_by(slice_, service):
            by_ports.setdefault(port_key(slice_.get("ports")), []).append(slice_)
    for key, group in groups.items():
        _fill(service, address_type, group, by_ports.pop(key, []), here)
    for stale in by_ports.values():
        here.delete.extend(stale)
    if len(here.delete) == len(existing) and not here.create:
        placeholder = new_slice(service, address_type, [], [])
        if len(here.delete) == 1 and _same_placeholder(here.delete[0], placeholder):
            here.delete.clear()  # the placeholder is there already
        else:
            here.create.append(placeholder)
    _reuse_names(service, here)
    plan.create += here.create
    plan.update += here.update
    plan.delete += here.delete


def _fill(
    service: dict[str, Any],
    address_type: str,
    group: _Group,
    slices: list[dict[str, Any]],
    here: SlicePlan,
) -> None:
    """Reconcile the slices of one port list with the endpoints that belong in them."""
    remaining = dict(group.endpoints)
    changed, unchanged = _keep_in_place(service, slices, remaining, here)
    queue = list(remaining.values())
    for slice_ in sorted(changed, key=lambda s: -len(s["endpoints"])):
        queue = _top_up(slice_, queue)
    while queue:
        target = None
        if len(queue) < MAX_ENDPOINTS_PER_SLICE:
            target = _slice_to_fill(unchanged, len(queue))
        if target is None:
            target = new_slice(service, address_type, group.ports, [])
            here.create.append(target)
        else:
            unchanged.remove(target)
            target = _with(
                target, list(target.get("endpoints") or []), target["metadata"]["labels"]
            )
            changed.append(target)
        queue = _top_up(target, queue)
    here.update.extend(changed)


def _keep_in_place(
    service: dict[str, Any],
    slices: list[dict[str, Any]],
    remaining: dict[EndpointKey, dict[str, Any]],
    here: SlicePlan,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each endpoint still wanted stays in its slice (taken out of `remaining`); a slice
    left empty goes. Returns the slices that change and those that do not."""
    changed: list[dict[str, Any]] = []
    unchanged: list[dict[str, Any]] = []
    for slice_ in slices:
        before = [e for e in slice_.get("endpoints") or [] if isinstance(e, dict)]
        kept, edited = [], False
        for old in before:
            new = remaining.pop(endpoint_key(old), None)
            if new is not None:
                kept.append(new)
                edited = edited or not same_endpoint(new, old)
        labels, labels_changed = slice_labels(slice_, service)
        if not kept and before:
            here.delete.append(slice_)
        elif edited or len(kept) != len(before) or labels_changed:
            changed.append(_with(slice_, kept, labels))
        else:
            unchanged.append(slice_)
    return changed, unchanged


def _with(slice_: dict[str, Any], endpoints: list[dict[str, Any]], labels: dict) -> dict[str, Any]:
    out = copy.deepcopy(slice_)
    out["endpoints"] = endpoints
    out["metadata"]["labels"] = dict(labels)
    return out


def _top_up(slice_: dict[str, Any], queue: list[dict[str, Any]]) -> list[dict[str, Any]]:
    room = MAX_ENDPOINTS_PER_SLICE - len(slice_["endpoints"])
    slice_["endpoints"].extend(queue[: max(room, 0)])
    return queue[max(room, 0) :]


def _slice_to_fill(slices: list[dict[str, Any]], count: int) -> dict[str, Any] | None:
    """The slice closest to full that still takes `count` more endpoints."""
    fits = [s for s in slices if len(s.get("endpoints") or []) + count <= MAX_ENDPOINTS_PER_SLICE]
    return max(fits, key=lambda s: len(s.get("endpoints") or []), default=None)


def _same_placeholder(slice_: dict[str, Any], placeholder: dict[str, Any]) -> bool:
    meta, want = sub(slice_, "metadata"), placeholder["metadata"]
    return (
        meta.get("namespace") == want["namespace"]
        and (meta.get("labels") or {}) == want["labels"]
        and slice_.get("addressType") == placeholder["addressType"]
        and not slice_.get("ports")
        and not slice_.get("endpoints")
    )


def _reuse_names(service: dict[str, Any], here: SlicePlan) -> None:
    """A slice about to be deleted takes the content of one about to be created."""
    for old in list(here.delete):
        if not here.create:
            return
        if not owned_by(old, service) or old.get("addressType") != here.create[-1]["addressType"]:
            continue
        new = here.create.pop()
        body = copy.deepcopy(old)
        body["metadata"]["labels"] = new["metadata"]["labels"]
        body["ports"], body["endpoints"] = new["ports"], new["endpoints"]
        here.update.append(body)
        here.delete.remove(old)
