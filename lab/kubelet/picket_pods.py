"""Pods whose containers run a Picket image (`localhost/picket:<tag>`, lab/images.py):
the kubelet runs their containers as processes, the way a kubelet drives a runtime, so
that the DaemonSets of daemonset/ run in the lab as they run on a node.

Per pod, a supervisor task runs the init containers one after the other to completion
(retrying a failed one with back-off), then starts the containers, restarts one that
exits (restartPolicy Always), runs their startup, readiness and liveness probes (httpGet,
tcpSocket, exec inside the container) and reports Ready as the probes say. Deleting the
pod stops its containers (SIGTERM, SIGKILL after terminationGracePeriodSeconds); a
replacement from the same owner on the same node starts only once they are gone, as the
DaemonSet controller waits for a deleted pod to be gone before it creates the next. The
pods must be hostNetwork: the lab has Picket's images for node agents only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from lab import images, processes
from lab.config import API_ADDRESS, API_PORT, LabNode
from lab.kubelet.container_spec import LaunchSpec, SpecError, launch_spec
from lab.kubelet.status import running_status

log = logging.getLogger("picket.lab.kubelet.picket")
PREFIX = "ctr-"
TICK = 0.25  # seconds between two looks at a pod's processes and probes
INIT_TIMEOUT = 300.0
BACKOFF_MAX = 10.0


def runs_picket(pod: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return any(images.is_picket(c.get("image") or "") for c in containers)


def process_name(uid: str, container: str) -> str:
    return f"{PREFIX}{uid.replace('-', '')[:12]}-{container}"


@dataclass
class Probe:
    """One container probe's schedule and its run of results."""

    spec: dict[str, Any]
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))


@dataclass
class Running:
    """A container of a pod: its launch spec, probes and state."""

    container: dict[str, Any]
    spec: LaunchSpec
    process: str
    restarts: int = 0
    pid: int | None = None  # of its process, once started (or found still running)
    started: bool = False  # its startup probe passed (or it has none)
    ready: bool = False
    restart_at: float | None = None
    probes: dict[str, Probe] = field(default_factory=dict)


