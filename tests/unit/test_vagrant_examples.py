"""vagrant/check.sh's example check, the parts that need no cluster
(vagrant/example_objects.py): every example becomes objects that validate against the
Kubernetes schema, on the workers, with its labels, named ports and Services; nothing
it applies collides with a cluster's own objects; the probe commands and how their
outcomes read; which checks of expected.txt a real cluster makes. And the script
itself starts, finding its pure half beside it. (The probing runs only on a real
Vagrant host: docs/deploy.md.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest

from agent.expectations import CheckExpectation, parse_expectations

REPO = Path(__file__).resolve().parents[2]
VAGRANT = REPO / "vagrant"
EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())
K8S_VERSION = "1.31.0"  # the Vagrant lab's k3s


def helper():
    spec = importlib.util.spec_from_file_location("example_objects", VAGRANT / "example_objects.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def deployed(folder: Path) -> tuple[list[dict], list[dict]]:
    h = helper()
    docs = h.load_example(folder)
    lab_nodes = sorted({d["spec"]["nodeName"] for d in docs if d.get("kind") == "Pod"})
    return docs, h.deployable(docs, h.node_map(["worker-1", "worker-2"], lab_nodes))


@pytest.mark.parametrize("folder", EXAMPLES, ids=lambda p: p.name)
def test_every_example_deploys_as_valid_objects_on_the_workers(folder):
    docs, objects = deployed(folder)
    assert [o["kind"] for o in objects] == [d["kind"] for d in docs]
    for original, obj in zip(docs, objects, strict=True):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
        if obj["kind"] == "Service":
            assert obj["spec"] == original["spec"]  # selector and ports as written
        if obj["kind"] != "Pod":
            continue
        assert obj["metadata"]["labels"] == original["metadata"].get("labels", {})
        assert obj["spec"]["nodeName"] in ("worker-1", "worker-2")
        declared = [p for c in original["spec"]["containers"] for p in c.get("ports", [])]
        served = [p for c in obj["spec"]["containers"] for p in c.get("ports", [])]
        assert served == declared  # named ports resolve as in the example


def test_the_examples_services_are_deployed():
    _, objects = deployed(REPO / "examples/01-three-tier")
    services = [o["metadata"]["name"] for o in objects if o["kind"] == "Service"]
    assert services == ["frontend", "backend", "database"]


def test_a_service_takes_the_cluster_ip_the_cluster_allocates():
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "x"},
        "spec": {"clusterIP": "198.19.241.9", "clusterIPs": ["198.19.241.9"], "ports": []},
    }
    assert helper().deployable_service(service)["spec"] == {"ports": []}


def ns(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def obj(kind: str, namespace: str, name: str = "o") -> dict:
    return {"kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": {}}


@pytest.mark.parametrize(
    ("docs", "want"),
    [
        ([ns("shop"), obj("Pod", "shop"), obj("Service", "shop")], []),
        (
            [ns("locked"), obj("Pod", "kube-system", "coredns")],
            ["Pod kube-system/coredns: not in a namespace the example creates"],
        ),
        (
            [ns("kube-system"), obj("Service", "kube-system", "kube-dns")],
            [
                "namespace kube-system is the cluster's own",
                "Service kube-system/kube-dns: not in a namespace the example creates",
            ],
        ),
        ([obj("NetworkPolicy", "default")], ["NetworkPolicy default/o: not in a namespace"]),
    ],
)
def test_objects_outside_the_examples_own_namespaces_are_collisions(docs, want):
    found = helper().collisions(docs)
    assert [f[: len(w)] for f, w in zip(found, want, strict=False)] == want
    assert len(found) == len(want)


def test_an_example_that_would_collide_is_refused_before_anything_is_applied():
    h = helper()
    with pytest.raises(h.CheckError, match=r"collides with the cluster's objects: .*coredns"):
        h.deployable([ns("locked"), obj("Pod", "kube-system", "coredns")], {})


@pytest.mark.parametrize(
    ("returncode", "stderr", "allowed"),
    [
        (0, "", True),
        (1, "REFUSED", True),  # it got through; nothing listens on that port
        (1, "REFUSED: read udp ...: connection refused", True),
        (1, "TIMEOUT", False),  # dropped
        (1, "OTHER: no route to host", None),
        (1, 'error: unable to upgrade connection: container not found ("serve")', None),
    ],
)
def test_probe_outcomes(returncode, stderr, allowed):
    assert helper().verdict(returncode, stderr) is allowed


@pytest.mark.parametrize(
    ("returncode", "stdout", "allowed"),
    [
        (0, "10.43.0.10\n", True),
        (0, ";; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 7\n", True),  # an answer too
        (9, ";; connection timed out; no servers could be reached\n", False),
        (9, ";; communications error to 10.43.0.10#53: connection refused\n", True),
        (1, "Invalid option: +frob\n", None),
        (126, "", None),  # no dig in the container
    ],
)
def test_dns_probe_outcomes(returncode, stdout, allowed):
    assert helper().dig_verdict(returncode, stdout) is allowed


def test_a_service_port_53_is_asked_a_dns_query_and_others_are_connected_to():
    h = helper()
    assert h.asks_dns(53, "UDP") and h.asks_dns(53, "TCP")
    assert not h.asks_dns(53, "SCTP") and not h.asks_dns(5353, "UDP")
    assert h.dig_argv("10.43.0.10", "UDP") == [
        "dig", "@10.43.0.10", "+time=2", "+tries=1", "kube-dns.kube-system.svc.cluster.local", "A",
    ]  # fmt: skip
    assert "+tcp" in h.dig_argv("10.43.0.10", "TCP")
    assert h.connect_argv("10.43.7.1", 80, "TCP") == [
        "/agnhost", "connect", "10.43.7.1:80", "--timeout=1s", "--protocol=tcp",
    ]  # fmt: skip


def test_the_checks_a_cluster_makes_are_through_services_from_the_examples_pods():
    text = """\
