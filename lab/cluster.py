"""The lab seen through its API, with the real client: pods, where they live (which
network namespace), and whether they are ready; Services and their EndpointSlices."""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from kubernetes import client, config

from agent.portspec import SERVICE_TARGET, parse_port_protocol, parse_service_target
from lab.config import (
    EXTERNAL_ADDRESS,
    EXTERNAL_ADDRESS6,
    EXTERNAL_NS,
    MAX_NODES,
    OUTSIDE,
    OUTSIDE6,
    LabNode,
    lab_nodes,
    node_by_address,
    pod_netns,
)
from lab.services import NODEPORT_TARGET, parse_nodeport_target, probe_address


def core_api(kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))


@dataclass(frozen=True)
class LabPod:
    ref: str
    ip: str | None  # the primary address (status.podIP)
    node: str | None
    netns: str | None  # where its sockets live (the node's for hostNetwork pods)
    ready: bool
    host_network: bool
    ips: tuple[str, ...] = ()  # status.podIPs: one per family, the primary first

    def address(self, family: int | None = None) -> str | None:
        """The pod's address of `family` (None: the primary one); None if it has none."""
        if family is None:
            return self.ip
        known = self.ips or ((self.ip,) if self.ip else ())
        return next((ip for ip in known if family_of(ip) == family), None)


def family_of(address: str) -> int:
    return 6 if ":" in address else 4


def _lab_pod(obj: dict[str, Any]) -> LabPod:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    node = spec.get("nodeName")
    host_network = bool(spec.get("hostNetwork"))
    netns = None
    if node and node.startswith("node-") and node[5:].isdigit():
        netns = LabNode(int(node[5:])).netns if host_network else pod_netns(meta["uid"])
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    ips = tuple(p["ip"] for p in status.get("podIPs") or [] if isinstance(p, dict) and p.get("ip"))
    return LabPod(
        f"{meta['namespace']}/{meta['name']}",
        status.get("podIP"),
        node,
        netns,
        ready and bool(status.get("podIP")),
        host_network,
        ips or ((status["podIP"],) if status.get("podIP") else ()),
    )


def list_pods(api: client.CoreV1Api, namespaces: list[str] | None = None) -> list[LabPod]:
    resp = api.list_pod_for_all_namespaces(_preload_content=False)
    items = json.loads(resp.data)["items"]
    pods = [_lab_pod(o) for o in items]
    if namespaces:
        pods = [p for p in pods if p.ref.split("/", 1)[0] in namespaces]
    return sorted(pods, key=lambda p: p.ref)


def get_pod(api: client.CoreV1Api, ref: str) -> LabPod:
    namespace, _, name = ref.partition("/")
    if not name:
        raise ValueError(f"{ref!r} is not NAMESPACE/POD")
    resp = api.read_namespaced_pod(name, namespace, _preload_content=False)
    return _lab_pod(json.loads(resp.data))


def list_nodes(api: client.CoreV1Api) -> list[dict[str, Any]]:
    resp = api.list_node(_preload_content=False)
    return json.loads(resp.data)["items"]


def get_service(api: client.CoreV1Api, namespace: str, name: str) -> dict[str, Any]:
    resp = api.read_namespaced_service(name, namespace, _preload_content=False)
    return json.loads(resp.data)


def list_services(api: client.CoreV1Api) -> list[dict[str, Any]]:
    resp = api.list_service_for_all_namespaces(_preload_content=False)
    items = json.loads(resp.data)["items"]
    return sorted(items, key=lambda s: (s["metadata"]["namespace"], s["metadata"]["name"]))


def list_endpoint_slices(api: client.CoreV1Api, selector: str | None = None) -> list[dict]:
    discovery = client.DiscoveryV1Api(api.api_client)
    kwargs = {"label_selector": selector} if selector else {}
    resp = discovery.list_endpoint_slice_for_all_namespaces(_preload_content=False, **kwargs)
    return json.loads(resp.data)["items"]


def lab_node(name: str) -> LabNode:
    node = next((n for n in lab_nodes(MAX_NODES) if n.name == name), None)
    if node is None:
        raise ValueError(f"no lab node {name!r}")
    return node


def probe_source(api: client.CoreV1Api, text: str, family: int = 4) -> tuple[str, str | None]:
    """(network namespace, source address) for NS/POD, node/NAME, a node's address,
    `external` (the outside host's own underlay address, as a NodePort client), or an
    outside address (198.19.200.0/24 or 2001:2:0:fe00::/64, owned by the lab's external
    host); `family` is the target's, for the sources that have both."""
    if text == "external":
        return EXTERNAL_NS, str(EXTERNAL_ADDRESS if family == 4 else EXTERNAL_ADDRESS6)
    if text.startswith("node/"):
        node = lab_node(text[5:])
        return node.netns, str(node.address if family == 4 else node.address6)
    if "/" in text:
        pod = get_pod(api, text)
        if pod.netns is None:
            raise ValueError(f"{text} is not running in the lab")
        return pod.netns, None
    node = node_by_address(text)
    if node is not None:
        return node.netns, text
    try:
        if ip_address(text) in OUTSIDE or ip_address(text) in OUTSIDE6:
            return EXTERNAL_NS, text
    except ValueError:
        pass
    raise ValueError(
        f"{text!r} is not NS/POD, node/NAME, external, a node address or an address in "
        f"{OUTSIDE} or {OUTSIDE6}"
    )


def probe_target(api: client.CoreV1Api, text: str, family: int | None = None) -> str:
    """An address for NS/POD (of `family`, else its primary one) or an address (''
    for a pod without one)."""
    if "/" not in text:
        return text
    pod = get_pod(api, text)
    address = pod.address(family)
    if address is None and family is not None and pod.ips:
        raise ValueError(f"{text} has no IPv{family} address (it has {', '.join(pod.ips)})")
    return address or ""


def probe_destination(
    api: client.CoreV1Api, text: str, port_text: str | None, family: int | None = None
) -> tuple[str, int, str]:
    """(address, port, protocol) for TARGET [PORT[/PROTO]]: NS/POD or an address with
    a port; svc/NS/NAME with one of the Service's ports (probed at its ClusterIP of
    `family`, else its primary one); or nodeport/NODE/PORT[/PROTO], the node's address,
    the port in the target itself."""
    if text.startswith(NODEPORT_TARGET):
        if port_text is not None:
            raise ValueError("a nodeport/NODE/PORT[/PROTO] target takes no PORT argument")
        node, port, protocol = parse_nodeport_target(text)
        found = lab_node(node)
        return str(found.address6 if family == 6 else found.address), port, protocol
    if port_text is None:
        raise ValueError("PORT[/PROTO] is missing")
    port, protocol = parse_port_protocol(port_text)
    if text.startswith(SERVICE_TARGET):
        namespace, name = parse_service_target(text)
        service = get_service(api, namespace, name)
        return probe_address(service, port, protocol, family), port, protocol
    return probe_target(api, text, family), port, protocol
