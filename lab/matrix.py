"""`picket lab matrix`: probe every ordered pair of ready pods, in parallel."""

from __future__ import annotations

import asyncio

from lab.cluster import LabPod
from lab.probe import ProbeResult, probe

MAX_IN_FLIGHT = 256  # sockets at once: bounded so big matrices do not run out of fds


async def probe_matrix(
    pods: list[LabPod], port: int, protocol: str, timeout: float = 1.0
) -> dict[str, dict[str, ProbeResult]]:
    """results[src][dst] for every pair of distinct ready pods."""
    ready = [p for p in pods if p.ready and p.netns is not None]
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def one(src: LabPod, dst: LabPod) -> ProbeResult:
        async with gate:
            assert dst.ip is not None
            return await probe(src.netns, dst.ip, port, protocol, timeout)

    pairs = [(s, d) for s in ready for d in ready if s.ref != d.ref]
    outcomes = await asyncio.gather(*(one(s, d) for s, d in pairs))
    results: dict[str, dict[str, ProbeResult]] = {p.ref: {} for p in ready}
    for (src, dst), outcome in zip(pairs, outcomes, strict=True):
        results[src.ref][dst.ref] = outcome
    return results
