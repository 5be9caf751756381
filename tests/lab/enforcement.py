"""Comparing what the lab enforces with what the oracle says, on the live cluster.

The oracle's matrix comes from the objects the API holds right now (read with the real
kubectl), never from a hand-written copy; the observed matrix comes from `picket lab
matrix`. A connection attempt counts as allowed when it connected or was refused (the
policy let it reach the pod; nothing listened), and as denied when it timed out."""

from __future__ import annotations

import json
import time
from typing import Any

from agent.model.matrix import matrix_pods, oracle_matrix
from agent.model.oracle import verdict
from agent.model.parse import parse_object
from agent.model.state import ClusterState
from tests.lab.conftest import Kubectl, picket

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


def observed(namespaces: list[str], port: int, protocol: str) -> dict[str, dict[str, bool]]:
    out = picket(
        "lab",
        "matrix",
        "--json",
        "--outcomes",
        "--namespaces",
        ",".join(namespaces),
        "--port",
        str(port),
        "--protocol",
        protocol,
    ).stdout
    results = json.loads(out)["results"]
    return {s: {d: o != "timeout" for d, o in row.items()} for s, row in results.items()}


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
    kubectl: Kubectl, namespaces: list[str], port: int, protocol: str, timeout: float = 20.0
) -> list[str]:
    """Differences between the lab and the oracle once the agents have had the time to
    program the change (polled, so no timing is asserted); [] when they agree."""
    want = expected(kubectl, namespaces, port, protocol)
    deadline = time.monotonic() + timeout
    while True:
        diff = differences(want, observed(namespaces, port, protocol))
        if not diff or time.monotonic() > deadline:
            return diff
        time.sleep(0.3)


def probe_allowed(source: str, target: str, port: str) -> bool:
    out = picket("lab", "probe", source, target, port, check=False).stdout.strip()
    return not out.startswith("timeout")


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
