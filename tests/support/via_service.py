"""Probe Services for suites that compare every matrix through Services too: the ones
`picket lab matrix --via-service` makes (a selector-less Service per destination pod
with a user's EndpointSlice, lab/probe_services.py), created once for a module with
every port it probes instead of once per matrix, so a comparison costs its extra
probes only."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from lab import lab
from lab.cluster import core_api, list_pods
from lab.config import LabNode, lab_nodes, state_dir
from lab.matrix import create_probe_services, probe_services, probeable, remove_probe_services
from lab.probe_services import ProbePort


@contextmanager
def module_services(namespaces: list[str], ports: Sequence[ProbePort]) -> Iterator[dict[str, str]]:
    """A Service with `ports` for every ready pod in `namespaces`, programmed by every
    node's kube-proxy; yields pod ref -> ClusterIP; removes every probe Service after."""
    api = core_api(lab.kubeconfig_path())
    pods = probeable(list_pods(api, namespaces))
    with probe_services(api, pods, ports, state_dir(), _nodes()) as cluster_ips:
        yield cluster_ips


def add_services(refs: Sequence[str], ports: Sequence[ProbePort]) -> dict[str, str]:
    """Services for pods created after the module's (ready, by ref); pod ref ->
    ClusterIP. Remove them with `remove_services` before the pods go."""
    api = core_api(lab.kubeconfig_path())
    pods = [p for p in probeable(list_pods(api)) if p.ref in refs]
    if sorted(p.ref for p in pods) != sorted(refs):
        raise AssertionError(f"not all of {', '.join(refs)} are ready for a probe Service")
    return create_probe_services(api, pods, ports, state_dir(), _nodes())


def remove_services(refs: Sequence[str]) -> None:
    remove_probe_services(core_api(lab.kubeconfig_path()), refs)


def _nodes() -> list[LabNode]:
    return lab_nodes(lab.config().get("nodes", 1))
