"""Raw API dicts for tests, as `kubectl get -o json` prints them: every test goes
through parsing and defaulting, like the agent's input does."""

from __future__ import annotations

from typing import Any

from agent.model.parse import parse_object
from agent.model.state import ClusterState

NODE_IPS = {"node-1": "198.18.0.1", "node-2": "198.18.0.2"}


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": dict(labels)},
    }


def serve_ports(*numbers: int) -> list[dict[str, Any]]:
    """Container ports for each number on TCP, UDP and SCTP, named serve-80-tcp etc."""
    return [
        {"containerPort": n, "protocol": proto, "name": f"serve-{n}-{proto.lower()}"}
        for n in numbers
        for proto in ("TCP", "UDP", "SCTP")
    ]


def pod(
    ns: str,
    name: str,
    ip: str | None,
    labels: dict[str, str] | None = None,
    node: str = "node-1",
    ports: list[dict[str, Any]] | None = None,
    host_network: bool = False,
    phase: str = "Running",
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "hostIP": NODE_IPS[node]}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {
            "nodeName": node,
            "hostNetwork": host_network,
            "containers": [{"name": "c", "image": "agnhost", "ports": ports or []}],
        },
        "status": status,
    }


def node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {"addresses": [{"type": "InternalIP", "address": NODE_IPS[name]}]},
    }


def policy(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def model_cluster() -> list[dict[str, Any]]:
    """The upstream 3x3 model: namespaces x, y, z labelled ns=<name>, pods a, b, c
    labelled pod=<name> serving 80 and 81 on every protocol; a and b on node-1, c on
    node-2. Pod IPs: x/a 198.18.1.1, x/b .1.2, x/c .2.3; y/* .1.11-.2.13; z/* .21-.23."""
    objs = [node("node-1"), node("node-2")]
    for k, ns in enumerate("xyz"):
        objs.append(namespace(ns, ns=ns))
        for j, name in enumerate("abc"):
            where = "node-2" if name == "c" else "node-1"
            subnet = 2 if where == "node-2" else 1
            objs.append(
                pod(
                    ns,
                    name,
                    f"198.18.{subnet}.{10 * k + j + 1}",
                    {"pod": name},
                    where,
                    serve_ports(80, 81),
                )
            )
    return objs


def v6_of(v4: str) -> str:
    """The lab's address plan: 198.18.<node>.<n> beside 2001:2:0:<node>::<n>."""
    _, _, subnet, n = v4.split(".")
    return f"2001:2:0:{subnet}::{n}"


def dual_stack(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`objs` with every pod address beside its IPv6 one (v6_of), as a dual-stack lab
    has them."""
    for obj in objs:
        if obj["kind"] == "Pod" and obj["status"].get("podIP"):
            v4 = obj["status"]["podIP"]
            obj["status"]["podIPs"] = [{"ip": v4}, {"ip": v6_of(v4)}]
    return objs


def state_of(objs: list[dict[str, Any]]) -> ClusterState:
    return ClusterState.from_objects(parse_object(o) for o in objs)


def service(
    ns: str,
    name: str,
    service_type: str = "NodePort",
    traffic_policy: str | None = None,
    selector: dict[str, str] | None = None,
    external_ips: list[str] | None = None,
) -> dict[str, Any]:
    """A Service serving 80/TCP (named targetPort `web`), with a ClusterIP from the
    lab's Service range and, for NodePort and LoadBalancer, node port 30080."""
    port: dict[str, Any] = {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"}
    if service_type in ("NodePort", "LoadBalancer"):
        port["nodePort"] = 30080
    spec: dict[str, Any] = {"type": service_type, "ports": [port]}
    if service_type != "ExternalName":
        spec["clusterIP"] = "198.19.0.10"
    else:
        spec = {"type": service_type, "externalName": "db.example"}
    if traffic_policy is not None:
        spec["externalTrafficPolicy"] = traffic_policy
    if selector is not None:
        spec["selector"] = selector
    if external_ips:
        spec["externalIPs"] = external_ips
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def endpoint(
    address: str | None,
    pod_ref: str | None = None,
    ready: bool | None = True,
    serving: bool | None = None,
    node_name: str | None = None,
) -> dict[str, Any]:
    """One EndpointSlice endpoint: an address, and a targetRef to pod `ns/name`."""
    found: dict[str, Any] = {"addresses": [address] if address else []}
    conditions = {k: v for k, v in (("ready", ready), ("serving", serving)) if v is not None}
    if conditions:
        found["conditions"] = conditions
    if pod_ref is not None:
        ns, name = pod_ref.split("/")
        found["targetRef"] = {"kind": "Pod", "namespace": ns, "name": name}
    if node_name is not None:
        found["nodeName"] = node_name
    return found


def endpoint_slice(
    ns: str,
    name: str,
    service_name: str | None,
    endpoints: list[dict[str, Any]] | None,
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    labels = {"kubernetes.io/service-name": service_name} if service_name else {}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }
