"""Comparing what the lab enforces with what the oracle says, on the live cluster.

The oracle's matrix comes from the objects the API holds right now (read with the real
kubectl), never from a hand-written copy; the observed matrix comes from the probes
`picket lab matrix` runs, called in this process (a `picket` start costs a second of
imports, and the suites probe a few hundred times; the command itself is tested in
test_lab_model.py). A connection attempt counts as allowed when it connected or was
refused (the policy let it reach the pod; nothing listened), and as denied when it
timed out."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from agent.model.matrix import matrix_pods, oracle_matrix
from agent.model.oracle import verdict
from agent.model.parse import parse_object
from agent.model.state import ClusterState
from lab import lab
from lab.cluster import core_api, family_of, list_pods, probe_destination, probe_source
from lab.matrix import probe_matrix
from lab.probe import probe
from tests.support.lab_cli import Kubectl

KINDS = {
    "namespaces": ("v1", "Namespace"),
    "pods": ("v1", "Pod"),
    "nodes": ("v1", "Node"),
    "networkpolicies": ("networking.k8s.io/v1", "NetworkPolicy"),
}
KIND_OF = {kind: api_version for api_version, kind in KINDS.values()}


def live_state(kubectl: Kubectl) -> ClusterState:
    """The cluster as the API holds it now, read by one kubectl call (every kind in one
    list: the suites read it thousands of times, and a kubectl start costs a few
    hundred milliseconds)."""
    listed = kubectl.json("get", ",".join(KINDS), "-A")["items"]
    objects = [
        parse_object({**item, "apiVersion": KIND_OF[item["kind"]]})
        for item in listed
        if item.get("kind") in KIND_OF
    ]
    return ClusterState.from_objects(objects)


# A lab pod answers within milliseconds (a pair wrongly let through as fast as a pair
# rightly allowed), so half a second tells a dropped attempt from an answered one; every
# poll waits that long for its denied pairs, and the suites poll thousands of times. A
# late answer under load reads as denied: for an allowed pair `converged` polls again.
PROBE_TIMEOUT = 0.5
Matrix = dict[str, dict[str, bool]]
DIRECT = "direct"
VIA_SERVICE = "via service"


@dataclass(frozen=True)
class Route:
    """How a matrix reaches its pods: each pod's own address of `family` (None: its
    primary one), or, with `addresses`, pod ref -> the address probed instead (its
    probe Service's ClusterIP, of that family)."""

    family: int | None = None
    addresses: dict[str, str] | None = None


def observed(namespaces: list[str], port: int, protocol: str, family: int | None = None) -> Matrix:
    return observed_routes(namespaces, port, protocol, {DIRECT: Route(family)})[DIRECT]


def observed_routes(
    namespaces: list[str], port: int, protocol: str, routes: dict[str, Route]
) -> dict[str, Matrix]:
    """The observed matrix along each route, all probed at once from one event loop;
    one listing of the pods serves them all."""
    pods = list_pods(core_api(lab.kubeconfig_path()), namespaces)

    async def every_route() -> list[dict]:
        runs = (
            probe_matrix(
                pods,
                port,
                protocol.upper(),
                PROBE_TIMEOUT,
                addresses=r.addresses,
                family=r.family,
            )
            for r in routes.values()
        )
        return await asyncio.gather(*runs)

    found = dict(zip(routes, asyncio.run(every_route()), strict=True))
    return {
        route: {s: {d: r.outcome != "timeout" for d, r in row.items()} for s, row in got.items()}
        for route, got in found.items()
    }


def probe_once(
    source: str, target: str, port: str, timeout: float = 1.0, family: int | None = None
) -> str:
    """What `picket lab probe SOURCE TARGET PORT [--family F]` prints: connected
    <who>, refused or timeout. TARGET is NS/POD, an address or svc/NS/NAME (its
    ClusterIP, PORT the Service port)."""
    api = core_api(lab.kubeconfig_path())
    address, number, protocol = probe_destination(api, target, port, family)
    netns, source_ip = probe_source(api, source, family_of(address))
    return str(asyncio.run(probe(netns, address, number, protocol, timeout, source_ip)))


def lab_families() -> tuple[int, ...]:
    """The running lab's pod address families, the primary first."""
    return lab.ip_families()


def differences(want: dict, got: dict) -> list[str]:
    out = []
    for src in sorted(set(want) | set(got)):
        for dst in sorted(set(want.get(src, {})) | set(got.get(src, {}))):
            w, g = want.get(src, {}).get(dst), got.get(src, {}).get(dst)
            if w != g:
                out.append(f"{src} -> {dst}: oracle {w}, lab {g}")
    return out


def converged(
    kubectl: Kubectl,
    namespaces: list[str],
    port: int,
    protocol: str,
    timeout: float = 20.0,
    services: dict[int, dict[str, str]] | None = None,
) -> list[str]:
    """Differences between the lab and the oracle once the agents have had the time to
    program the change (polled, so no timing is asserted); [] when they agree. Every
    poll probes every pair on each of the lab's address families, each matrix held
    against the oracle's for that family. With `services` (family -> pod ref ->
    ClusterIP of a Service in front of it, one for every pod probed) each poll also
    probes every pair through the Services on each family, and those matrices too must
    equal the oracle's: NetworkPolicy acts below Services."""
    families = lab_families()
    routes = {f"{DIRECT} IPv{f}": Route(f) for f in families}
    for family, by_pod in (services or {}).items():
        routes[f"{VIA_SERVICE} IPv{family}"] = Route(family, by_pod)
    state = live_state(kubectl)  # once: the state the change left, for every route
    pods = matrix_pods(state, namespaces)
    want = {
        name: oracle_matrix(state, pods, protocol, port, route.family)
        for name, route in routes.items()
    }
    deadline = time.monotonic() + timeout
    while True:
        found = observed_routes(namespaces, port, protocol, routes)
        diff = [
            f"{route}: {d}" for route, got in found.items() for d in differences(want[route], got)
        ]
        if not diff or time.monotonic() > deadline:
            return diff
        time.sleep(0.3)


def is_address(text: str) -> bool:
    """Whether a probe end is written as an IP address (which names its own family)."""
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def probe_allowed(source: str, target: str, port: str, family: int | None = None) -> bool:
    return not probe_once(source, target, port, family=family).startswith("timeout")


def oracle_allows(
    kubectl: Kubectl,
    source: str,
    target: str,
    port: int,
    protocol: str,
    family: int | None = None,
) -> bool:
    state = live_state(kubectl)
    return verdict(state, source, target, protocol, port, family).allowed


def apply(kubectl: Kubectl, *objects: dict[str, Any]) -> None:
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )
