"""Every example in examples/ is enforced in the lab exactly as its expected.txt says
(the hand-written expectations, not the oracle), checks with outside addresses, node
addresses and Services (svc/NS/NAME, through the lab kube-proxy) included.

What a cluster applies of an example is its cluster.yaml and policies.yaml. What the
cluster already has, example 05's DNS, is a stand-in for the oracle (stand-in/) that is
never applied: the lab's own kube-dns Service and DNS pod take its place. So a matrix
covers the example's own pods, as on a real cluster (vagrant/examples.py); a check
naming a stand-in pod is made from the lab's pod with the same labels; a check to a
Service's port 53 is a DNS query (a DNS server answers nothing else).

Example 05 also resolves names from its locked pods, over UDP and TCP, through the
kube-dns ClusterIP: with allow-dns, and not without it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.expectations import CheckExpectation, MatrixExpectation, parse_expectations
from lab.config import DNS_SERVICE_IP, state_dir
from lab.kubeproxy.status import endpoints, wait_programmed
from tests.support.cluster_dns import dns_gets_through, lookup
from tests.support.enforcement import differences, is_address, observed, probe_allowed
from tests.support.lab_cli import ROOT, Kubectl, picket, wait_until
from tests.support.policies import BACKENDS

EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())
DNS_EXAMPLE = ROOT / "examples" / "05-default-deny-with-dns"
NODES = ["node-1", "node-2"]


@pytest.fixture(scope="module", params=BACKENDS)
def kubectl(request: pytest.FixtureRequest) -> Iterator[Kubectl]:
    picket("lab", "down")
    up = picket("lab", "up", "--nodes", "2", "--backend", request.param)
    try:
        yield Kubectl(up.stdout.strip().splitlines()[-1])
    finally:
        picket("lab", "down")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def ref(doc: dict[str, Any]) -> str:
    return f"{doc['metadata']['namespace']}/{doc['metadata']['name']}"


def applied_pods(folder: Path) -> set[str]:
    return {ref(d) for d in documents(folder / "cluster.yaml") if d["kind"] == "Pod"}


def manifest_pod_ips(folder: Path) -> dict[str, str]:
    """Addresses the manifests give pods (the lab assigns others), of every family:
    address -> NS/POD."""
    found = {}
    for d in documents(folder / "cluster.yaml"):
        status = d.get("status") or {} if d["kind"] == "Pod" else {}
        for ip in [status.get("podIP"), *(p.get("ip") for p in status.get("podIPs") or [])]:
            if ip:
                found[ip] = ref(d)
    return found


def stand_in_labels(folder: Path) -> dict[str, dict[str, str]]:
    """The stand-in pods (oracle only, never applied): NS/POD -> labels."""
    return {
        ref(d): d["metadata"].get("labels") or {}
        for path in sorted(folder.glob("stand-in/*.yaml"))
        for d in documents(path)
        if d["kind"] == "Pod"
    }


def clusters_own(kubectl: Kubectl, stand_in: str, labels: dict[str, str]) -> str:
    """The lab's pod a stand-in stands for: the one in its namespace with its labels."""
    namespace = stand_in.split("/")[0]
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    items = kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"]
    assert len(items) == 1, (stand_in, [p["metadata"]["name"] for p in items])
    return f"{namespace}/{items[0]['metadata']['name']}"


def wait_services_programmed(folder: Path) -> None:
    """Until every node's kube-proxy sends each of the example's Service ports to
    backends (before that, a ClusterIP leads nowhere and every probe times out)."""
    wanted = [
        (ref(d), f"{p['port']}/{p.get('protocol', 'TCP')}")
        for d in documents(folder / "cluster.yaml")
        if d["kind"] == "Service"
        for p in d["spec"]["ports"]
    ]
    wait_programmed(
        state_dir(), NODES, lambda services: all(endpoints(services, *w) for w in wanted)
    )


def remove(kubectl: Kubectl, folder: Path) -> None:
    kubectl("delete", "-f", str(folder / "policies.yaml"), "--ignore-not-found")
    for doc in documents(folder / "cluster.yaml"):
        if doc["kind"] == "Namespace":
            kubectl("delete", "namespace", doc["metadata"]["name"], "--ignore-not-found")


def example_observed(e: MatrixExpectation, pods: set[str]) -> dict[str, dict[str, bool]]:
    """The observed matrix among `pods`, on the expectation's family."""
    got = observed(list(e.namespaces), e.port, e.protocol, e.family)
    return {s: {d: v for d, v in row.items() if d in pods} for s, row in got.items() if s in pods}


