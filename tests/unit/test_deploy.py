"""The deployment (daemonset/, Vagrantfile, vagrant/): everything that can be checked
without a Kubernetes cluster or a VM. Each overlay as `kubectl kustomize` renders it
(daemonset/iptables/, daemonset/ebpf/, daemonset/uninstall/): schema, RBAC, each
backend's privileges and nothing more, the agent's arguments against the lab's; the one
package list, the kernel headers script, the CNI configuration against the lab's, the
Vagrantfile evaluated, shellcheck, Prometheus' configuration, and the docs' statement
of what was verified where. No root needed; ruby, shellcheck and promtool come from
`make setup`, kubectl is the lab's (a missing tool fails, never skips)."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
from ipaddress import IPv4Network
from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate
import pytest
import yaml
from kubernetes import client

import agent
from agent.cli import build_parser
from agent.loop.watch import kinds
from lab import lab
from lab.config import LabNode
from lab.kubelet.kubelet import Kubelet
from tests.support.containerfile import containerfile_instructions

REPO = Path(__file__).resolve().parents[2]
DAEMONSET = REPO / "daemonset"
VAGRANT = REPO / "vagrant"
# The Vagrant lab's Kubernetes (k3s v1.31) and the newest the validator knows.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
OVERLAYS = ("iptables", "ebpf", "uninstall")
# What the eBPF overlay's mount moves: the node's /sys/fs/bpf/picket is the container's
# /sys/fs/bpf, where the lab's agents (not in a container) use the default pin root.
POD_ONLY = {"iptables": [], "ebpf": ["--bpf-pin-root", "/sys/fs/bpf"]}
BPF_DIR = "/sys/fs/bpf/picket"


@functools.cache
def rendered(overlay: str) -> tuple[dict, ...]:
    proc = run(tool("kubectl"), "kustomize", str(DAEMONSET / overlay))
    assert proc.returncode == 0, proc.stderr
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def manifests() -> list[tuple[str, dict]]:
    return [(overlay, doc) for overlay in OVERLAYS for doc in rendered(overlay)]


def only(kind: str, overlay: str = "iptables") -> dict:
    (found,) = [doc for doc in rendered(overlay) if doc["kind"] == kind]
    return found


def daemonset_pod(overlay: str = "iptables") -> dict:
    return only("DaemonSet", overlay)["spec"]["template"]["spec"]


def agent_container(backend: str = "iptables") -> dict:
    (container,) = [c for c in daemonset_pod(backend)["containers"] if c["name"] == "agent"]
    return container


def host_paths(overlay: str, container: dict) -> dict[str, str | None]:
    """A container's mount paths -> the node path each shows (None: not the node's)."""
    volumes = {v["name"]: v for v in daemonset_pod(overlay)["volumes"]}
    return {
        m["mountPath"]: volumes[m["name"]].get("hostPath", {}).get("path")
        for m in container["volumeMounts"]
    }


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (make setup installs it)"
    return path


def run(*argv: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, check=False, env=env, **kw
    )


# --- manifests ------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("source", "doc"), manifests(), ids=lambda v: str(v)[:40])
def test_every_manifest_validates_against_the_kubernetes_schema(source, doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_refuses_a_misspelled_field():
    broken = copy.deepcopy(only("DaemonSet"))
    broken["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_rbac_is_exactly_get_list_watch_on_what_the_agent_watches():
    assert [d for d in rendered("ebpf") if d["kind"] != "DaemonSet"] == [
        d for d in rendered("iptables") if d["kind"] != "DaemonSet"
    ]  # the overlays differ in the DaemonSet only
    roles = [doc for doc in rendered("iptables") if doc["kind"] in ("Role", "ClusterRole")]
    assert [r["metadata"]["name"] for r in roles] == ["picket-agent"]
    granted = {
        (group, resource, frozenset(rule["verbs"]))
        for rule in roles[0]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    read = frozenset({"get", "list", "watch"})
    assert granted == {(group, resource, read) for group, resource in watched_resources()}
    assert granted == {
        ("", "pods", read),
        ("", "namespaces", read),
        ("", "nodes", read),
        ("", "services", read),
        ("networking.k8s.io", "networkpolicies", read),
        ("discovery.k8s.io", "endpointslices", read),
    }
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in roles[0]["rules"])
    binding = only("ClusterRoleBinding")
    account = only("ServiceAccount")["metadata"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "picket-agent",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    assert daemonset_pod()["serviceAccountName"] == account["name"]


API_GROUPS = {
    "CoreV1Api": "",
    "NetworkingV1Api": "networking.k8s.io",
    "DiscoveryV1Api": "discovery.k8s.io",
}


def watched_resources() -> set[tuple[str, str]]:
    """(API group, resource) of each kind the agent lists and watches, from the client
    calls agent/loop/watch.py makes (list_endpoint_slice_for_all_namespaces ->
    endpointslices)."""
    found = set()
    for kind in kinds(client.ApiClient()):
        call = kind.list_call
        name = call.__name__.removeprefix("list_").removesuffix("_for_all_namespaces")
        name = name.replace("_", "")
        plural = name[:-1] + "ies" if name.endswith("y") else name + "s"
        found.add((API_GROUPS[type(call.__self__).__name__], plural))
    return found


# --- the agent's arguments: the lab's and the DaemonSet's -----------------------------


@pytest.mark.parametrize("backend", ["iptables", "ebpf"])
def test_daemonset_args_are_the_flags_the_lab_passes(tmp_path, monkeypatch, backend):
    """Run the lab's own agent start-up (with process start captured) and derive each
    overlay's args from what it launches: only what a pod gets from its environment
    (node name, in-cluster credentials) and the eBPF pin root its mount moves differ."""
    started = []
    monkeypatch.setattr(lab.processes, "start", lambda *a, **kw: started.append((a, kw)))
    lab._reconcile_agents(tmp_path, [LabNode(1), LabNode(2)], backend, "")
    assert len(started) == 2
    (state, name, argv), kw = started[0]
    assert state == tmp_path
    assert (name, kw) == ("agent-node-1", {"netns": "picket-node-1"})
    assert argv[:2] == ["-m", "agent.cli"]
    lab_args = argv[2:]
    lab_only = ["--node", "node-1", "--kubeconfig", str(tmp_path / "kubeconfig")]
    assert lab_args[-4:] == lab_only
    deployed = [
        a.replace(lab.NODE_IP, str(LabNode(1).address)) for a in agent_container(backend)["args"]
    ]
    assert lab_args[:-4] + POD_ONLY[backend] == deployed
    assert agent_container(backend)["args"] == lab.agent_args(backend) + POD_ONLY[backend]


def test_deployed_args_are_valid_agent_flags_and_the_node_comes_from_the_environment(
    monkeypatch,
):
    monkeypatch.setenv("NODE_NAME", "worker-1")
    for backend in ("iptables", "ebpf"):
        env = {e["name"]: e for e in agent_container(backend)["env"]}
        assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
        parsed = build_parser().parse_args(agent_container(backend)["args"])
        assert (parsed.command, parsed.backend, parsed.node) == ("agent", backend, "worker-1")
        assert parsed.kubeconfig is None  # in-cluster service account


def test_each_backend_runs_with_its_own_privileges_only():
    """The iptables overlay: NET_ADMIN and NET_RAW, the runtime's default seccomp and
    AppArmor profiles, nothing of the BPF filesystem, no kernel headers, no init
    container. The eBPF one: BPF and PERFMON on top, Unconfined profiles, and of the BPF
    filesystem only Picket's own directory; its init container (which removes the
    iptables backend's rules) has the iptables privileges. The uninstall: no BPF."""
    ipt, ebpf = agent_container("iptables"), agent_container("ebpf")
    assert ipt["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["NET_ADMIN", "NET_RAW"],
    }
    for profile in ("seccompProfile", "appArmorProfile"):
        assert ipt["securityContext"][profile] == {"type": "RuntimeDefault"}
        assert ebpf["securityContext"][profile] == {"type": "Unconfined"}
    assert "initContainers" not in daemonset_pod("iptables")
    assert set(host_paths("iptables", ipt).values()) == {
        "/run/xtables.lock",
        "/run/systemd/journal",
        None,
    }
    assert ebpf["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["NET_ADMIN", "NET_RAW", "BPF", "PERFMON"],
    }
    bpf = {path: node for path, node in host_paths("ebpf", ebpf).items() if node and "bpf" in node}
    assert bpf == {"/sys/fs/bpf": BPF_DIR}
    (init,) = daemonset_pod("ebpf")["initContainers"]
    assert init["securityContext"] == ipt["securityContext"]
    assert "--backend iptables --cleanup" in init["args"][0]
    (cleanup,) = daemonset_pod("uninstall")["containers"]
    assert cleanup["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    assert {p: n for p, n in host_paths("uninstall", cleanup).items() if n and "bpf" in n} == {
        "/sys/fs/bpf": BPF_DIR
    }
    script = cleanup["args"][0]
    assert "--backend iptables --cleanup" in script
    assert "--backend ebpf --bpf-pin-root /sys/fs/bpf --cleanup" in script


