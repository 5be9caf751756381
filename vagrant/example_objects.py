"""What vagrant/check.sh deploys of an example and how it reads the probes (pure):
the example's objects as a real cluster runs them, the objects that would collide with
the cluster's own, the commands a pod probes with and their outcomes, the checks of
expected.txt a cluster can make. vagrant/examples.py does the cluster part.

Needs PyYAML; from the checkout it imports only the pure expected.txt reader, which
needs nothing beyond the standard library (a Vagrant node has no site-packages of ours).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agent.expectations import CheckExpectation

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.43"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
DNS_PORT = 53
# Any answer, NXDOMAIN too, shows the query got through; this name exists on k3s.
DNS_QUESTION = "kube-dns.kube-system.svc.cluster.local"
DIG_NO_REPLY = 9  # dig's exit status when no server answered


class CheckError(RuntimeError):
    pass


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    keep = {"name": meta["name"], "labels": meta.get("labels", {})}
    if "namespace" in meta:
        keep["namespace"] = meta["namespace"]
    return keep


def _server(port: dict[str, Any]) -> dict[str, Any]:
    """One agnhost per declared port: serve-hostname answers TCP, UDP or SCTP."""
    protocol = port.get("protocol", "TCP").lower()
    number = port["containerPort"]
    return {
        "name": f"serve-{protocol}-{number}",
        "image": AGNHOST,
        "command": ["/agnhost", "serve-hostname", f"--{protocol}", "--http=false"],
        "args": ["--port", str(number)],
        "ports": [port],
    }


def deployable_pod(pod: dict[str, Any], nodes: dict[str, str]) -> dict[str, Any]:
    """The example's pod for a real cluster: its labels and declared ports (named ports
    must resolve as in the example), on the worker its lab node maps to."""
    spec = pod["spec"]
    node = spec.get("nodeName")
    if node not in nodes:
        raise CheckError(f"pod {pod['metadata']['name']}: node {node!r} has no worker mapped")
    ports = [p for c in spec.get("containers", []) for p in c.get("ports", [])]
    containers = [_server(p) for p in ports] or [
        {"name": "pause", "image": AGNHOST, "command": ["/agnhost", "pause"]}
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(pod),
        "spec": {
            "nodeName": nodes[node],
            "terminationGracePeriodSeconds": 1,
            "containers": containers,
        },
    }


def deployable_service(service: dict[str, Any]) -> dict[str, Any]:
    """The example's Service, with whatever ClusterIP the cluster allocates (an address
    written for the netns lab's Service range would be outside k3s's)."""
    spec = {k: v for k, v in service["spec"].items() if k not in ("clusterIP", "clusterIPs")}
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(service), "spec": spec}


def collisions(docs: list[dict[str, Any]]) -> list[str]:
    """Objects the example would put into namespaces it does not create: those belong
    to the cluster (kube-system's DNS, for one) and an example must not touch them."""
    own = {d["metadata"]["name"] for d in docs if d.get("kind") == "Namespace"}
    found = [f"namespace {n} is the cluster's own" for n in sorted(own & set(SYSTEM_NAMESPACES))]
    for doc in docs:
        namespace = doc["metadata"].get("namespace")
        if doc.get("kind") != "Namespace" and namespace not in own - set(SYSTEM_NAMESPACES):
            found.append(
                f"{doc.get('kind')} {namespace}/{doc['metadata']['name']}: not in a namespace "
                "the example creates"
            )
    return found


def deployable(docs: list[dict[str, Any]], nodes: dict[str, str]) -> list[dict[str, Any]]:
    clashes = collisions(docs)
    if clashes:
        raise CheckError("the example collides with the cluster's objects: " + "; ".join(clashes))
    out: list[dict[str, Any]] = []
    for doc in docs:
        kind = doc.get("kind")
        if kind == "Namespace":
            out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(doc)})
        elif kind == "Pod":
            out.append(deployable_pod(doc, nodes))
        elif kind == "Service":
            out.append(deployable_service(doc))
        elif kind == "NetworkPolicy":
            out.append({k: doc[k] for k in ("apiVersion", "kind", "metadata", "spec")})
        else:
            raise CheckError(f"unexpected {kind} in the example")
    return out


def node_map(workers: list[str], lab_nodes: list[str]) -> dict[str, str]:
    """Lab node i runs on worker i (round robin when there are fewer workers)."""
    return {name: workers[i % len(workers)] for i, name in enumerate(sorted(lab_nodes))}


def load_example(folder: Path) -> list[dict[str, Any]]:
    docs = []
    for name in ("cluster.yaml", "policies.yaml"):
        docs += [d for d in yaml.safe_load_all((folder / name).read_text()) if d]
    return docs


def verdict(returncode: int, stderr: str) -> bool | None:
    """agnhost connect: exit 0 connected; REFUSED means the packet got through and
    nothing listens; TIMEOUT means it was dropped. None: the probe itself failed."""
    if returncode == 0 or stderr.startswith("REFUSED"):
        return True
    if stderr.startswith("TIMEOUT"):
        return False
    return None


def dig_verdict(returncode: int, stdout: str) -> bool | None:
    """dig: exit 0 is an answer (NXDOMAIN too: the query got through); "connection
    refused" an ICMP port unreachable (it got through; nothing listens); exit 9
    otherwise no reply at all (dropped). None: dig itself failed."""
    if returncode == 0 or "connection refused" in stdout:
        return True
    return False if returncode == DIG_NO_REPLY else None


def asks_dns(port: int, protocol: str) -> bool:
    """A DNS server answers only DNS: a Service port 53 is probed with a query, since
    the datagram agnhost connect sends would go unanswered even when allowed."""
    return port == DNS_PORT and protocol in ("UDP", "TCP")


def dig_argv(address: str, protocol: str) -> list[str]:
    transport = ["+tcp"] if protocol == "TCP" else []
    return ["dig", f"@{address}", "+time=2", "+tries=1", *transport, DNS_QUESTION, "A"]


def connect_argv(address: str, port: int, protocol: str) -> list[str]:
    return [
        "/agnhost", "connect", f"{address}:{port}", "--timeout=1s",
        f"--protocol={protocol.lower()}",
    ]  # fmt: skip


def service_checks(expectations: list[Any], pods: set[str]) -> list[CheckExpectation]:
    """The checks of expected.txt this cluster can make: through a Service, from one
    of the example's own pods (other sources are the netns lab's addresses)."""
    return [
        e
        for e in expectations
        if isinstance(e, CheckExpectation) and e.service is not None and e.src in pods
    ]


def check_line(check: CheckExpectation, address: str, seen: bool | None) -> tuple[str, bool]:
    """One check through a Service as printed, and whether it disagrees."""
    words = {True: "allowed", False: "denied", None: "no answer"}
    wrong = seen is not check.allowed
    line = (
        f"{'!' if wrong else ' '} {check.src} -> {check.dst} ({address}) "
        f"{check.port}/{check.protocol}: {words[seen]}, expected {words[check.allowed]}"
    )
    return line, wrong
