"""The truth table of the oracle over a set of pods, in the lab matrix's JSON shape."""

from __future__ import annotations

from collections.abc import Iterable

from agent.model.objects import Pod
from agent.model.oracle import verdict
from agent.model.state import ClusterState


def matrix_pods(state: ClusterState, namespaces: Iterable[str] | None = None) -> list[Pod]:
    """Pods that take part in a matrix: every endpoint pod, or those of `namespaces`."""
    wanted = set(namespaces) if namespaces else None
    return [p for p in state.endpoint_pods if wanted is None or p.namespace in wanted]


def oracle_matrix(
    state: ClusterState, pods: list[Pod], protocol: str, port: int, family: int | None = None
) -> dict[str, dict[str, bool]]:
    """results[src][dst] for every ordered pair of distinct pods, over `family` (None:
    the pods' primary addresses)."""
    return {
        src.ref: {
            dst.ref: verdict(state, src, dst, protocol, port, family).allowed
            for dst in pods
            if dst.ref != src.ref
        }
        for src in pods
    }


def matrix_document(
    results: dict[str, dict[str, bool]], protocol: str, port: int
) -> dict[str, object]:
    """`{"port": P, "protocol": "TCP", "results": {...}}`, as `picket lab matrix --json`."""
    return {"port": port, "protocol": protocol, "results": results}