def metrics_port_of(args: list[str]) -> int:
    return int(args[args.index("--metrics-addr") + 1].rpartition(":")[2])


def test_the_metrics_port_agrees_everywhere(tmp_path):
    container, pod = agent_container(), only("DaemonSet")["spec"]["template"]
    port = metrics_port_of(container["args"])
    default = build_parser().parse_args(["agent"]).metrics_addr
    assert port == int(default.rpartition(":")[2])  # the deployed value is the default
    assert container["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    probes = {
        k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": {"path": "/healthz", "port": "metrics"},
        "livenessProbe": {"path": "/healthz", "port": "metrics"},
        "readinessProbe": {"path": "/readyz", "port": "metrics"},
    }
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    service = only("Service")
    assert service["spec"]["clusterIP"] == "None"  # headless: one target per agent
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == pod["metadata"]["labels"]
    targets = prometheus_targets(tmp_path, vagrant_lab()["env"])
    assert {t.rpartition(":")[2] for t in targets} == {str(port)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_daemonset_is_a_node_agent(overlay):
    pod = daemonset_pod(overlay)
    assert pod["hostNetwork"] is True
    assert pod["tolerations"] == [{"operator": "Exists"}]  # every node, every taint
    assert pod["priorityClassName"] == "system-node-critical"
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        security = container["securityContext"]
        assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert container["image"] == agent_container()["image"]


def test_the_ebpf_agent_mounts_what_it_pins_and_compiles_with():
    mounts = {m["mountPath"]: m for m in agent_container("ebpf")["volumeMounts"]}
    assert host_paths("ebpf", agent_container("ebpf")) == {
        "/sys/fs/bpf": BPF_DIR,
        "/run/picket": "/run/picket",
        "/run/xtables.lock": "/run/xtables.lock",
        "/run/systemd/journal": "/run/systemd/journal",
        "/host/lib/modules": "/lib/modules",
        "/host/usr/src": "/usr/src",
        "/lib/modules": None,  # emptyDir: the entry point links the headers here
        "/tmp": None,
    }
    assert mounts["/host/lib/modules"]["readOnly"] and mounts["/host/usr/src"]["readOnly"]
    assert mounts["/sys/fs/bpf"]["mountPropagation"] == "HostToContainer"


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize(("backend", "rss"), [("iptables", 95), ("ebpf", 230)])
def test_resources_cover_the_measurements(backend, rss):
    """docs/deploy.md: RSS 95 MiB (iptables), 230 MiB (eBPF), drop log under 64 MiB."""
    resources = agent_container(backend)["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert mebibytes(requests["memory"]) >= rss
    assert mebibytes(limits["memory"]) >= rss + 64
    assert mebibytes(limits["memory"]) >= mebibytes(requests["memory"])
    assert requests["cpu"].endswith("m") and "cpu" in limits


def test_the_image_is_the_versioned_local_build():
    image = agent_container()["image"]
    name, _, tag = image.rpartition(":")
    assert (name, tag) == ("localhost/picket", agent.__version__)
    assert agent_container()["imagePullPolicy"] == "Never"  # imported on each node
    code = f"source {VAGRANT}/lib.sh; image_ref"
    assert run("bash", "-c", code).stdout.strip() == image  # what the nodes build


# --- the image: one package list, one headers script ----------------------------------


def packages(*sections: str) -> list[str]:
    proc = run("bash", "scripts/debian-packages.sh", *sections)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_the_package_list_has_sections_and_one_reader():
    everything = packages()
    sections = ("agent", "cni", "lab", "dev")
    assert sorted(everything) == sorted(p for s in sections for p in packages(s))
    assert len(set(everything)) == len(everything)
    assert {"python3-bpfcc", "python3-systemd", "iptables", "ipset", "conntrack"} <= set(
        packages("agent")
    )
    assert packages("cni") == ["containernetworking-plugins"]
    bad = run("bash", "scripts/debian-packages.sh", "agent", "agnet")
    assert bad.returncode == 2 and "no section [agnet]" in bad.stderr
    setup = (REPO / "scripts/setup.sh").read_text()
    assert 'bash "$repo/scripts/debian-packages.sh"; }' in setup  # all sections
    assert "debian-packages.txt" not in setup  # read only through the script


def test_the_containerfile_installs_the_agent_section_of_the_one_list():
    steps = containerfile_instructions()
    assert steps[0].startswith("FROM docker.io/library/debian:bookworm")
    copies = [s.split()[1:-1] for s in steps if s.startswith("COPY")]
    assert ["scripts/debian-packages.txt", "scripts/debian-packages.sh"] in copies
    installs = [s for s in steps if "apt-get install" in s]
    assert len(installs) == 1
    (install,) = installs
    assigned = re.search(r'packages="\$\(bash (\S+) (\w+)\)"', install)
    assert assigned and assigned.groups() == (
        "/opt/picket/src/scripts/debian-packages.sh",
        "agent",
    )
    # The assignment fails the build when the reader fails; nothing else is installed.
    after = install.split("apt-get install", 1)[1].split("&&")[0].split()
    assert after == ["-y", "--no-install-recommends", "$packages"]
    assert install.index("packages=") < install.index("apt-get install")


def test_setup_and_the_image_link_kernel_headers_with_one_script():
    setup = (REPO / "scripts/setup.sh").read_text()
    entry = (DAEMONSET / "entrypoint.sh").read_text()
    assert 'bash "$repo/scripts/kernel-headers.sh"' in setup
    assert "link_kernel_headers" not in setup  # not a second copy
    assert "bash /opt/picket/src/scripts/kernel-headers.sh --node /host" in entry
    assert "COPY scripts/kernel-headers.sh /opt/picket/src/scripts/" in containerfile_instructions()
    mounts = {m["mountPath"] for m in agent_container("ebpf")["volumeMounts"]}
    assert {"/host/lib/modules", "/host/usr/src"} <= mounts  # eBPF only: BCC compiles
    assert not {"/host/lib/modules", "/lib/modules"} & {
        m["mountPath"] for m in agent_container("iptables")["volumeMounts"]
    }


def headers(local: Path, *args: str) -> tuple[str, dict[str, str]]:
    env = {**os.environ, "KERNEL_HEADERS_ROOT": str(local)}
    proc = run("bash", "scripts/kernel-headers.sh", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    moddir = local / "lib/modules" / os.uname().release
    links = {p.name: os.readlink(p) for p in moddir.glob("*") if p.is_symlink()}
    return proc.stderr, links


def test_kernel_headers_prefer_the_nodes_own_tree(tmp_path):
    release = os.uname().release
    node = tmp_path / "host"
    for part in ("amd64", "common"):
        (node / f"usr/src/linux-headers-{release}-{part}/include").mkdir(parents=True)
    (node / "lib/modules" / release).mkdir(parents=True)
    os.symlink(f"/usr/src/linux-headers-{release}-amd64", node / "lib/modules" / release / "build")
    os.symlink(
        f"/usr/src/linux-headers-{release}-common", node / "lib/modules" / release / "source"
    )
    (tmp_path / "image/usr/src/linux-headers-6.1.0-9-amd64/include").mkdir(parents=True)
    (tmp_path / "image/usr/src/linux-headers-6.1.0-9-common").mkdir(parents=True)
    log, links = headers(tmp_path / "image", "--node", str(node))
    assert links == {
        "build": f"{node}/usr/src/linux-headers-{release}-amd64",
        "source": f"{node}/usr/src/linux-headers-{release}-common",
    }
    assert "the node's headers" in log


def test_kernel_headers_fall_back_to_the_distribution_tree(tmp_path):
    image = tmp_path / "image"
    for version in ("6.1.0-9", "6.1.0-12"):
        (image / f"usr/src/linux-headers-{version}-amd64/include").mkdir(parents=True)
        (image / f"usr/src/linux-headers-{version}-common").mkdir(parents=True)
    (tmp_path / "host/lib/modules").mkdir(parents=True)  # a node without headers
    _, links = headers(image, "--node", str(tmp_path / "host"))
    assert links == {
        "build": f"{image}/usr/src/linux-headers-6.1.0-12-amd64",
        "source": f"{image}/usr/src/linux-headers-6.1.0-12-common",
    }
    # Already in place: left alone.
    (image / "usr/src/linux-headers-6.1.0-12-amd64").rename(image / "usr/src/moved")
    os.remove(image / "lib/modules" / os.uname().release / "build")
    (image / "lib/modules" / os.uname().release / "build/include").mkdir(parents=True)
    _, links = headers(image)
    assert "build" not in links  # a real directory, not replaced by a link


def test_kernel_headers_without_any_tree_say_so_and_succeed(tmp_path):
    (tmp_path / "usr/src").mkdir(parents=True)
    log, links = headers(tmp_path)
    assert links == {} and "the eBPF backend will not compile" in log


# --- the CNI: one generator -----------------------------------------------------------

# Vagrant.configure hands the Vagrantfile a recorder that accepts every configuration
# call and logs it; then the Vagrantfile's nodes, its scripts' environment and the calls
# are printed as JSON.
VAGRANT_STUB = """
require "json"
class Recorder
  def initialize(log, path)
    @log = log
    @path = path
  end

  def method_missing(name, *args, **kw, &blk)
    call = (@path + [name.to_s]).join(".")
    @log << { "call" => call, "args" => args.map(&:to_s),
              "kw" => kw.to_h { |k, v| [k.to_s, v.is_a?(Hash) ? v : v.to_s] } }
    child = Recorder.new(@log, @path + [name.to_s])
    blk&.call(child)
    child
  end

  def respond_to_missing?(*)
    true
  end
end

module Vagrant
  LOG = []
  def self.configure(_version)
    yield Recorder.new(LOG, ["config"])
  end
end

load ARGV.fetch(0)
puts JSON.generate({ "nodes" => LAB_NODES, "env" => COMMON_ENV, "calls" => Vagrant::LOG })
"""


def evaluate_vagrantfile(**env: str) -> subprocess.CompletedProcess:
    return run(tool("ruby"), "-e", VAGRANT_STUB, "Vagrantfile", env={**os.environ, **env})


def vagrant_lab(**env: str) -> dict:
    """The Vagrantfile evaluated by ruby with Vagrant stubbed: its nodes, the
    environment its scripts get, and every configuration call."""
    proc = evaluate_vagrantfile(**env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def vagrant_conflist(tmp_path: Path, lab_env: dict, node: str) -> dict:
    env = {**os.environ, **lab_env, "PICKET_NODE": node}
    out = tmp_path / node
    proc = run("bash", "vagrant/k3s.sh", "--conflist-only", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "10-picket.conflist").read_text())


def lab_conflist(name: str, cidr: str) -> dict:
    """What the netns lab's kubelet uses for a node with this pod range (an IPv4-only
    lab: the Vagrant lab's k3s is single-stack)."""
    node = SimpleNamespace(name=name, pod_cidrs=lambda families: (IPv4Network(cidr),))
    return Kubelet(None, [], Path("/run/picket-lab"), families=(4,)).conflist(node)


def without_data_dir(conflist: dict) -> dict:
    """host-local's dataDir is the lab's only addition: its nodes share one filesystem,
    so each keeps its allocations apart; a real node keeps host-local's default."""
    conflist = copy.deepcopy(conflist)
    for plugin in conflist["plugins"]:
        plugin.get("ipam", {}).pop("dataDir", None)
    return conflist


def test_vagrant_nodes_get_the_conflist_the_lab_uses_for_the_same_pod_range(tmp_path):
    lab_vm = vagrant_lab()
    for node in lab_vm["nodes"]:
        vagrant = vagrant_conflist(tmp_path, lab_vm["env"], node["name"])
        lab_side = lab_conflist(node["name"], node["pod_cidr"])
        assert "dataDir" in lab_side["plugins"][0]["ipam"]
        assert vagrant == without_data_dir(lab_side)
        assert vagrant["plugins"][0]["ipam"]["ranges"] == [[{"subnet": node["pod_cidr"]}]]


def test_a_lab_node_range_generates_the_lab_nodes_conflist(tmp_path):
    """The other way round: the Vagrant generator fed a lab node's range."""
    node = LabNode(1)
    lab_env = {"PICKET_NODES": f"{node.name},{node.address},{node.pod_cidr}"}
    vagrant = vagrant_conflist(tmp_path, lab_env, node.name)
    kubelet = Kubelet(None, [node], tmp_path, families=(4,))
    assert vagrant == without_data_dir(kubelet.conflist(node))


def test_the_cni_generator_needs_only_the_standard_library():
    # -S: no site-packages, as on a bare Vagrant node.
    proc = run("/usr/bin/python3", "-S", "-m", "lab.cni", "--pod-cidr", "10.42.7.0/24")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.42.7.0/24"}]]
    bad = run("/usr/bin/python3", "-S", "-m", "lab.cni", "--pod-cidr", "10.42.7.1/24")
    assert bad.returncode == 2 and "has host bits set" in bad.stderr


# --- the Vagrantfile and its scripts --------------------------------------------------


def test_the_vagrantfile_parses_without_warnings():
    proc = run(tool("ruby"), "-wc", "Vagrantfile")
    assert proc.returncode == 0 and proc.stdout.strip() == "Syntax OK", proc.stderr
    assert proc.stderr == ""


def shell_scripts() -> list[Path]:
    found = [*VAGRANT.glob("*.sh"), *DAEMONSET.glob("*.sh"), *(REPO / "scripts").glob("*.sh")]
    return [*sorted(found), REPO / ".ci/run"]


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck(script):
    proc = run(tool("shellcheck"), "--external-sources", "--source-path=SCRIPTDIR", str(script))
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(REPO)))
def test_scripts_stop_at_the_first_error(script):
    if script.name == "lib.sh":  # sourced: the scripts that source it set the options
        return
    assert "set -euo pipefail" in script.read_text()


def test_the_vagrant_lab_nodes_come_from_one_place():
    lab_vm = vagrant_lab()
    names = [n["name"] for n in lab_vm["nodes"]]
    assert names == ["cp", "worker-1", "worker-2"]
    cluster = IPv4Network(lab_vm["env"]["PICKET_CLUSTER_CIDR"])
    cidrs = [IPv4Network(n["pod_cidr"]) for n in lab_vm["nodes"]]
    assert all(c.subnet_of(cluster) for c in cidrs) and len(set(cidrs)) == len(cidrs)
    assert len({n["ip"] for n in lab_vm["nodes"]}) == len(names)
    assert lab_vm["env"]["PICKET_SERVER"] == lab_vm["nodes"][0]["ip"]
    words = lab_vm["env"]["PICKET_NODES"].split()
    assert words == [f"{n['name']},{n['ip']},{n['pod_cidr']}" for n in lab_vm["nodes"]]
    more = vagrant_lab(PICKET_WORKERS="4")
    assert [n["name"] for n in more["nodes"]][-1] == "worker-4"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"PICKET_BACKEND": "nft"}, "PICKET_BACKEND must be iptables or ebpf"),
        ({"PICKET_WORKERS": "0"}, "PICKET_WORKERS must be between 1 and 200"),
    ],
)
def test_the_vagrantfile_refuses_bad_settings(setting, message):
    proc = evaluate_vagrantfile(**setting)
    assert proc.returncode != 0 and message in proc.stderr


