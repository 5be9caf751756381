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

ClusterIPs = dict[int, dict[str, str]]  # family -> pod ref -> ClusterIP


@contextmanager
def module_services(namespaces: list[str], ports: Sequence[ProbePort]) -> Iterator[ClusterIPs]:
    """A Service with `ports` for every ready pod in `namespaces`, with a ClusterIP of
    each of the lab's families, programmed by every node's kube-proxy; yields family ->
    pod ref -> ClusterIP; removes every probe Service after."""
    api = core_api(lab.kubeconfig_path())
    pods = probeable(list_pods(api, namespaces))
    families = lab.ip_families()
    with probe_services(api, pods, ports, state_dir(), _nodes(), families) as cluster_ips:
        yield cluster_ips


def add_services(refs: Sequence[str], ports: Sequence[ProbePort]) -> ClusterIPs:
    """Services for pods created after the module's (ready, by ref); family -> pod ref
    -> ClusterIP. Remove them with `remove_services` before the pods go."""
    api = core_api(lab.kubeconfig_path())
    pods = [p for p in probeable(list_pods(api)) if p.ref in refs]
    if sorted(p.ref for p in pods) != sorted(refs):
        raise AssertionError(f"not all of {', '.join(refs)} are ready for a probe Service")
    return create_probe_services(api, pods, ports, state_dir(), _nodes(), lab.ip_families())


def merged(*found: ClusterIPs) -> ClusterIPs:
    """Several ClusterIPs maps as one (the module's and a scenario's extra pods')."""
    out: ClusterIPs = {}
    for one in found:
        for family, by_pod in one.items():
            out.setdefault(family, {}).update(by_pod)
    return out


def remove_services(refs: Sequence[str]) -> None:
    remove_probe_services(core_api(lab.kubeconfig_path()), refs)


def _nodes() -> list[LabNode]:
    return lab_nodes(lab.config().get("nodes", 1))
