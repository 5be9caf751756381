"""`picket lab matrix`: probe every ordered pair of ready pods, in parallel, to each
pod's own address or (`--via-service`) through a Service per destination pod."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client

from lab.cluster import LabPod, list_endpoint_slices
from lab.config import LabNode
from lab.dns.records import SERVICE_NAME_LABEL
from lab.probe import ProbeResult, probe
from lab.probe_services import (
    PROBE_SELECTOR,
    ProbePort,
    WantedPort,
    probe_service_key,
    service_manifest,
    slice_manifest,
    unprogrammed,
    wanted_programming,
)

MAX_IN_FLIGHT = 256  # sockets at once: bounded so big matrices do not run out of fds
PROGRAMMED_WITHIN = 30.0  # seconds for every kube-proxy to program the probe Services


class ServiceProbeError(RuntimeError):
    pass


def probeable(pods: list[LabPod], family: int | None = None) -> list[LabPod]:
    """The pods a matrix covers: ready, with an address (of `family`, when given) and a
    namespace in the lab."""
    return [p for p in pods if p.ready and p.netns is not None and p.address(family) is not None]


async def probe_matrix(
    pods: list[LabPod],
    port: int,
    protocol: str,
    timeout: float = 1.0,
    addresses: dict[str, str] | None = None,
    family: int | None = None,
) -> dict[str, dict[str, ProbeResult]]:
    """results[src][dst] for every pair of distinct ready pods, to each pod's address of
    `family` (None: its primary one); `addresses` (pod ref -> address, e.g. a ClusterIP
    in front of the pod) replaces the pods' own, and must then name every ready pod: a
    pod probed directly would pass for one probed through its Service."""
    ready = probeable(pods, family)
    missing = [p.ref for p in ready if addresses is not None and p.ref not in addresses]
    if missing:
        raise ServiceProbeError(f"no probe Service for {', '.join(missing)}")
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def one(src: LabPod, dst: LabPod) -> ProbeResult:
        async with gate:
            target = dst.address(family) if addresses is None else addresses[dst.ref]
            assert target is not None
            return await probe(src.netns, target, port, protocol, timeout)

    pairs = [(s, d) for s in ready for d in ready if s.ref != d.ref]
    outcomes = await asyncio.gather(*(one(s, d) for s, d in pairs))
    results: dict[str, dict[str, ProbeResult]] = {p.ref: {} for p in ready}
    for (src, dst), outcome in zip(pairs, outcomes, strict=True):
        results[src.ref][dst.ref] = outcome
    return results


@contextmanager
def probe_services(
    api: client.CoreV1Api,
    pods: list[LabPod],
    ports: Sequence[ProbePort],
    state: Path,
    nodes: list[LabNode],
    families: Sequence[int] = (4,),
) -> Iterator[dict[int, dict[str, str]]]:
    """A Service per pod with `ports` and a ClusterIP of each of `families`, programmed
    by every node's kube-proxy; yields family -> pod ref -> ClusterIP, and removes every
    probe Service and slice afterwards, whatever happens."""
    remove_probe_services(api)  # what an interrupted run left
    try:
        yield create_probe_services(api, pods, ports, state, nodes, families)
    finally:
        remove_probe_services(api)


def create_probe_services(
    api: client.CoreV1Api,
    pods: list[LabPod],
    ports: Sequence[ProbePort],
    state: Path,
    nodes: list[LabNode],
    families: Sequence[int] = (4,),
) -> dict[int, dict[str, str]]:
    """A Service per pod with `ports`, created and then waited for until every node's
    kube-proxy has programmed each port on each family; returns family -> pod ref ->
    ClusterIP. Removing them is the caller's (`remove_probe_services`)."""
    cluster_ips: dict[int, dict[str, str]] = {family: {} for family in families}
    for pod in pods:
        for family, address in _create(api, pod, ports, families).items():
            cluster_ips[family][pod.ref] = address
    _wait_programmed(state, nodes, wanted_programming(pods, cluster_ips, ports))
    return cluster_ips


def _create(
    api: client.CoreV1Api, pod: LabPod, ports: Sequence[ProbePort], families: Sequence[int]
) -> dict[int, str]:
    service = service_manifest(pod, ports, families)
    namespace = service["metadata"]["namespace"]
    resp = api.create_namespaced_service(namespace, service, _preload_content=False)
    allocated = (json.loads(resp.data).get("spec") or {}).get("clusterIPs") or []
    addresses = {6 if ":" in ip else 4: ip for ip in allocated if ip and ip != "None"}
    if sorted(addresses) != sorted(families):
        raise ServiceProbeError(
            f"the API server allocated {allocated or 'no ClusterIP'} to "
            f"{namespace}/{service['metadata']['name']}, not one of each of IPv"
            + ", IPv".join(map(str, families))
        )
    discovery = client.DiscoveryV1Api(api.api_client)
    for family in families:
        discovery.create_namespaced_endpoint_slice(
            namespace, slice_manifest(pod, ports, family), _preload_content=False
        )
    return addresses


def _wait_programmed(state: Path, nodes: list[LabNode], wanted: list[WantedPort]) -> None:
    try:
        from lab.kubeproxy.status import programmed  # the lab kube-proxy's own reader
    except ImportError as exc:
        raise ServiceProbeError("this checkout has no lab kube-proxy (lab/kubeproxy)") from exc

    deadline = time.monotonic() + PROGRAMMED_WITHIN
    while True:
        missing = {n.name: unprogrammed(programmed(state, n.name), wanted) for n in nodes}
        missing = {node: keys for node, keys in missing.items() if keys}
        if not missing:
            return
        if time.monotonic() > deadline:
            detail = "; ".join(f"{node}: {', '.join(keys)}" for node, keys in missing.items())
            raise ServiceProbeError(f"kube-proxy has not programmed the probe Services: {detail}")
        time.sleep(0.1)


def remove_probe_services(api: client.CoreV1Api, refs: Iterable[str] | None = None) -> None:
    """Every probe Service and slice, or only those of the pods `refs` (NS/POD; the
    pods themselves may be gone)."""
    wanted = None if refs is None else {probe_service_key(ref) for ref in refs}
    discovery = client.DiscoveryV1Api(api.api_client)
    for piece in list_endpoint_slices(api, PROBE_SELECTOR):
        meta = piece["metadata"]
        # By the Service it belongs to: a dual-stack Service has a slice per family.
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL, meta["name"])
        if wanted is None or (meta["namespace"], service) in wanted:
            _gone(discovery.delete_namespaced_endpoint_slice, meta["name"], meta["namespace"])
    resp = api.list_service_for_all_namespaces(
        label_selector=PROBE_SELECTOR, _preload_content=False
    )
    for service in json.loads(resp.data)["items"]:
        meta = service["metadata"]
        if wanted is None or (meta["namespace"], meta["name"]) in wanted:
            _gone(api.delete_namespaced_service, meta["name"], meta["namespace"])


def _gone(delete: Callable[..., Any], name: str, namespace: str) -> None:
    try:
        delete(name, namespace, _preload_content=False)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