def among(results: dict[str, dict[str, bool]], pods: set[str]) -> dict[str, dict[str, bool]]:
    return {
        s: {d: v for d, v in row.items() if d in pods} for s, row in results.items() if s in pods
    }


def check_gets_through(kubectl: Kubectl, folder: Path, check: CheckExpectation) -> bool:
    pod_ips, stand_ins = manifest_pod_ips(folder), stand_in_labels(folder)
    # A pod named by an address the manifest gives it is probed at its lab address of
    # that address's family.
    family = next(
        (6 if ":" in end else 4 for end in (check.src, check.dst) if end in pod_ips), None
    )
    family = family or next(
        (6 if ":" in end else 4 for end in (check.src, check.dst) if is_address(end)), None
    )
    src, dst = (pod_ips.get(end, end) for end in (check.src, check.dst))
    src, dst = (
        clusters_own(kubectl, end, stand_ins[end]) if end in stand_ins else end
        for end in (src, dst)
    )
    port = f"{check.port}/{check.protocol}"
    if check.service is not None and check.port == 53 and check.protocol in ("UDP", "TCP"):
        return dns_gets_through(src, service_ip(kubectl, check), tcp=check.protocol == "TCP")
    return probe_allowed(src, dst, port, family)


def service_ip(kubectl: Kubectl, check: CheckExpectation) -> str:
    assert check.service is not None
    namespace, name = check.service
    return kubectl.json("get", "service", "-n", namespace, name)["spec"]["clusterIP"]


@pytest.mark.parametrize("folder", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_enforced_as_expected(kubectl, folder):
    kubectl("apply", "-f", str(folder / "cluster.yaml"))
    kubectl("apply", "-f", str(folder / "policies.yaml"))
    kubectl("wait", "--for=condition=Ready", "pod", "--all", "-A", "--timeout=60s")
    try:
        wait_services_programmed(folder)
        pods = applied_pods(folder)
        for expected in parse_expectations((folder / "expected.txt").read_text()):
            if isinstance(expected, MatrixExpectation):
                want = among(expected.results, pods)

                def matches(e: MatrixExpectation = expected, w: dict = want) -> bool:
                    return differences(w, example_observed(e, pods)) == []

                assert wait_until(matches, 20), (
                    f"{expected.port}/{expected.protocol}: "
                    + "; ".join(differences(want, example_observed(expected, pods)))
                )
            else:
                assert isinstance(expected, CheckExpectation)
                got = check_gets_through(kubectl, folder, expected)
                assert got == expected.allowed, expected
    finally:
        remove(kubectl, folder)


def answers(source: str, name: str, tcp: bool, timeout: float = 1.0) -> list[str] | str:
    """The addresses `source` resolves `name` to, or the failure (timeout, NXDOMAIN...)."""
    found = lookup(source, name, tcp, timeout)
    return list(found.addresses) if found.ok else found.outcome


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_locked_pods_resolve_through_kube_dns_with_allow_dns_and_not_without(kubectl, transport):
    """Example 05: both locked pods (one per node) resolve the cluster's DNS Service and
    the example's own Service, by the short names their search list completes, through
    the kube-dns ClusterIP; delete allow-dns and the queries time out (the default deny
    drops them); apply it again and they resolve."""
    tcp = transport == "tcp"
    kubectl("apply", "-f", str(DNS_EXAMPLE / "cluster.yaml"))
    kubectl("apply", "-f", str(DNS_EXAMPLE / "policies.yaml"))
    kubectl("wait", "--for=condition=Ready", "pod", "--all", "-n", "locked", "--timeout=60s")
    try:
        b = kubectl.json("get", "service", "-n", "locked", "b")["spec"]["clusterIP"]
        want = {"kube-dns.kube-system": [str(DNS_SERVICE_IP)], "b": [b]}
        queries = [(pod, name) for pod in ("locked/a", "locked/b") for name in want]

        def all_resolve() -> bool:
            return all(answers(pod, name, tcp) == want[name] for pod, name in queries)

        assert wait_until(all_resolve), {q: answers(*q, tcp) for q in queries}
        kubectl("delete", "networkpolicy", "-n", "locked", "allow-dns")

        def none_resolve() -> bool:
            return all(answers(pod, name, tcp, 0.5) == "timeout" for pod, name in queries)

        assert wait_until(none_resolve), {q: answers(*q, tcp, 0.5) for q in queries}
        kubectl("apply", "-f", str(DNS_EXAMPLE / "policies.yaml"))
        assert wait_until(all_resolve), {q: answers(*q, tcp) for q in queries}
    finally:
        remove(kubectl, DNS_EXAMPLE)
