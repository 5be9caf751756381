"""The lab's DaemonSet controller plan and its container runtime's reading of a pod
(lab/apiserver/daemonsets.py, lab/kubelet/container_spec.py), on the DaemonSets of
daemonset/ as `kubectl kustomize` renders them. Pure: no root, no lab."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lab.apiserver.daemonsets import HASH_LABEL, eligible_nodes, plan
from lab.apiserver.deployments import template_hash
from lab.kubelet.container_spec import (
    SERVICE_ACCOUNT_DIR,
    Mount,
    SpecError,
    capabilities,
    expand,
    launch_spec,
)

DAEMONSET = Path(__file__).resolve().parents[2] / "daemonset"


def rendered_daemonset(overlay: str) -> dict:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not installed (make setup installs it)"
    out = subprocess.run(
        [kubectl, "kustomize", str(DAEMONSET / overlay)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    (found,) = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "DaemonSet"]
    return found


def daemonset(strategy: dict | None = None, selector: dict | None = None) -> dict:
    spec = {"containers": [{"name": "c", "image": "localhost/picket:0.1.0"}]}
    if selector:
        spec["nodeSelector"] = selector
    body = {
        "metadata": {"name": "d", "namespace": "n", "uid": "u", "generation": 2},
        "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": spec}},
    }
    if strategy:
        body["spec"]["updateStrategy"] = strategy
    return body


def pod(name: str, node: str, template_of: dict | None, ready: bool = True) -> dict:
    labels = {HASH_LABEL: template_hash(template_of["spec"]["template"]) if template_of else "old"}
    status = "True" if ready else "False"
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node},
        "status": {"conditions": [{"type": "Ready", "status": status}]},
    }


def test_a_new_daemonset_gets_a_pod_on_every_node():
    todo = plan(daemonset(), ["node-1", "node-2"], [])
    assert todo.create == ["node-1", "node-2"] and todo.delete == []
    assert todo.status["desiredNumberScheduled"] == 2
    assert todo.status["currentNumberScheduled"] == 0
    assert todo.status["observedGeneration"] == 2


def test_a_template_change_replaces_one_ready_node_at_a_time():
    ds = daemonset()
    pods = [pod("p1", "node-1", None), pod("p2", "node-2", None)]
    todo = plan(ds, ["node-1", "node-2"], pods)
    assert todo.delete == ["p1"] and todo.create == []
    # The replacement is there but not ready yet: nothing else goes.
    pods = [pod("q1", "node-1", ds, ready=False), pod("p2", "node-2", None)]
    todo = plan(ds, ["node-1", "node-2"], pods)
    assert todo.delete == [] and todo.create == []
    assert todo.status["updatedNumberScheduled"] == 1 and todo.status["numberReady"] == 1
    pods[0] = pod("q1", "node-1", ds)
    assert plan(ds, ["node-1", "node-2"], pods).delete == ["p2"]


def test_a_node_without_its_pod_is_created_and_holds_back_the_rollout():
    ds = daemonset()
    todo = plan(ds, ["node-1", "node-2"], [pod("p2", "node-2", None)])
    assert todo.create == ["node-1"] and todo.delete == []


def test_an_old_pod_that_is_not_ready_is_replaced_whatever_the_budget():
    ds = daemonset()
    pods = [pod("p1", "node-1", None, ready=False), pod("p2", "node-2", None)]
    assert plan(ds, ["node-1", "node-2"], pods).delete == ["p1"]


def test_max_unavailable_and_on_delete_are_honoured():
    wide = daemonset({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}})
    pods = [pod("p1", "node-1", None), pod("p2", "node-2", None)]
    assert plan(wide, ["node-1", "node-2"], pods).delete == ["p1", "p2"]
    manual = daemonset({"type": "OnDelete"})
    assert plan(manual, ["node-1", "node-2"], pods).delete == []


def test_pods_on_gone_nodes_and_extra_pods_are_deleted():
    ds = daemonset()
    pods = [pod("p1", "node-1", ds), pod("p1b", "node-1", None), pod("p3", "node-3", ds)]
    todo = plan(ds, ["node-1"], pods)
    assert sorted(todo.delete) == ["p1b", "p3"]


def test_virtual_nodes_and_unselected_nodes_get_no_pod():
    def node(name: str, **labels: str) -> dict:
        return {"metadata": {"name": name, "labels": labels}}

    nodes = [node("node-1", zone="a"), node("node-2", zone="b")]
    nodes.append(node("vnode-1", **{"picket.io/lab-node": "virtual"}))
    assert eligible_nodes(daemonset(), nodes) == ["node-1", "node-2"]
    assert eligible_nodes(daemonset(selector={"zone": "b"}), nodes) == ["node-2"]


def _agent(overlay: str, kind: str = "containers", name: str = "agent") -> tuple[dict, dict]:
    ds = copy.deepcopy(rendered_daemonset(overlay))
    pod_body = {
        "metadata": {"name": "picket-agent-x", "namespace": "picket-system", "uid": "1"},
        "spec": {**ds["spec"]["template"]["spec"], "nodeName": "node-1"},
    }
    (container,) = [c for c in pod_body["spec"][kind] if c["name"] == name]
    return pod_body, container


def test_the_agent_runs_with_the_overlay_args_env_and_capabilities():
    pod_body, container = _agent("iptables")
    spec = launch_spec(pod_body, container, {"HOSTNAME": "node-1"}, "198.18.0.1", "198.18.0.1")
    assert spec.argv[1:] == ["agent", "--backend", "iptables", "--metrics-addr", "198.18.0.1:9402"]
    assert spec.env["NODE_NAME"] == "node-1" and spec.env["NODE_IP"] == "198.18.0.1"
    assert spec.bounding_set == "-all,+net_admin,+net_raw"
    assert spec.no_new_privs and spec.read_only_root
    targets = {m.target: m for m in spec.mounts}
    assert targets["/run/xtables.lock"].host_path == "/run/xtables.lock"
    assert targets["/tmp"].empty_dir == "tmp"
    assert targets[SERVICE_ACCOUNT_DIR] == Mount(SERVICE_ACCOUNT_DIR, True, service_account=True)


def test_the_ebpf_agent_gets_its_bpf_directory_and_more_capabilities():
    pod_body, container = _agent("ebpf")
    spec = launch_spec(pod_body, container, {}, "198.18.0.2", "198.18.0.2")
    assert "+bpf" in spec.bounding_set and "+perfmon" in spec.bounding_set
    targets = {m.target: m for m in spec.mounts}
    assert targets["/sys/fs/bpf"].host_path == "/sys/fs/bpf/picket"
    assert targets["/host/lib/modules"].read_only
    init_pod, init = _agent("ebpf", "initContainers", "cleanup-iptables-backend")
    init_spec = launch_spec(init_pod, init, {}, "198.18.0.2", "198.18.0.2")
    assert init_spec.argv[:2] == ["/bin/bash", "-c"]  # command replaces the entry point
    assert "+bpf" not in init_spec.bounding_set


def test_expansion_follows_kubernetes():
    env = {"A": "1"}
    assert expand("$(A)-$(B)-$$(A)", env) == "1-$(B)-$(A)"


def test_capabilities_default_privileged_and_dropped():
    assert capabilities({"privileged": True}) is None
    assert "+net_raw" in capabilities({}) and "+net_admin" not in capabilities({})
    assert capabilities({"capabilities": {"drop": ["NET_RAW"]}}).count("net_raw") == 0


def test_what_the_lab_cannot_give_is_named():
    pod_body, container = _agent("iptables")
    container["env"].append({"name": "X", "valueFrom": {"secretKeyRef": {"name": "s"}}})
    with pytest.raises(SpecError, match="env X"):
        launch_spec(pod_body, container, {}, "198.18.0.1", "198.18.0.1")
