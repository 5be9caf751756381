"""The lab with no enforcement: the 3x3 model is fully connected on every protocol,
across nodes and within them, and behaves as a cluster does under kubectl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from lab.config import pod_netns
from tests.support.lab_cli import MODEL, Kubectl, matrix, picket, wait_until


def pods_by_ref(kubectl: Kubectl) -> dict[str, dict]:
    items = kubectl.json("get", "pods", "-A")["items"]
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in items}


@pytest.mark.parametrize("family", ["4", "6"])
@pytest.mark.parametrize("protocol", ["TCP", "UDP", "SCTP"])
@pytest.mark.parametrize("port", [80, 81])
def test_model_is_all_connected(model, protocol, port, family):
    args = ("--namespaces", "x,y,z", "--port", str(port), "--protocol", protocol)
    doc = matrix(*args, "--family", family)
    assert (doc["port"], doc["protocol"]) == (port, protocol)
    refs = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]
    assert sorted(doc["results"]) == refs
    for src in refs:
        assert doc["results"][src] == {dst: True for dst in refs if dst != src}, src


def test_pairs_cross_nodes_and_stay_within_them(model):
    pods = pods_by_ref(model)
    nodes = {ref: p["spec"]["nodeName"] for ref, p in pods.items() if ref[0] in "xyz"}
    assert set(nodes.values()) == {"node-1", "node-2"}
    counts = [list(nodes.values()).count(n) for n in ("node-1", "node-2")]
    assert max(counts) - min(counts) <= 1, "pods are spread evenly"
    for ref, pod in pods.items():
        node = int(pod["spec"]["nodeName"].split("-")[1])
        assert pod["status"]["podIP"].startswith(f"198.18.{node}."), ref
        assert pod["status"]["hostIP"] == f"198.18.0.{node}"
        # Dual-stack (the lab's default): an address per family, IPv4 first.
        ipv4, ipv6 = (entry["ip"] for entry in pod["status"]["podIPs"])
        assert ipv4 == pod["status"]["podIP"] and ipv6.startswith(f"2001:2:0:{node:x}::"), ref
        assert [h["ip"] for h in pod["status"]["hostIPs"]] == [
            f"198.18.0.{node}",
            f"2001:2::{node:x}",
        ]


@pytest.mark.parametrize("family", ["4", "6"])
def test_probe_reports_the_peer_identity(model, family):
    def probe(*args: str) -> str:
        return picket("lab", "probe", *args, "--family", family).stdout.strip()

    assert probe("x/a", "y/b", "80") == "connected y/b"
    assert probe("x/a", "z/c", "81/udp") == "connected z/c"
    assert probe("y/c", "x/b", "80/sctp") == "connected x/b"


@pytest.mark.parametrize("family", ["4", "6"])
@pytest.mark.parametrize("protocol", ["TCP", "UDP", "SCTP"])
def test_unserved_port_is_refused(model, protocol, family):
    proc = picket("lab", "probe", "x/a", "y/b", f"82/{protocol}", "--family", family, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (1, "refused")


def test_probe_by_ip(model):
    ip = model.json("get", "pod", "-n", "z", "b")["status"]["podIP"]
    assert picket("lab", "probe", "x/a", ip, "80").stdout.strip() == "connected z/b"


def test_nodes_are_registered_with_cidr_and_address(kubectl):
    nodes = {n["metadata"]["name"]: n for n in kubectl.json("get", "nodes")["items"]}
    assert sorted(nodes) == ["node-1", "node-2"]
    for i, name in enumerate(sorted(nodes), start=1):
        node = nodes[name]
        assert node["spec"]["podCIDR"] == f"198.18.{i}.0/24"
        assert node["spec"]["podCIDRs"] == [f"198.18.{i}.0/24", f"2001:2:0:{i}::/64"]
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal == [f"198.18.0.{i}", f"2001:2::{i}"]
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"


def test_exec_runs_in_the_pod_namespace(model):
    ip = model.json("get", "pod", "-n", "x", "a")["status"]["podIP"]
    out = picket("lab", "exec", "x/a", "--", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert f"inet {ip}/" in out


def test_recreated_pod_gets_a_new_identity_and_address(model):
    before = model.json("get", "pod", "-n", "x", "c")
    model("delete", "pod", "-n", "x", "c")
    assert model("get", "pod", "-n", "x", "c", check=False).returncode != 0
    model("apply", "-f", str(MODEL))
    model("wait", "--for=condition=Ready", "pod/c", "-n", "x", "--timeout=30s")
    after = model.json("get", "pod", "-n", "x", "c")
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    assert after["status"]["podIP"] != before["status"]["podIP"]
    assert picket("lab", "probe", "y/a", "x/c", "80").stdout.strip() == "connected x/c"
    old_ip = before["status"]["podIP"]
    if old_ip != after["status"]["podIP"]:
        proc = picket("lab", "probe", "y/a", old_ip, "80", check=False)
        assert not proc.stdout.startswith("connected x/c")


def test_relabel_changes_nothing_in_the_pod(model):
    before = model.json("get", "pod", "-n", "y", "a")
    model("label", "pod", "-n", "y", "a", "color=green")
    assert [
        p["metadata"]["name"]
        for p in model.json("get", "pods", "-n", "y", "-l", "color=green")["items"]
    ] == ["a"]
    after = model.json("get", "pod", "-n", "y", "a")
    assert after["status"]["podIP"] == before["status"]["podIP"]
    assert picket("lab", "probe", "x/a", "y/a", "80").stdout.strip() == "connected y/a"
    model("label", "pod", "-n", "y", "a", "color-")
    assert "color" not in model.json("get", "pod", "-n", "y", "a")["metadata"]["labels"]


def test_host_network_pod_serves_from_the_node(kubectl, model):
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hostpod", "namespace": "default"},
        "spec": {
            "hostNetwork": True,
            "nodeSelector": {"kubernetes.io/hostname": "node-2"},
            "containers": [{"name": "c", "image": "agnhost", "ports": [{"containerPort": 8080}]}],
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    kubectl("wait", "--for=condition=Ready", "pod/hostpod", "--timeout=30s")
    pod = kubectl.json("get", "pod", "hostpod")
    assert pod["spec"]["nodeName"] == "node-2"
    assert pod["status"]["podIP"] == "198.18.0.2"
    assert picket("lab", "probe", "x/a", "default/hostpod", "8080").stdout.strip() == (
        "connected default/hostpod"
    )
    kubectl("delete", "pod", "hostpod")


def test_deployment_creates_and_removes_replicas(kubectl):
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "c", "image": "agnhost", "ports": [{"containerPort": 80}]}
                    ]
                },
            },
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=30s")
    pods = kubectl.json("get", "pods", "-l", "app=web")["items"]
    assert len(pods) == 3
    assert all(p["metadata"]["name"].startswith("web-") for p in pods)
    kubectl("scale", "deployment/web", "--replicas=1")
    assert wait_until(lambda: len(kubectl.json("get", "pods", "-l", "app=web")["items"]) == 1)
    assert kubectl.json("get", "deployment", "web")["spec"]["replicas"] == 1
    kubectl("delete", "deployment", "web")
    kubectl("wait", "--for=delete", "pod", "-l", "app=web", "--timeout=30s")
    assert kubectl.json("get", "pods", "-l", "app=web")["items"] == []


def test_invalid_policy_is_refused_with_the_field(kubectl):
    bad = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 79}]}]},
    }
    proc = kubectl("apply", "-f", "-", stdin=json.dumps(bad), check=False)
    assert proc.returncode != 0
    # kubectl renders a 422 from its causes, as it does for a real cluster.
    assert proc.stderr.strip() == (
        'The NetworkPolicy "bad" is invalid: spec.ingress[0].ports[0].endPort: '
        "Invalid value: 79: must be greater than or equal to `port`"
    )


def test_status_lists_nodes_and_pods(model):
    out = picket("lab", "status").stdout
    assert "lab: up, 2 nodes, backend none" in out
    assert "node-1" in out and "node-2" in out
    assert "x/a" in out and "ready" in out
    assert "stored but have no effect" in out


def test_services_are_accepted_and_stored(kubectl):
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "x"},
        "spec": {"selector": {"pod": "a"}, "ports": [{"port": 80}]},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(svc))
    assert kubectl.json("get", "service", "-n", "x", "s")["spec"]["ports"][0]["port"] == 80
    kubectl("delete", "service", "-n", "x", "s")


def test_kubeconfig_command(lab):
    assert picket("lab", "kubeconfig").stdout.strip() == lab
    assert subprocess.run(["test", "-s", lab], check=False).returncode == 0


def test_delete_f_removes_what_apply_f_made(kubectl, tmp_path):
    manifest = tmp_path / "objects.yaml"
    manifest.write_text("""\
