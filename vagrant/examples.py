"""The Vagrant lab's connectivity check, run on the control plane by vagrant/check.sh.

For each example: deploy it on the real cluster (its pods pinned to workers, each
declared port served by agnhost, its Services with ClusterIPs k3s allocates), probe every
matrix of its expected.txt with `kubectl exec ... agnhost connect` (as Kubernetes' own
network policy tests do), and compare what the cluster does with what the policies
mean: Picket's oracle, run by the deployed image (`picket explain --matrix`) on the live
objects, so it sees the real pod addresses. Connected or refused (a reply came: nothing
listens there) counts as allowed, a timeout as denied: Picket drops, it does not reject.

Then every `check` of expected.txt from one of the example's pods to a Service
(`svc/NS/NAME`): a connection to the Service's ClusterIP as k3s holds it, through k3s's
own kube-proxy, compared with the expected verdict (tests/unit/test_examples.py holds
those to the oracle for every backend). A Service port 53 is asked a DNS query with
`dig` (a DNS server answers nothing else): example 05 resolves through k3s's own
kube-dns, whose CoreDNS pods are the cluster's and stay out of the matrices. Nothing an
example applies lives outside its own namespaces, so nothing collides with k3s's
objects; example 05's stand-in DNS (stand-in/) is the oracle's and is never applied.

The pure part (the objects, the probe commands and their outcomes) is
vagrant/example_objects.py, beside it; tests/unit/test_vagrant_examples.py tests it.
Needs python3, PyYAML and kubectl.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Run as a script, its own folder is on the path: the pure half beside it.
from example_objects import (
    CheckError,
    asks_dns,
    check_line,
    connect_argv,
    deployable,
    dig_argv,
    dig_verdict,
    load_example,
    node_map,
    service_checks,
    verdict,
)

from agent.expectations import MatrixExpectation, parse_expectations

PICKET_NAMESPACE = "picket-system"
AGENT_SELECTOR = "app.kubernetes.io/name=picket,app.kubernetes.io/component=agent"


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise CheckError(f"kubectl {' '.join(args[:3])}: {proc.stderr.strip()}")
    return proc.stdout


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


def run_in(src: LivePod, argv: list[str]) -> subprocess.CompletedProcess:
    namespace, name = src.key.split("/")
    return subprocess.run(
        ["kubectl", "exec", "-n", namespace, name, "-c", src.container, "--", *argv],
        capture_output=True,
        text=True,
        check=False,
    )


def probe(src: LivePod, dst: LivePod, port: int, protocol: str) -> bool | None:
    proc = run_in(src, connect_argv(dst.ip, port, protocol))
    return verdict(proc.returncode, proc.stderr.strip())


def probe_service(src: LivePod, address: str, port: int, protocol: str) -> bool | None:
    if asks_dns(port, protocol):
        proc = run_in(src, dig_argv(address, protocol))
        return dig_verdict(proc.returncode, proc.stdout)
    proc = run_in(src, connect_argv(address, port, protocol))
    return verdict(proc.returncode, proc.stderr.strip())


def cluster_ip(namespace: str, name: str) -> str:
    found = kubectl("get", "service", "-n", namespace, name, "-o", "jsonpath={.spec.clusterIP}")
    if not found or found == "None":
        raise CheckError(f"Service {namespace}/{name} has no ClusterIP")
    return found


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


def check_matrices(folder: Path, objects: list[dict[str, Any]], live: dict[str, LivePod]) -> int:
    wrong = 0
    for m in parse_expectations((folder / "expected.txt").read_text()):
        if not isinstance(m, MatrixExpectation):
            continue  # checks: through Services below; the rest name netns lab addresses
        chosen = {k: p for k, p in live.items() if k.split("/")[0] in m.namespaces}
        seen = observed(chosen, m.port, m.protocol)
        meant = oracle(live_objects(objects), m)
        wrong += print_matrix(f"{folder.name} {m.port}/{m.protocol}", seen, meant)
    return wrong


def check_services(folder: Path, live: dict[str, LivePod]) -> int:
    checks = service_checks(parse_expectations((folder / "expected.txt").read_text()), set(live))
    if not checks:
        return 0
    print(f"# {folder.name} through Services: '!' marks a check the cluster does not keep")
    wrong = 0
    for check in checks:
        assert check.service is not None
        address = cluster_ip(*check.service)
        seen = probe_service(live[check.src], address, check.port, check.protocol)
        line, bad = check_line(check, address, seen)
        print(line)
        wrong += bad
    return wrong


def wait_ready(objects: list[dict[str, Any]]) -> dict[str, LivePod]:
    pods = [o for o in objects if o["kind"] == "Pod"]
    for pod in pods:
        meta = pod["metadata"]
        kubectl("wait", "--for=condition=Ready", "pod", meta["name"], "-n", meta["namespace"],
                "--timeout=300s")  # fmt: skip
    return live_pods(pods)


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
        live = wait_ready(objects)
        return check_matrices(folder, objects, live) + check_services(folder, live)
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
    print(
        f"\n{'all matrices and checks agree' if not wrong else f'{wrong} cells or checks disagree'}"
    )
    return 0 if not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
