"""The lab's agents run with extra flags for a test (shrunk map or set capacities), then
as the lab runs them again."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from lab import processes
from lab.config import lab_nodes, state_dir
from lab.lab import agent_args, agent_name, kubeconfig_path


@contextmanager
def agents_with(backend: str, *flags: str, nodes: int = 2) -> Iterator[None]:
    """Every node's agent restarted with `flags` added to the lab's own arguments. Each
    first removes what its predecessor programmed (`--cleanup`), so that the test starts
    from nothing (ipsets keep the size they were made with); after the body, the same
    again without the flags."""
    _restart(backend, flags, nodes)
    try:
        yield
    finally:
        _restart(backend, (), nodes)


def _restart(backend: str, flags: tuple[str, ...], nodes: int) -> None:
    state = state_dir()
    for node in lab_nodes(nodes):
        processes.stop(state, agent_name(node))
        cleanup = ["agent", "--node", node.name, "--backend", backend, "--cleanup"]
        processes.run_once([sys.executable, "-m", "agent.cli", *cleanup], node.netns)
        args = agent_args(
            backend,
            node=node.name,
            kubeconfig=str(kubeconfig_path(state)),
            address=str(node.address),
        )
        processes.start(state, agent_name(node), ["-m", "agent.cli", *args, *flags], node.netns)