class PicketPods:
    """The Picket pods of one kubelet, by pod UID."""

    def __init__(self, api: client.CoreV1Api, state_dir: Path) -> None:
        self.api = api
        self.state_dir = state_dir
        self._supervisors: dict[str, asyncio.Task] = {}
        self._pods: dict[str, dict[str, Any]] = {}  # uid -> the pod, as started
        self._items: dict[str, list[Running]] = {}  # uid -> its containers, once started
        # (node, owner uid) -> held while a pod of that owner on that node stops.
        self._slots: dict[tuple[str, str], asyncio.Lock] = {}

    def pod_dir(self, uid: str) -> Path:
        return self.state_dir / "pods" / uid.replace("-", "")[:12]

    def start(self, uid: str, obj: dict[str, Any], node: LabNode) -> None:
        if uid in self._supervisors:
            return
        self._pods[uid] = obj
        task = asyncio.create_task(self._supervise(uid, obj, node))
        self._supervisors[uid] = task

    async def stop(self, uid: str) -> None:
        """Stop the pod's containers; the owner's next pod on the node waits for it."""
        obj = self._pods.pop(uid, None)
        if obj is None:
            return
        node = (obj.get("spec") or {}).get("nodeName") or ""
        async with self._slot(node, obj):
            task = self._supervisors.pop(uid, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            grace = float((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            spec = obj.get("spec") or {}
            started = {item.process: item.pid for item in self._items.pop(uid, [])}
            names = [process_name(uid, c["name"]) for c in spec.get("containers") or []]
            await asyncio.gather(
                *(
                    asyncio.to_thread(
                        processes.stop, self.state_dir, name, grace, started.get(name)
                    )
                    for name in names
                )
            )
        self._remove_files(uid)

    async def collect(self, live_uids: set[str]) -> None:
        """Containers whose pod is gone (deleted while the kubelet was down)."""
        live = {uid.replace("-", "")[:12] for uid in live_uids}
        for name in processes.names(self.state_dir):
            if name.startswith(PREFIX) and name[len(PREFIX) :].split("-")[0] not in live:
                await asyncio.to_thread(processes.stop, self.state_dir, name)

    def _slot(self, node: str, obj: dict[str, Any]) -> asyncio.Lock:
        owners = obj["metadata"].get("ownerReferences") or [{"uid": obj["metadata"]["uid"]}]
        return self._slots.setdefault((node, owners[0]["uid"]), asyncio.Lock())

    def _remove_files(self, uid: str) -> None:
        with contextlib.suppress(OSError):
            subprocess.run(["rm", "-rf", str(self.pod_dir(uid))], check=False)

    # The pod's life.

    async def _supervise(self, uid: str, obj: dict[str, Any], node: LabNode) -> None:
        ref = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        async with self._slot(node.name, obj):
            pass  # a predecessor of the same owner on this node has stopped
        while True:
            try:
                main = await self._start_containers(uid, obj, node)
                break
            except (SpecError, KeyError, OSError) as exc:
                # ErrImageNeverPull and the like: said in the status, tried again.
                log.warning("pod %s cannot run in the lab: %s", ref, exc)
                await self._report(obj, str(node.address), False, str(exc), [])
                await asyncio.sleep(2.0)
        log.info("pod %s: containers started on %s", ref, node.name)
        reported: tuple | None = None
        while True:
            now = time.monotonic()
            for item in main:
                await self._look_after(uid, item, node, now)
            state = tuple((r.ready, r.restarts, r.started) for r in main)
            if state != reported:
                ready = all(r.ready for r in main)
                await self._report(obj, str(node.address), ready, "", main)
                reported = state
            await asyncio.sleep(TICK)

    async def _start_containers(
        self, uid: str, obj: dict[str, Any], node: LabNode
    ) -> list[Running]:
        self._prepare(uid, obj)
        host_ip = str(node.address)
        env = self._kubelet_env(node)
        inits = obj["spec"].get("initContainers") or []
        main = [
            Running(c, launch_spec(obj, c, env, host_ip, host_ip), process_name(uid, c["name"]))
            for c in obj["spec"]["containers"]
        ]
        self._items[uid] = main
        # A restarted kubelet finds the containers still running: they carry on.
        if not all(processes.running(self.state_dir, r.process) for r in main):
            for container in inits:
                await self._run_init(
                    uid, obj, launch_spec(obj, container, env, host_ip, host_ip), node
                )
        for item in main:
            item.probes = {
                kind: Probe(item.container[kind])
                for kind in ("startupProbe", "readinessProbe", "livenessProbe")
                if kind in item.container
            }
            item.started = "startupProbe" not in item.probes
            item.ready = "readinessProbe" not in item.probes and item.started
            item.pid = processes.running(self.state_dir, item.process)
            if item.pid is None:
                self._launch(uid, item, node)
        return main

    def _prepare(self, uid: str, obj: dict[str, Any]) -> None:
        """The pod's service account files and emptyDir volumes."""
        account = self.pod_dir(uid) / "serviceaccount"
        account.mkdir(parents=True, exist_ok=True)
        (account / "token").write_text((self.state_dir / "token").read_text().strip())
        (account / "ca.crt").write_text((self.state_dir / "ca.crt").read_text())
        (account / "namespace").write_text(obj["metadata"]["namespace"])
        for volume in obj["spec"].get("volumes") or []:
            if "emptyDir" in volume:
                where = self.pod_dir(uid) / "volumes" / volume["name"]
                where.mkdir(parents=True, exist_ok=True)
                where.chmod(0o777)

    @staticmethod
    def _kubelet_env(node: LabNode) -> dict[str, str]:
        # In a cluster these name the `kubernetes` Service's ClusterIP; the lab's API
        # server has no Service in front of it, so they name it directly.
        return {
            "KUBERNETES_SERVICE_HOST": str(API_ADDRESS),
            "KUBERNETES_SERVICE_PORT": str(API_PORT),
            "HOSTNAME": node.name,
        }

    def _spec_file(self, uid: str, spec: LaunchSpec) -> Path:
        process = process_name(uid, spec.name)
        folder = self.state_dir / "containers" / process
        folder.mkdir(parents=True, exist_ok=True)
        image = images.resolve(self.state_dir, spec.image)
        if image is None:
            raise SpecError(
                f"container {spec.name}: image {spec.image} is not in the lab "
                "(imagePullPolicy Never; `picket lab image --tag` imports a checkout)"
            )
        body = asdict(spec) | {
            "process": process,
            "root": str(folder / "root"),
            "image": str(image),
            "venv": sys.prefix,
            "volumes": str(self.pod_dir(uid) / "volumes"),
            "service_account": str(self.pod_dir(uid) / "serviceaccount"),
        }
        path = folder / "spec.json"
        path.write_text(json.dumps(body))
        return path

    async def _run_init(
        self, uid: str, obj: dict[str, Any], spec: LaunchSpec, node: LabNode
    ) -> None:
        """To completion, tried again with back-off until it succeeds (a deleted pod's
        supervisor is cancelled, and the container killed with it)."""
        ref = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        backoff = 1.0
        log_file = self.state_dir / "logs" / f"{process_name(uid, spec.name)}.log"
        while True:
            argv = [sys.executable, "-m", "lab.kubelet.container", str(self._spec_file(uid, spec))]
            with open(log_file, "ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    "nsenter",
                    f"--net=/run/netns/{node.netns}",
                    *argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=processes.ROOT,
                    start_new_session=True,
                )
            try:
                status = await asyncio.wait_for(proc.wait(), INIT_TIMEOUT)
            except TimeoutError:
                status = -1
            finally:
                if proc.returncode is None:  # its whole session: bash -c runs children
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
            if status == 0:
                return
            log.warning("pod %s: init container %s exited %d", ref, spec.name, status)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _launch(self, uid: str, item: Running, node: LabNode) -> None:
        argv = ["-m", "lab.kubelet.container", str(self._spec_file(uid, item.spec))]
        item.pid = processes.start(self.state_dir, item.process, argv, netns=node.netns)
        for probe in item.probes.values():
            probe.next_at = time.monotonic() + float(probe.spec.get("initialDelaySeconds", 0))
            probe.successes = probe.failures = 0

    async def _look_after(self, uid: str, item: Running, node: LabNode, now: float) -> None:
        """Restart an exited container (with back-off); run the probes that are due."""
        # By pid, not by command line: a process still exec'ing has none to recognise.
        if item.pid is None or not processes.alive(item.pid):
            item.ready = False
            item.started = "startupProbe" not in item.probes
            if item.restart_at is None:
                delay = min(2.0**item.restarts, BACKOFF_MAX)
                item.restart_at = now + delay
                log.warning("container %s exited; restarting in %.0f s", item.process, delay)
            elif now >= item.restart_at:
                item.restart_at = None
                item.restarts += 1
                self._launch(uid, item, node)
            return
        kinds = ["startupProbe"] if not item.started else ["readinessProbe", "livenessProbe"]
        for kind in kinds:
            probe = item.probes.get(kind)
            if probe is None or now < probe.next_at:
                continue
            probe.next_at = now + probe.period
            passed = await asyncio.to_thread(self._probe, item, probe, str(node.address))
            probe.successes, probe.failures = (
                (probe.successes + 1, 0) if passed else (0, probe.failures + 1)
            )
            threshold = int(probe.spec.get("failureThreshold", 3))
            if kind == "startupProbe" and passed:
                item.started = True
                item.ready = "readinessProbe" not in item.probes
            elif kind == "readinessProbe":
                if passed and probe.successes >= int(probe.spec.get("successThreshold", 1)):
                    item.ready = True
                elif probe.failures >= threshold:
                    item.ready = False
            elif not passed and probe.failures >= threshold:
                log.warning("container %s fails its %s: restarting it", item.process, kind)
                await asyncio.to_thread(processes.stop, self.state_dir, item.process, 5.0, item.pid)

    def _probe(self, item: Running, probe: Probe, address: str) -> bool:
        spec = probe.spec
        try:
            if "httpGet" in spec:
                get = spec["httpGet"]
                port = self._port(item, get["port"])
                url = f"http://{get.get('host') or address}:{port}{get.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=probe.timeout) as answer:
                    return 200 <= answer.status < 400
            if "tcpSocket" in spec:
                port = self._port(item, spec["tcpSocket"]["port"])
                with socket.create_connection((address, port), timeout=probe.timeout):
                    return True
            if "exec" in spec:
                pid = item.pid
                if pid is None:
                    return False
                inside = ["nsenter", f"--target={pid}", "--mount", "--net", "--root", "--wd"]
                done = subprocess.run(
                    [*inside, *spec["exec"]["command"]],
                    capture_output=True,
                    timeout=max(probe.timeout, 1.0),
                    check=False,
                    env=item.spec.env,
                )
                return done.returncode == 0
        except (OSError, subprocess.TimeoutExpired, ValueError):
            return False
        return False

    @staticmethod
    def _port(item: Running, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for entry in item.container.get("ports") or []:
            if entry.get("name") == port:
                return int(entry["containerPort"])
        raise ValueError(f"container {item.spec.name} has no port named {port!r}")

    async def _report(
        self,
        obj: dict[str, Any],
        host_ip: str,
        ready: bool,
        message: str,
        running: list[Running],
    ) -> None:
        meta = obj["metadata"]
        if message:
            status: dict[str, Any] = {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "LabCannotRun",
                        "message": message,
                    }
                ],
            }
        else:
            status = running_status(obj, (host_ip,), (host_ip,), ready=ready)
            for entry, item in zip(status["containerStatuses"], running, strict=True):
                entry["ready"] = item.ready
                entry["restartCount"] = item.restarts
                entry["started"] = item.started
        with contextlib.suppress(client.ApiException):  # the pod may be gone already
            await asyncio.to_thread(
                self.api.patch_namespaced_pod_status,
                meta["name"],
                meta["namespace"],
                {"status": status},
            )
