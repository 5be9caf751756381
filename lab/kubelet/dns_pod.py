"""Pods whose container image is the lab's dnsmasq (`picket.lab/dnsmasq`): instead of
the usual responder on port 53, the kubelet runs the DNS pod process (`python -m
lab.dns`) for them, which runs dnsmasq inside the pod's network namespace. The pod is
reported Ready once dnsmasq answers; the process is stopped when the pod goes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from lab import processes

DNSMASQ_IMAGE = "picket.lab/dnsmasq"  # any tag: picket.lab/dnsmasq:2.90 is the same
DNS_PORTS = {(53, "UDP"), (53, "TCP")}
READY_WITHIN = 20.0  # seconds for the DNS pod process to report dnsmasq answering
PREFIX = "dns-"


def _repository(image: str) -> str:
    name = image.split("@", 1)[0]
    head, _, tail = name.rpartition(":")
    return head if head and "/" not in tail else name


def runs_dnsmasq(pod: dict[str, Any]) -> bool:
    containers = (pod.get("spec") or {}).get("containers") or []
    return any(_repository(c.get("image") or "") == DNSMASQ_IMAGE for c in containers)


def responder_ports(pod: dict[str, Any], ports: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The ports the usual responder serves: all but 53 in a dnsmasq pod."""
    return [p for p in ports if p not in DNS_PORTS] if runs_dnsmasq(pod) else ports


def process_name(uid: str) -> str:
    return PREFIX + uid.replace("-", "")[:12]


class DnsPods:
    """The DNS pod processes of one kubelet, by pod UID."""

    def __init__(self, state_dir: Path, kubeconfig: str) -> None:
        self.state_dir = state_dir
        self.kubeconfig = kubeconfig

    def data_dir(self, uid: str) -> Path:
        return self.state_dir / "dns" / process_name(uid)

    async def start(self, uid: str, ref: str, netns: str) -> None:
        """Start the pod's DNS process (unless it already runs: a restarted kubelet
        finds it still there) and wait until dnsmasq answers."""
        name = process_name(uid)
        pid = processes.running(self.state_dir, name)
        if pid is None:
            (self.data_dir(uid) / "ready").unlink(missing_ok=True)
            argv = ["-m", "lab.dns", "--kubeconfig", self.kubeconfig, "--netns", netns]
            argv += ["--data-dir", str(self.data_dir(uid)), "--pod", ref]
            pid = processes.start(self.state_dir, name, argv)
        await self._ready(uid, ref, pid)

    async def _ready(self, uid: str, ref: str, pid: int) -> None:
        deadline = time.monotonic() + READY_WITHIN
        while not (self.data_dir(uid) / "ready").exists():
            # By pid, not by command line: a process that is still exec'ing has none yet.
            if not processes.alive(pid) or time.monotonic() > deadline:
                log_file = self.state_dir / "logs" / f"{process_name(uid)}.log"
                raise RuntimeError(f"DNS pod {ref}: dnsmasq does not answer; see {log_file}")
            await asyncio.sleep(0.05)

    async def stop(self, uid: str) -> None:
        await asyncio.to_thread(processes.stop, self.state_dir, process_name(uid))

    async def collect(self, live_uids: set[str]) -> None:
        """Stop the DNS processes of pods that are gone (deleted while we were down)."""
        live = {process_name(uid) for uid in live_uids}
        for name in processes.names(self.state_dir):
            if name.startswith(PREFIX) and name not in live:
                await asyncio.to_thread(processes.stop, self.state_dir, name)