def provisioners(lab_vm: dict) -> dict[str, list[tuple[str, dict]]]:
    """Each machine's provisioners in order: (name, options)."""
    machine, out = None, {}
    for call in lab_vm["calls"]:
        if call["call"] == "config.vm.define":
            machine = call["args"][0]
            out[machine] = []
        elif call["call"].endswith(".vm.provision") and machine:
            out[machine].append((call["args"][0], call["kw"]))
    return out


def test_every_node_is_provisioned_by_scripts_that_exist_with_the_settings_they_read():
    lab_vm = vagrant_lab()
    steps = provisioners(lab_vm)
    assert [name for name, _ in steps["cp"]] == ["node", "boot", "k3s", "deploy"]
    assert [name for name, _ in steps["worker-1"]] == ["node", "boot", "k3s"]
    read = set()
    for machine, machine_steps in steps.items():
        for _, options in machine_steps:
            command = options["inline"]
            assert command.startswith("bash /vagrant/vagrant/")
            script = VAGRANT / command.removeprefix("bash /vagrant/vagrant/")
            assert script.is_file(), command
            env = options["env"]
            assert env["PICKET_NODE"] == machine
            read |= set(re.findall(r"\$\{?(PICKET_[A-Z0-9_]+)", script.read_text()))
            read |= set(re.findall(r"\$\{?(PICKET_[A-Z0-9_]+)", (VAGRANT / "lib.sh").read_text()))
            assert read <= set(env), read - set(env)
    boot = dict(steps["worker-1"])["boot"]
    assert boot["run"] == "always"  # routes and forwarding do not survive a reboot


