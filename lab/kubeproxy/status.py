"""The status file a lab kube-proxy writes after each successful apply, and what other
lab parts use to wait until a Service is programmed on a node:

    <state-dir>/kubeproxy/<node>.json
    {"services": {"<ns>/<name>": {"clusterIP": "198.19.240.20",
                                  "ports": {"80/TCP": {"nodePort": 30080 or null,
                                                       "endpoints": ["ip:port", ...]}}}}}

`endpoints` are those the node DNATs to (empty: the Service is rejected). Services
with no cluster IP yet, and headless ones, are absent: nothing is programmed for them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLL = 0.05  # seconds between reads while waiting


def status_path(state_dir: Path, node: str) -> Path:
    return Path(state_dir) / "kubeproxy" / f"{node}.json"


def write_status(state_dir: Path, node: str, services: dict[str, Any]) -> None:
    """Atomically (tmp + rename): a reader sees the old file or the new one, whole."""
    path = status_path(state_dir, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"services": services}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def programmed(state_dir: Path, node: str) -> dict[str, Any] | None:
    """The services programmed on `node` ("services" of its file); None before the
    node's kube-proxy first applied its rules."""
    try:
        return json.loads(status_path(state_dir, node).read_text())["services"]
    except (OSError, ValueError, KeyError):
        return None


def endpoints(services: dict[str, Any] | None, service: str, port: str) -> list[str] | None:
    """The endpoints programmed for `service` (ns/name) on `port` (e.g. "80/TCP"), or
    None if that service port is not programmed."""
    entry = ((services or {}).get(service) or {}).get("ports", {}).get(port)
    return None if entry is None else entry["endpoints"]


def wait_programmed(
    state_dir: Path,
    nodes: list[str],
    condition: Callable[[dict[str, Any]], bool],
    timeout: float = 30.0,
) -> dict[str, dict[str, Any]]:
    """Until every node's programmed services satisfy `condition`; returns them by node.
    Raises TimeoutError naming the nodes still waited for."""
    deadline = time.monotonic() + timeout
    while True:
        found = {node: programmed(state_dir, node) for node in nodes}
        waiting = [n for n, s in found.items() if s is None or not condition(s)]
        if not waiting:
            return {n: s for n, s in found.items() if s is not None}
        if time.monotonic() >= deadline:
            raise TimeoutError(f"kube-proxy status not reached on {', '.join(waiting)}")
        time.sleep(POLL)


def wait_endpoints(
    state_dir: Path,
    nodes: list[str],
    service: str,
    port: str,
    wanted: list[str] | None,
    timeout: float = 30.0,
) -> None:
    """Until `service`'s `port` is programmed with exactly `wanted` (sorted ip:port;
    [] for rejected; None for not programmed at all) on every node."""
    want = None if wanted is None else sorted(wanted)
    wait_programmed(state_dir, nodes, lambda s: endpoints(s, service, port) == want, timeout)
