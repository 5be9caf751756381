"""Driving the lab as its users do: the `picket` and `kubectl` commands, the 3x3 model,
and polling for API state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.config import pod_netns

ROOT = Path(__file__).parents[2]
PICKET = str(Path(sys.executable).parent / "picket")
MODEL = ROOT / "tests" / "lab" / "manifests" / "model.yaml"


def picket(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [PICKET, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"picket {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def drop_records(since: float, *filters: str) -> list[dict]:
    """What `picket drops --json` reads back from the journal, written since `since`
    (a time.time())."""
    out = picket("drops", "--json", "--since", f"@{int(since) - 1}", "-n", "100000", *filters)
    records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return [r for r in records if int(r["__REALTIME_TIMESTAMP"]) >= since * 1e6]


class Kubectl:
    def __init__(self, kubeconfig: str) -> None:
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}

    def __call__(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["kubectl", *args],
            capture_output=True,
            text=True,
            env=self.env,
            input=stdin,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc

    def json(self, *args: str) -> dict:
        return json.loads(self(*args, "-o", "json").stdout)


@contextmanager
def model_lab(backend: str, ip_families: str = "4,6") -> Iterator[Kubectl]:
    """A fresh 2-node lab with `backend`'s agents, pods of `ip_families` (dual-stack by
    default, as the lab is) and the 3x3 model ready; down after."""
    picket("lab", "down")
    up = picket("lab", "up", "--nodes", "2", "--backend", backend, "--ip-families", ip_families)
    kubectl = Kubectl(up.stdout.strip().splitlines()[-1])
    try:
        kubectl("apply", "-f", str(MODEL))
        kubectl("wait", "--for=condition=Ready", "pod", "--all", "-A", "--timeout=60s")
        yield kubectl
    finally:
        picket("lab", "down")


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll `condition` until it holds or `timeout` passes (for API state, not speed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def matrix(*args: str) -> dict:
    return json.loads(picket("lab", "matrix", "--json", *args).stdout)


@dataclass(frozen=True)
class LabPod:
    """A running pod as the tests address it: where it runs and its namespace."""

    ref: str
    ip: str  # status.podIP: the primary family's
    node: str
    netns: str
    ips: tuple[str, ...] = ()  # status.podIPs: every family's

    def address(self, family: int) -> str:
        """The pod's address of `family`."""
        return next(ip for ip in self.ips if (6 if ":" in ip else 4) == family)

    @property
    def namespace(self) -> str:
        return self.ref.split("/")[0]

    @property
    def name(self) -> str:
        return self.ref.split("/")[1]


def create_pod_at(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    node: str,
    ip: str,
    ports: tuple[tuple[int, str], ...] = ((80, "TCP"),),
) -> None:
    """A new pod labelled pod=<name> on `node` at address `ip` (the lab kubelet's
    lab.picket.io/ip annotation), serving `ports`; not waited for."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"pod": name},
            "annotations": {"lab.picket.io/ip": ip},
        },
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "c",
                    "image": "agnhost",
                    "ports": [{"containerPort": p, "protocol": proto} for p, proto in ports],
                }
            ],
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))


def lab_pods(kubectl: Kubectl) -> dict[str, LabPod]:
    """Every pod of the lab by `namespace/name` (placement is the lab's: read it)."""
    out = {}
    for p in kubectl.json("get", "pods", "-A")["items"]:
        ref = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        out[ref] = LabPod(
            ref,
            p["status"]["podIP"],
            p["spec"]["nodeName"],
            pod_netns(p["metadata"]["uid"]),
            tuple(a["ip"] for a in p["status"].get("podIPs", [])),
        )
    return out