apiVersion: v1
kind: Namespace
metadata: {name: scratch}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: scratch}
spec:
  containers: [{name: c, image: agnhost, ports: [{containerPort: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: scratch}
spec: {podSelector: {}}
""")
    kubectl("apply", "-f", str(manifest))
    kubectl("wait", "--for=condition=Ready", "pod/p", "-n", "scratch", "--timeout=30s")
    out = kubectl("delete", "-f", str(manifest)).stdout
    assert 'namespace "scratch" deleted' in out and 'pod "p" deleted' in out
    assert kubectl("get", "namespace", "scratch", check=False).returncode != 0
    assert "scratch" not in picket("lab", "status").stdout


def test_kubelet_restart_keeps_pods_and_collects_deleted_ones(model):
    state = Path("/run/picket-lab")
    pid = int((state / "pids" / "kubelet.pid").read_text())
    before = model.json("get", "pod", "-n", "z", "a")
    os.kill(pid, signal.SIGKILL)
    gone = model.json("get", "pod", "-n", "z", "b")["metadata"]["uid"]
    model("delete", "pod", "-n", "z", "b")  # while no kubelet runs
    picket("lab", "up", "--nodes", "2")  # restarts what is missing
    assert wait_until(
        lambda: (
            picket("lab", "probe", "x/a", "z/a", "80", check=False).stdout.strip()
            == "connected z/a"
        )
    )
    after = model.json("get", "pod", "-n", "z", "a")
    assert after["status"]["podIP"] == before["status"]["podIP"]
    assert wait_until(
        lambda: (
            pod_netns(gone)
            not in subprocess.run(
                ["ip", "netns", "list"], capture_output=True, text=True, check=True
            ).stdout
        )
    )
    model("apply", "-f", str(MODEL))
    model("wait", "--for=condition=Ready", "pod/b", "-n", "z", "--timeout=30s")


@pytest.mark.parametrize(
    ("source", "target", "port", "want"),
    [
        ("x/a", "198.19.200.7", "443", "connected external"),
        ("x/a", "198.19.200.9", "53/udp", "connected external"),
        ("x/a", "198.19.200.9", "99/sctp", "connected external"),
        ("198.19.200.7", "y/b", "80", "connected y/b"),
        ("198.19.200.8", "y/c", "81/sctp", "connected y/c"),
        ("node/node-2", "x/a", "81/udp", "connected x/a"),
        ("198.18.0.1", "z/b", "80", "connected z/b"),
        ("x/a", "2001:2:0:fe00::7", "443", "connected external"),
        ("x/a", "2001:2:0:fe00::9", "53/udp", "connected external"),
        ("x/a", "2001:2:0:fe00::9", "99/sctp", "connected external"),
        ("2001:2:0:fe00::7", "y/b", "80", "connected y/b"),
        ("2001:2:0:fe00::8", "y/c", "81/sctp", "connected y/c"),
        ("2001:2::1", "z/b", "80", "connected z/b"),
    ],
)
def test_probes_from_and_to_outside_and_nodes(model, source, target, port, want):
    # A pod target is probed at its address of the source's family.
    family = ["--family", "6"] if ":" in source else []
    assert picket("lab", "probe", source, target, port, *family).stdout.strip() == want


def test_node_sources_take_the_family_of_the_target(model):
    probe = ("lab", "probe", "node/node-2", "x/a", "81/udp", "--family", "6")
    assert picket(*probe).stdout.strip() == "connected x/a"
    proc = picket("lab", "probe", "external", "x/a", "80", "--family", "6")
    assert proc.stdout.strip() == "connected x/a"


def test_virtual_node_pods_get_addresses_without_namespaces(kubectl):
    picket("lab", "up", "--nodes", "2", "--virtual-nodes", "2")
    assert wait_until(lambda: "vnode-2" in kubectl("get", "nodes").stdout)
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"v{i}", "namespace": "default", "labels": {"virtual": "yes"}},
            "spec": {
                "nodeName": f"vnode-{1 + i % 2}",
                "containers": [{"name": "c", "image": "agnhost"}],
            },
        }
        for i in range(6)
    ]
    kubectl(
        "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": pods})
    )
    kubectl("wait", "--for=condition=Ready", "pod", "-l", "virtual=yes", "--timeout=30s")
    items = kubectl.json("get", "pods", "-l", "virtual=yes")["items"]
    ips = [p["status"]["podIP"] for p in items]
    assert len(set(ips)) == 6
    for pod in items:
        k = int(pod["spec"]["nodeName"].split("-")[1])
        ipv4, ipv6 = (entry["ip"] for entry in pod["status"]["podIPs"])
        assert ipv4.startswith(f"198.19.{k}.") and ipv6.startswith(f"2001:2:0:{0x100 + k:x}::")
        # The same offset into each family's range.
        assert ipv6.rsplit(":", 1)[1] == f"{int(ipv4.rsplit('.', 1)[1]):x}"
    kubectl("delete", "pod", "-l", "virtual=yes")
