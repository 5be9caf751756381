"""`lab up` is idempotent, the host namespace gains only `picket-lab0`, and `lab down`
leaves no namespace, link, process (dnsmasq included), rule, mount, pinned map or file
behind, cycle after cycle, whatever the backend."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.processes import lab_process_pids
from tests.support.cluster_dns import dnsmasq_pids
from tests.support.lab_cli import MODEL, Kubectl, picket


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def host_snapshot() -> dict[str, object]:
    """What the host namespace looks like, minus counters that move on their own."""
    links = sorted(
        line.split(":")[1].strip().split("@")[0] for line in _run("ip", "-o", "link").splitlines()
    )
    return {
        "netns": sorted(
            n.split()[0]
            for n in _run("ip", "netns", "list").splitlines()
            if n.startswith("picket-")
        ),
        "links": links,
        "addresses": sorted(_run("ip", "-o", "addr").split("\n")),
        "routes": sorted(_run("ip", "route", "show", "table", "all").splitlines()),
        "routes6": sorted(_run("ip", "-6", "route", "show", "table", "all").splitlines()),
        "iptables": _rules("iptables-save"),
        "ip6tables": _rules("ip6tables-save"),
        "lab_processes": lab_process_pids(),
        "dnsmasq": dnsmasq_pids(),
        "state_dir": Path("/run/picket-lab").exists(),
        "mounts": sorted(
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if "bpf" in line.split()[2]
        ),
        "bpf_pins": Path("/sys/fs/bpf/picket").exists(),
        "ebpf_state": Path("/run/picket").exists(),
    }


def _rules(tool: str) -> list[str]:
    """Rules only: counters and timestamps change without anyone touching the rules."""
    out = subprocess.run([tool], capture_output=True, text=True, check=False).stdout
    return [
        line
        for line in out.splitlines()
        if line.startswith(("-A", "*", ":")) and not line.startswith("#")
    ]


def _strip_counters(rules: list[str]) -> list[str]:
    return [r.split(" [")[0] if r.startswith(":") else r for r in rules]


def test_up_down_cycles_leave_nothing():
    picket("lab", "down")
    before = host_snapshot()
    before["iptables"] = _strip_counters(before["iptables"])
    assert before["netns"] == [] and before["lab_processes"] == []
    for backend, processes in (("none", 5), ("iptables", 7), ("ebpf", 7)):
        picket("lab", "up", "--nodes", "2", "--backend", backend)
        during = host_snapshot()
        assert set(during["links"]) - set(before["links"]) == {"picket-lab0"}
        assert _strip_counters(during["iptables"]) == before["iptables"]
        # API server, kubelet, a kube-proxy per node, the DNS pod's process, and an agent
        # per node with a backend; the DNS pod's dnsmasq.
        assert len(during["lab_processes"]) == processes
        assert len(during["dnsmasq"]) == 1
        removed = picket("lab", "down").stderr
        assert "removed link picket-lab0" in removed
        after = host_snapshot()
        after["iptables"] = _strip_counters(after["iptables"])
        assert after == before


def test_up_is_idempotent():
    picket("lab", "down")
    try:
        first = picket("lab", "up", "--nodes", "2").stdout.strip().splitlines()[-1]
        pids = sorted(lab_process_pids())
        namespaces = host_snapshot()["netns"]
        second = picket("lab", "up", "--nodes", "2").stdout.strip().splitlines()[-1]
        assert first == second
        assert sorted(lab_process_pids()) == pids
        assert host_snapshot()["netns"] == namespaces
        # Growing the lab adds a node; shrinking it is refused.
        picket("lab", "up", "--nodes", "3")
        assert "picket-node-3" in host_snapshot()["netns"]
        shrink = picket("lab", "up", "--nodes", "2", check=False)
        assert shrink.returncode == 1 and "lab down" in shrink.stderr
    finally:
        picket("lab", "down")


def test_an_ipv6_only_lab_gives_pods_ipv6_addresses_only_and_keeps_its_families():
    picket("lab", "down")
    try:
        kubeconfig = picket("lab", "up", "--nodes", "2", "--ip-families", "6").stdout
        kubectl = Kubectl(kubeconfig.strip().splitlines()[-1])
        kubectl("apply", "-f", str(MODEL))
        kubectl("wait", "--for=condition=Ready", "pod", "--all", "-n", "x", "--timeout=60s")
        pod = kubectl.json("get", "pod", "-n", "x", "a")
        ips = [entry["ip"] for entry in pod["status"]["podIPs"]]
        assert len(ips) == 1 and ips[0] == pod["status"]["podIP"] and ips[0].startswith("2001:2:0:")
        node = kubectl.json("get", "node", "node-1")
        assert node["spec"]["podCIDRs"] == ["2001:2:0:1::/64"]
        assert picket("lab", "probe", "x/b", "x/a", "80").stdout.strip() == "connected x/a"
        asked = picket("lab", "probe", "x/b", "x/a", "80", "--family", "4", check=False)
        assert asked.returncode == 1 and "has no IPv4 address" in asked.stderr
        # The families are fixed while the lab is up: every pod has its addresses.
        changed = picket("lab", "up", "--nodes", "2", "--ip-families", "4,6", check=False)
        assert changed.returncode == 1 and "lab down" in changed.stderr
    finally:
        picket("lab", "down")