check shop/frontend svc/shop/backend 80/TCP allowed
check shop/frontend shop/backend 8080/TCP allowed
check 198.19.200.7 svc/shop/backend 80/TCP denied
check kube-system/coredns svc/shop/backend 80/TCP allowed
"""
    found = helper().service_checks(parse_expectations(text), {"shop/frontend", "shop/backend"})
    assert found == [CheckExpectation("shop/frontend", "svc/shop/backend", 80, "TCP", True)]


def test_examples_05_and_01_are_checked_through_their_services_and_the_clusters_dns():
    h = helper()
    for name, want in [
        ("01-three-tier", {"svc/shop/backend", "svc/shop/database", "svc/shop/frontend"}),
        ("05-default-deny-with-dns", {"svc/kube-system/kube-dns", "svc/locked/b"}),
    ]:
        folder = REPO / "examples" / name
        pods = {
            f"{d['metadata']['namespace']}/{d['metadata']['name']}"
            for d in h.load_example(folder)
            if d["kind"] == "Pod"
        }
        checks = h.service_checks(parse_expectations((folder / "expected.txt").read_text()), pods)
        assert {c.dst for c in checks} == want


def test_a_check_prints_what_the_cluster_did_and_marks_a_disagreement():
    check = CheckExpectation("locked/a", "svc/locked/b", 80, "TCP", False)
    assert helper().check_line(check, "10.43.5.5", False) == (
        "  locked/a -> svc/locked/b (10.43.5.5) 80/TCP: denied, expected denied",
        False,
    )
    line, wrong = helper().check_line(check, "10.43.5.5", None)
    assert wrong and line.startswith("! ") and "no answer" in line


def test_the_check_script_starts_and_finds_its_pure_half(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(VAGRANT / "examples.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--workers" in proc.stdout
