"""The Vagrant lab's connectivity check, run on the control plane by vagrant/check.sh.

For each example: deploy it on the real cluster (its pods pinned to workers, each
declared port served by agnhost), probe every matrix of its expected.txt with
`kubectl exec ... agnhost connect` (as Kubernetes' own network policy tests do), and
compare what the cluster does with what the policies mean: Picket's oracle, run by the
deployed image (`picket explain --matrix`) on the live objects, so it sees the real pod
addresses. Connected or refused (a reply came: nothing listens there) counts as allowed,
a timeout as denied: Picket drops, it does not reject.

Needs python3, PyYAML and kubectl; from the checkout it imports only the pure
expected.txt reader, which needs nothing beyond the standard library.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agent.expectations import MatrixExpectation, parse_expectations

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.43"
PICKET_NAMESPACE = "picket-system"
AGENT_SELECTOR = "app.kubernetes.io/name=picket,app.kubernetes.io/component=agent"


class CheckError(RuntimeError):
    pass


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise CheckError(f"kubectl {' '.join(args[:3])}: {proc.stderr.strip()}")
    return proc.stdout


# --- the example as the cluster runs it (pure) --------------------------------------


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


def deployable(docs: list[dict[str, Any]], nodes: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for doc in docs:
        kind = doc.get("kind")
        if kind == "Namespace":
            out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(doc)})
        elif kind == "Pod":
            out.append(deployable_pod(doc, nodes))
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


# --- on the cluster ----------------------------------------------------------------


@dataclass(frozen=True)
class LivePod:
    key: str  # namespace/name
    ip: str
    container: str


def live_pods(pods: list[dict[str, Any]]) -> dict[str, LivePod]:
    out = {}
    for pod in pods:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        raw = json.loads(kubectl("get", "pod", "-n", meta["namespace"], meta["name"], "-o", "json"))
        first = pod["spec"]["containers"][0]["name"]
        out[key] = LivePod(key, raw["status"]["podIP"], first)
    return out


def probe(src: LivePod, dst: LivePod, port: int, protocol: str) -> bool | None:
    namespace, name = src.key.split("/")
    proc = subprocess.run(
        [
            "kubectl", "exec", "-n", namespace, name, "-c", src.container, "--",
            "/agnhost", "connect", f"{dst.ip}:{port}", "--timeout=1s",
            f"--protocol={protocol.lower()}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    return verdict(proc.returncode, proc.stderr.strip())


def observed(pods: dict[str, LivePod], port: int, protocol: str) -> dict[str, dict[str, Any]]:
    pairs = [(s, d) for s in pods for d in pods if s != d]
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = pool.map(lambda p: probe(pods[p[0]], pods[p[1]], port, protocol), pairs)
        results: dict[str, dict[str, Any]] = {s: {} for s in pods}
        for (s, d), ok in zip(pairs, found, strict=True):
            results[s][d] = ok
    return results


def oracle(objects: list[dict[str, Any]], m: MatrixExpectation) -> dict[str, dict[str, bool]]:
    """What the policies mean for these live objects, from the deployed image."""
    agent = kubectl(
        "get", "pods", "-n", PICKET_NAMESPACE, "-l", AGENT_SELECTOR, "-o", "name"
    ).split()
    if not agent:
        raise CheckError("no Picket agent pod to run the oracle in")
    command = (
        "cat >/tmp/picket-check.json && picket explain -f /tmp/picket-check.json --matrix"
        f" --port {m.port}/{m.protocol} --namespaces {','.join(m.namespaces)} -o json"
    )
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    out = kubectl(
        "exec", "-i", "-n", PICKET_NAMESPACE, agent[0], "-c", "agent", "--",
        "bash", "-c", command, stdin=document,
    )  # fmt: skip
    return json.loads(out)["results"]


def live_objects(example: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The example's namespaces, pods and policies as the API server holds them."""
    objects = []
    for obj in example:
        meta = obj["metadata"]
        where = ["-n", meta["namespace"]] if "namespace" in meta else []
        live = json.loads(kubectl("get", obj["kind"], meta["name"], *where, "-o", "json"))
        live["metadata"].pop("managedFields", None)
        objects.append(live)
    return objects


# --- one example -------------------------------------------------------------------


def print_matrix(
    title: str, seen: dict[str, dict[str, Any]], meant: dict[str, dict[str, bool]]
) -> int:
    """Print the observed matrix; returns how many cells disagree with the oracle."""
    keys = sorted(seen)
    width = max(len(k) for k in [*keys, "from\\to"])
    print(f"# {title}: '.' allowed, 'X' denied, '!' cluster and oracle disagree, '?' no answer")
    print("from\\to".ljust(width), " ".join(k.ljust(len(k)) for k in keys))
    wrong = 0
    for s in keys:
        cells = []
        for d in keys:
            ok = seen[s].get(d)
            if s == d:
                mark = "-"
            elif ok is None:
                mark, wrong = "?", wrong + 1
            elif ok != meant.get(s, {}).get(d):
                mark, wrong = "!", wrong + 1
            else:
                mark = "." if ok else "X"
            cells.append(mark.ljust(len(d)))
        print(s.ljust(width), " ".join(cells))
    return wrong


def _list(items: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def check_matrices(folder: Path, objects: list[dict[str, Any]]) -> int:
    pods = [o for o in objects if o["kind"] == "Pod"]
    for pod in pods:
        meta = pod["metadata"]
        kubectl("wait", "--for=condition=Ready", "pod", meta["name"], "-n", meta["namespace"],
                "--timeout=300s")  # fmt: skip
    live = live_pods(pods)
    wrong = 0
    for m in parse_expectations((folder / "expected.txt").read_text()):
        if not isinstance(m, MatrixExpectation):
            continue  # single checks name the netns lab's outside and node addresses
        chosen = {k: p for k, p in live.items() if k.split("/")[0] in m.namespaces}
        seen = observed(chosen, m.port, m.protocol)
        meant = oracle(live_objects(objects), m)
        wrong += print_matrix(f"{folder.name} {m.port}/{m.protocol}", seen, meant)
    return wrong


def check_example(folder: Path, workers: list[str]) -> int:
    """Deploy, compare, and take the example away again (namespaces that existed before,
    kube-system for one, are left alone: only the example's objects in them go)."""
    docs = load_example(folder)
    lab_nodes = sorted({d["spec"]["nodeName"] for d in docs if d.get("kind") == "Pod"})
    objects = deployable(docs, node_map(workers, lab_nodes))
    existing = set(kubectl("get", "namespaces", "-o", "name").split())
    ours = [
        o
        for o in objects
        if o["kind"] != "Namespace" or f"namespace/{o['metadata']['name']}" not in existing
    ]
    kubectl("apply", "-f", "-", stdin=_list(ours))
    try:
        return check_matrices(folder, objects)
    finally:
        kubectl("delete", "--ignore-not-found", "--wait=true", "-f", "-", stdin=_list(ours),
                check=False)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", nargs="+", type=Path, help="example folders")
    parser.add_argument("--workers", required=True, help="worker node names, comma-separated")
    args = parser.parse_args(argv)
    workers = args.workers.split(",")
    wrong = 0
    for folder in args.examples:
        print(f"\n==== {folder.name}")
        try:
            wrong += check_example(folder, workers)
        except CheckError as exc:
            print(f"check failed: {exc}")
            wrong += 1
    print(f"\n{'all matrices agree with the oracle' if not wrong else f'{wrong} cells disagree'}")
    return 0 if not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
