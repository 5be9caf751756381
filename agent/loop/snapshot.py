"""Raw API objects -> ClusterState, parsing each object version once.

Objects the model refuses (the API server validates less strictly than we do only in
corner cases, but an agent must never crash or open traffic on one) fail closed:
- a NetworkPolicy that does not parse isolates the pods it appears to select (its
  podSelector if that parses, else the whole namespace) for the directions it names
  (both if unreadable), and admits nothing, until it is fixed;
- a Pod that does not parse keeps its identity, node, addresses and labels (when those
  are readable), so policies still select it; it loses only what failed (ports);
- a Namespace that does not parse keeps only its name label;
- a Service that does not parse is read as one that kube-proxy balances across nodes
  (NodePort, externalTrafficPolicy Cluster), and an EndpointSlice keeps every address
  and pod reference it can read, each as ready: their pods become transit endpoints,
  judged on every node (reading too many costs rules; too few would leave an ingress
  rule unenforced for outside clients).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from ipaddress import ip_address
from typing import Any

from agent.model.errors import FieldErrors, InvalidObjectError
from agent.model.objects import (
    NAMESPACE_NAME_LABEL,
    NODE_PORT,
    TRAFFIC_CLUSTER,
    EndpointSlice,
    Namespace,
    NetworkPolicy,
    Pod,
    Service,
)
from agent.model.parse import KINDS, ApiObject, parse_object
from agent.model.parse_service import parse_endpoint_slice
from agent.model.selectors import MATCH_ALL, parse_selector
from agent.model.state import ClusterState

log = logging.getLogger("picket.snapshot")


def _meta(raw: dict[str, Any]) -> dict[str, Any]:
    meta = raw.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _labels(raw: dict[str, Any]) -> dict[str, str]:
    labels = _meta(raw).get("labels")
    if isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values()):
        return {str(k): v for k, v in labels.items()}
    return {}


def fail_closed(raw: dict[str, Any]) -> ApiObject | None:
    """The safe reading of an object the model refused (see the module docstring)."""
    kind, meta = raw.get("kind"), _meta(raw)
    name, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
    if kind == "NetworkPolicy":
        spec = raw.get("spec") if isinstance(raw.get("spec"), dict) else {}
        errs = FieldErrors()
        selector = parse_selector(spec.get("podSelector", {}), "spec.podSelector", errs)
        types = spec.get("policyTypes")
        valid = isinstance(types, list) and types and set(types) <= {"Ingress", "Egress"}
        return NetworkPolicy(
            namespace,
            name,
            selector if not errs else MATCH_ALL,
            tuple(types) if valid else ("Ingress", "Egress"),
        )
    if kind == "Pod":
        spec = raw.get("spec") if isinstance(raw.get("spec"), dict) else {}
        status = raw.get("status") if isinstance(raw.get("status"), dict) else {}
        ips = []
        for entry in [{"ip": status.get("podIP")}, *(status.get("podIPs") or [])]:
            try:
                ips.append(ip_address(entry.get("ip")))
            except (AttributeError, TypeError, ValueError):
                continue
        return Pod(
            namespace,
            name,
            _labels(raw),
            spec.get("nodeName") or None,
            spec.get("hostNetwork") is True,
            tuple(dict.fromkeys(ips)),
            phase=status.get("phase") if isinstance(status.get("phase"), str) else None,
        )
    if kind == "Namespace":
        return Namespace(name, {NAMESPACE_NAME_LABEL: name})
    if kind in ("Service", "EndpointSlice"):
        return _service_fail_closed(kind, raw, namespace, name)
    return None


def _service_fail_closed(
    kind: str, raw: dict[str, Any], namespace: str, name: str
) -> Service | EndpointSlice:
    """Read so that its pods become transit endpoints rather than be left out."""
    if kind == "Service":
        return Service(namespace, name, NODE_PORT, external_traffic_policy=TRAFFIC_CLUSTER)
    salvaged = parse_endpoint_slice(raw, FieldErrors(), namespace or "default")
    ready = tuple(replace(e, ready=True) for e in salvaged.endpoints)
    return replace(salvaged, endpoints=ready)


@dataclass(frozen=True)
class _Parsed:
    version: str
    obj: ApiObject | None
    refused: bool


@dataclass
class Snapshotter:
    """Remembers parsed objects by (kind, namespace/name, resourceVersion)."""

    _parsed: dict[tuple[str, str], _Parsed] = field(default_factory=dict)

    def parse(self, kind: str, raw: dict[str, Any]) -> ApiObject | None:
        """The object as the compiler sees it (fail-closed when the model refuses it)."""
        meta = _meta(raw)
        key = (kind, f"{meta.get('namespace', '')}/{meta.get('name', '')}")
        version = str(meta.get("resourceVersion", ""))
        cached = self._parsed.get(key)
        if cached is not None and version and cached.version == version:
            return cached.obj
        raw = {"kind": kind, "apiVersion": _api_version(kind), **raw}
        try:
            parsed = _Parsed(version, parse_object(raw), False)
        except InvalidObjectError as exc:
            log.error("%s; enforcing it fail-closed", exc)
            parsed = _Parsed(version, fail_closed(raw), True)
        self._parsed[key] = parsed
        return parsed.obj

    def forget(self, kind: str, key: str) -> None:
        self._parsed.pop((kind, key), None)

    @property
    def invalid(self) -> dict[str, int]:
        """kind -> how many current objects the model refuses (enforced fail-closed)."""
        counts: dict[str, int] = {}
        for (kind, _), parsed in self._parsed.items():
            if parsed.refused:
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    def state(self, objects: dict[str, Iterable[dict[str, Any]]]) -> ClusterState:
        """`objects` maps a kind to its raw objects (as informers hold them)."""
        found: list[ApiObject] = []
        live: set[tuple[str, str]] = set()
        for kind, raws in objects.items():
            for raw in raws:
                obj = self.parse(kind, raw)
                meta = _meta(raw)
                live.add((kind, f"{meta.get('namespace', '')}/{meta.get('name', '')}"))
                if obj is not None:
                    found.append(obj)
        self._parsed = {k: v for k, v in self._parsed.items() if k in live}
        return ClusterState.from_objects(found)


def _api_version(kind: str) -> str:
    """The version the informers list `kind` at (the first the model accepts)."""
    return KINDS[kind][0][0] if kind in KINDS else "v1"