@pytest.mark.parametrize("backend", ["iptables", "ebpf"])
def test_the_vagrant_lab_applies_the_overlay_of_its_backend(tmp_path, backend):
    env = {**os.environ, **vagrant_lab(PICKET_BACKEND=backend)["env"]}
    proc = run("bash", "vagrant/deploy.sh", "--manifests-only", str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr
    (applied,) = tmp_path.iterdir()
    assert tuple(yaml.safe_load_all(applied.read_text())) == rendered(backend)
    env["PICKET_BACKEND"] = "nft"
    bad = run("bash", "vagrant/deploy.sh", "--manifests-only", str(tmp_path / "x"), env=env)
    assert bad.returncode != 0 and "must be iptables or ebpf" in bad.stderr


def prometheus_targets(tmp_path: Path, lab_env: dict) -> list[str]:
    out = tmp_path / "prometheus"
    proc = run(
        "bash", "vagrant/prometheus.sh", "--config-only", str(out), env={**os.environ, **lab_env}
    )
    assert proc.returncode == 0, proc.stderr
    check = run(tool("promtool"), "check", "config", str(out / "prometheus.yml"))
    assert check.returncode == 0, check.stdout + check.stderr
    groups = json.loads((out / "picket-agents.json").read_text())
    return [t for g in groups for t in g["targets"]]


def test_prometheus_scrapes_every_agent(tmp_path):
    lab_vm = vagrant_lab(PICKET_WORKERS="3")
    targets = prometheus_targets(tmp_path, lab_vm["env"])
    assert [t.rpartition(":")[0] for t in targets] == [n["ip"] for n in lab_vm["nodes"]]


# --- docs -----------------------------------------------------------------------------


def test_the_deploy_doc_says_what_was_verified_where():
    text = (REPO / "docs/deploy.md").read_text()
    section = text.split("## What was verified where", 1)[1].split("\n## ", 1)[0]
    assert "### Verified here" in section and "### Only on a real Vagrant host" in section
    here, real = section.split("### Only on a real Vagrant host")
    assert "tests/unit/test_deploy.py" in here and "daemonset/check-image.sh" in here
    for unverified in ("k3s", "buildah", "Prometheus", "check.sh", "journald", "AppArmor"):
        assert unverified in real


@pytest.mark.parametrize(
    ("args", "links_headers"),
    [
        (["agent", "--backend", "ebpf", "--metrics-addr", ":9402"], True),
        (["agent", "--backend", "ebpf", "--cleanup"], False),
        (["agent", "--backend", "iptables", "--metrics-addr", ":9402"], False),
        (["explain", "x/a", "y/b", "80"], False),
    ],
)
def test_the_entry_point_links_kernel_headers_only_where_bcc_compiles(
    tmp_path, args, links_headers
):
    """The iptables overlay mounts no headers and no writable /lib/modules: its agent
    (and every --cleanup) must go straight to picket. Here the headers script is not
    where the image has it, so trying it fails, which shows it was tried."""
    fake = tmp_path / "picket"
    fake.write_text('#!/bin/sh\necho "picket $*"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    proc = run("bash", str(DAEMONSET / "entrypoint.sh"), *args, env=env)
    if links_headers:
        assert proc.returncode != 0 and "kernel-headers.sh" in proc.stderr
    else:
        assert proc.returncode == 0 and proc.stdout == f"picket {' '.join(args)}\n", proc.stderr
