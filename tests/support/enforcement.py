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
from typing import Any

from agent.model.matrix import matrix_pods, oracle_matrix
from agent.model.oracle import verdict
from agent.model.parse import parse_object
from agent.model.state import ClusterState
from lab import lab
from lab.cluster import core_api, list_pods, probe_destination, probe_source
from lab.matrix import probe_matrix
from lab.probe import probe
from tests.support.lab_cli import Kubectl

KINDS = {
    "namespaces": ("v1", "Namespace"),
    "pods": ("v1", "Pod"),
    "nodes": ("v1", "Node"),
    "networkpolicies": ("networking.k8s.io/v1", "NetworkPolicy"),
}


def live_state(kubectl: Kubectl) -> ClusterState:
    objects = []
    for plural, (api_version, kind) in KINDS.items():
        for item in kubectl.json("get", plural, "-A")["items"]:
            objects.append(parse_object({**item, "apiVersion": api_version, "kind": kind}))
    return ClusterState.from_objects(objects)


Matrix = dict[str, dict[str, bool]]
DIRECT = "direct"
VIA_SERVICE = "via service"


def observed(namespaces: list[str], port: int, protocol: str) -> Matrix:
    return observed_routes(namespaces, port, protocol, {DIRECT: None})[DIRECT]


def observed_routes(
    namespaces: list[str], port: int, protocol: str, routes: dict[str, dict[str, str] | None]
) -> dict[str, Matrix]:
    """The observed matrix along each route, all probed at once from one event loop: a
    route is None (each pod's own address) or pod ref -> the address probed instead
    (its probe Service's ClusterIP); one listing of the pods serves them all."""
    pods = list_pods(core_api(lab.kubeconfig_path()), namespaces)

    async def every_route() -> list[dict]:
        runs = (probe_matrix(pods, port, protocol.upper(), addresses=a) for a in routes.values())
        return await asyncio.gather(*runs)

    found = dict(zip(routes, asyncio.run(every_route()), strict=True))
    return {
        route: {s: {d: r.outcome != "timeout" for d, r in row.items()} for s, row in got.items()}
        for route, got in found.items()
    }


def probe_once(source: str, target: str, port: str, timeout: float = 1.0) -> str:
    """What `picket lab probe SOURCE TARGET PORT` prints: connected <who>, refused or
    timeout. TARGET is NS/POD, an address or svc/NS/NAME (its ClusterIP, PORT the
    Service port)."""
    api = core_api(lab.kubeconfig_path())
    netns, source_ip = probe_source(api, source)
    address, number, protocol = probe_destination(api, target, port)
    return str(asyncio.run(probe(netns, address, number, protocol, timeout, source_ip)))


def expected(
    kubectl: Kubectl, namespaces: list[str], port: int, protocol: str
) -> dict[str, dict[str, bool]]:
    state = live_state(kubectl)
    return oracle_matrix(state, matrix_pods(state, namespaces), protocol, port)


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
    services: dict[str, str] | None = None,
) -> list[str]:
    """Differences between the lab and the oracle once the agents have had the time to
    program the change (polled, so no timing is asserted); [] when they agree. With
    `services` (pod ref -> ClusterIP of a Service in front of it, one for every pod
    probed) each poll also probes every pair through the Services, and both matrices
    must equal the oracle's: NetworkPolicy acts below Services."""
    want = expected(kubectl, namespaces, port, protocol)
    routes = {DIRECT: None} | ({VIA_SERVICE: services} if services is not None else {})
    deadline = time.monotonic() + timeout
    while True:
        found = observed_routes(namespaces, port, protocol, routes)
        diff = [f"{route}: {d}" for route, got in found.items() for d in differences(want, got)]
        if not diff or time.monotonic() > deadline:
            return diff
        time.sleep(0.3)


def probe_allowed(source: str, target: str, port: str) -> bool:
    return not probe_once(source, target, port).startswith("timeout")


def oracle_allows(kubectl: Kubectl, source: str, target: str, port: int, protocol: str) -> bool:
    state = live_state(kubectl)
    return verdict(state, source, target, protocol, port).allowed


def apply(kubectl: Kubectl, *objects: dict[str, Any]) -> None:
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )
