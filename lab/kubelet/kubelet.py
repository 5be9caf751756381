"""The lab kubelet: one process for all lab nodes, talking to the API with the real
`kubernetes` client as a kubelet and a scheduler would.

It registers the nodes, binds unscheduled pods (nodeSelector on kubernetes.io/hostname,
else the node with the fewest pods), gives each pod a network namespace wired by the
CNI plugins inside its node's namespace, serves its containerPorts, and reports status.
Deleting a pod stops its responders and calls CNI DEL. Relabelling changes nothing.
Pods of the lab's dnsmasq image get a DNS server instead of a responder on 53
(lab/kubelet/dns_pod.py); the containers of pods of Picket's images run as processes
(lab/kubelet/picket_pods.py), so the DaemonSets of daemonset/ run in the lab.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from kubernetes import client
from pyroute2 import netns

from agent.model.errors import InvalidObjectError
from agent.model.objects import Pod
from agent.model.parse import parse_object
from lab import cni, topology
from lab.config import EXTERNAL_NS, IP_FAMILIES_DEFAULT, LabNode, VirtualNode, pod_netns
from lab.kubelet import dns_pod, picket_pods
from lab.kubelet.responder import ANY_ADDRESS, ANY_ADDRESSES, Responder
from lab.kubelet.status import node_body, running_status
from lab.kubelet.virtual import VirtualAddresses
from lab.kubelet.watcher import SYNCED, PodWatcher

log = logging.getLogger("picket.lab.kubelet")
HOSTNAME_LABEL = "kubernetes.io/hostname"
# A pod annotated with an address gets that one from host-local (CNI_ARGS IP=...), if it
# is free and in the node's range: how the tests put a new pod at a deleted pod's address
# (host-local hands addresses out round-robin, so reuse would otherwise take a whole range).
REQUESTED_IP = "lab.picket.io/ip"


@dataclass
class Sandbox:
    node: LabNode
    netns: str | None  # None: hostNetwork (the node's namespace)
    ips: tuple[str, ...]  # one per family, the primary first
    responder: Responder
    cni_result: dict[str, Any] | None


class Kubelet:
    def __init__(
        self,
        api: client.CoreV1Api,
        nodes: list[LabNode],
        state_dir: Path,
        virtual: list[VirtualNode] | None = None,
        kubeconfig: str | None = None,
        families: tuple[int, ...] = IP_FAMILIES_DEFAULT,
    ) -> None:
        self.api = api
        self.nodes = {n.name: n for n in nodes}
        self.families = families
        self.virtual = VirtualAddresses(virtual or [], families)
        self.state_dir = state_dir
        self.sandboxes: dict[str, Sandbox] = {}
        self.pods: dict[str, dict[str, Any]] = {}  # uid -> latest object seen
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task] = set()
        self.dns = dns_pod.DnsPods(state_dir, kubeconfig or str(state_dir / "kubeconfig"))
        self.picket = picket_pods.PicketPods(api, state_dir)

    def conflist(self, node: LabNode) -> dict[str, Any]:
        cidrs = [str(c) for c in node.pod_cidrs(self.families)]
        return cni.network_config(cidrs, str(self.state_dir / "ipam" / node.name))

    def host_ips(self, node: LabNode) -> tuple[str, ...]:
        return tuple(str(ip) for ip in node.addresses(self.families))

    async def register_nodes(self) -> None:
        for node in [*self.nodes.values(), *self.virtual.nodes.values()]:
            body = node_body(node, self.families)
            try:
                await asyncio.to_thread(self.api.create_node, body)
            except client.ApiException as exc:
                if exc.status != 409:
                    raise
            # A JSON patch replacing the whole status: a strategic merge would merge
            # status.addresses by type, and a dual-stack node has two InternalIPs (the
            # real kubelet works around the same merge key).
            replace = [{"op": "replace", "path": "/status", "value": body["status"]}]
            await asyncio.to_thread(self.api.patch_node_status, node.name, replace)

    async def run(self) -> None:
        await self.register_nodes()
        if EXTERNAL_NS in netns.listnetns():
            # "The internet": answers every TCP/UDP port (redirected to 7) and any SCTP
            # INIT, on both families (the outside has both whatever the pods have).
            await Responder(
                "external",
                EXTERNAL_NS,
                [(7, "TCP"), (7, "UDP")],
                ANY_ADDRESSES,
                sctp_any_port=True,
            ).start()
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        watcher = PodWatcher(self.api, asyncio.get_running_loop(), queue)
        watcher.start()
        while True:
            kind, obj = await queue.get()
            if kind == SYNCED:
                await self.collect_orphans()
                continue
            uid = obj["metadata"]["uid"]
            if kind == "DELETED":
                self.pods.pop(uid, None)
            else:
                self.pods[uid] = obj
            task = asyncio.create_task(self._reconcile(uid, obj, kind == "DELETED"))
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

    async def _reconcile(self, uid: str, obj: dict[str, Any], deleted: bool) -> None:
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            try:
                if deleted:
                    self.virtual.release(uid)
                    await self._teardown(uid)
                    self._locks.pop(uid, None)
                    return
                node_name = (obj.get("spec") or {}).get("nodeName")
                if not node_name:
                    await self._schedule(obj)
                elif node_name in self.nodes and uid not in self.sandboxes:
                    await self._start(uid, obj, self.nodes[node_name])
                elif self.virtual.holds(node_name):
                    await self._start_virtual(uid, obj)
            except Exception:  # one pod's failure must not stop the kubelet
                log.exception(
                    "pod %s/%s", obj["metadata"].get("namespace"), obj["metadata"].get("name")
                )

    def _choose_node(self, obj: dict[str, Any]) -> LabNode | None:
        wanted = ((obj.get("spec") or {}).get("nodeSelector") or {}).get(HOSTNAME_LABEL)
        if wanted is not None:
            return self.nodes.get(wanted)
        load = {name: 0 for name in self.nodes}
        for pod in self.pods.values():
            name = (pod.get("spec") or {}).get("nodeName")
            if name in load:
                load[name] += 1
        return self.nodes[min(sorted(load), key=lambda n: load[n])] if load else None

    async def _schedule(self, obj: dict[str, Any]) -> None:
        node = self._choose_node(obj)
        meta = obj["metadata"]
        if node is None:
            log.warning("pod %s/%s fits no lab node", meta["namespace"], meta["name"])
            return
        # Count the pod on its node before the next decision, not after the API call.
        self.pods[meta["uid"]] = {**obj, "spec": {**obj["spec"], "nodeName": node.name}}
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=meta["name"]),
            target=client.V1ObjectReference(kind="Node", name=node.name),
        )
        # The server answers a binding with a Status: skip the client's model decoding.
        await asyncio.to_thread(
            self.api.create_namespaced_pod_binding,
            meta["name"],
            meta["namespace"],
            body,
            _preload_content=False,
        )

    async def _start(self, uid: str, obj: dict[str, Any], node: LabNode) -> None:
        try:
            pod = parse_object(obj)
        except InvalidObjectError as exc:
            log.warning("%s", exc)
            return
        assert isinstance(pod, Pod)
        ports = dns_pod.responder_ports(obj, [(p.port, p.protocol) for p in pod.container_ports])
        if picket_pods.runs_picket(obj):
            if not pod.host_network:
                log.warning(
                    "pod %s: the lab runs Picket's images in hostNetwork pods only", pod.ref
                )
                return
            # Its containers are processes (picket_pods), which report its status.
            responder = Responder(pod.ref, node.netns, [], self.host_ips(node))
            self.sandboxes[uid] = Sandbox(node, None, self.host_ips(node), responder, None)
            self.picket.start(uid, obj, node)
            return
        if pod.host_network:
            sandbox = Sandbox(
                node,
                None,
                self.host_ips(node),
                Responder(pod.ref, node.netns, ports, self.host_ips(node)),
                None,
            )
        else:
            requested = (obj["metadata"].get("annotations") or {}).get(REQUESTED_IP, "")
            sandbox = await self._network(uid, pod, node, ports, requested)
        await sandbox.responder.start()
        self.sandboxes[uid] = sandbox
        if dns_pod.runs_dnsmasq(obj):
            await self.dns.start(uid, pod.ref, sandbox.netns or node.netns)
        await asyncio.to_thread(
            self.api.patch_namespaced_pod_status,
            pod.name,
            pod.namespace,
            {"status": running_status(obj, sandbox.ips, self.host_ips(node))},
        )
        log.info("pod %s on %s at %s", pod.ref, node.name, ", ".join(sandbox.ips))

    async def _network(
        self, uid: str, pod: Pod, node: LabNode, ports: list[tuple[int, str]], requested: str
    ) -> Sandbox:
        name = pod_netns(uid)
        result = await self._adopt(uid, name, node) if name in netns.listnetns() else None
        if result is None:
            await asyncio.to_thread(netns.create, name)
            # Before CNI ADD makes the interface: its IPv6 address usable at once (the
            # ptp plugin waits out a tentative address before it adds the routes).
            await asyncio.to_thread(topology.no_dad, name)
            args = f"IgnoreUnknown=1;IP={requested}" if requested else ""
            sandbox = cni.Sandbox(uid, f"/run/netns/{name}", args=args)
            result = await asyncio.to_thread(cni.add, self.conflist(node), sandbox, node.netns)
            cni.save_result(self._result_file(uid), result)
        ips = tuple(str(ip) for ip in cni.result_ips(result))
        if len(ips) != len(self.families):
            raise cni.CniError(f"CNI ADD for {pod.ref} returned {ips}, not one per family")
        wildcards = tuple(ANY_ADDRESS[f] for f in self.families)
        return Sandbox(node, name, ips, Responder(pod.ref, name, ports, wildcards), result)

    async def _start_virtual(self, uid: str, obj: dict[str, Any]) -> None:
        ips = self.virtual.assign(uid, obj)
        if ips is None:
            return
        node = self.virtual.nodes[obj["spec"]["nodeName"]]
        meta = obj["metadata"]
        await asyncio.to_thread(
            self.api.patch_namespaced_pod_status,
            meta["name"],
            meta["namespace"],
            {"status": running_status(obj, ips, self.virtual.host_ips(node))},
        )

    def _result_file(self, uid: str) -> Path:
        return self.state_dir / "cni" / f"{uid}.json"

    async def _adopt(self, uid: str, name: str, node: LabNode) -> dict[str, Any] | None:
        """After a kubelet restart the pod's network is still there: keep it if CNI CHECK
        says it is as ADD left it, else tear it down (the caller adds it again)."""
        sandbox = cni.Sandbox(uid, f"/run/netns/{name}")
        try:
            result = json.loads(self._result_file(uid).read_text())
            await asyncio.to_thread(cni.check, self.conflist(node), sandbox, node.netns, result)
            return result
        except (OSError, ValueError, cni.CniError) as exc:
            log.warning("pod network %s fails CNI CHECK, recreating it: %s", name, exc)
        with contextlib.suppress(cni.CniError, OSError, ValueError):
            await asyncio.to_thread(cni.delete, self.conflist(node), sandbox, node.netns, None)
        await asyncio.to_thread(netns.remove, name)
        return None

    async def collect_orphans(self) -> None:
        """Pod networks whose pod is gone (deleted while the kubelet was down)."""
        await self.dns.collect(set(self.pods))
        await self.picket.collect(set(self.pods))
        live = {pod_netns(uid) for uid in self.pods}
        for result_file in sorted((self.state_dir / "cni").glob("*.json")):
            uid = result_file.stem
            name = pod_netns(uid)
            if name in live or uid in self.sandboxes:
                continue
            log.info("removing the network of deleted pod %s", uid)
            node = self._node_of(result_file)
            with contextlib.suppress(cni.CniError, OSError, ValueError):
                await asyncio.to_thread(
                    cni.delete,
                    self.conflist(node),
                    cni.Sandbox(uid, f"/run/netns/{name}"),
                    node.netns,
                    json.loads(result_file.read_text()),
                )
            if name in netns.listnetns():
                await asyncio.to_thread(netns.remove, name)
            result_file.unlink(missing_ok=True)

    def _node_of(self, result_file: Path) -> LabNode:
        """The node whose pod CIDR holds an address a CNI result recorded."""
        ips = cni.result_ips(json.loads(result_file.read_text()))
        found = [n for n in self.nodes.values() if any(_within(ip, n) for ip in ips)]
        return found[0] if found else next(iter(self.nodes.values()))

    async def _teardown(self, uid: str) -> None:
        # First, before anything can let the next pod of its owner start on the node.
        await self.picket.stop(uid)
        sandbox = self.sandboxes.pop(uid, None)
        if sandbox is None:
            return
        await sandbox.responder.stop()
        await self.dns.stop(uid)  # before the namespace goes: dnsmasq holds it
        if sandbox.netns is None:
            return
        conflist = self.conflist(sandbox.node)
        cni_sandbox = cni.Sandbox(uid, f"/run/netns/{sandbox.netns}")
        try:
            await asyncio.to_thread(
                cni.delete, conflist, cni_sandbox, sandbox.node.netns, sandbox.cni_result
            )
        finally:
            await asyncio.to_thread(netns.remove, sandbox.netns)
            self._result_file(uid).unlink(missing_ok=True)


def _within(ip: IPv4Address | IPv6Address, node: LabNode) -> bool:
    return ip in (node.pod_cidr if ip.version == 4 else node.pod_cidr6)
