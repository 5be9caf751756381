"""`picket lab up|down`: bring the whole lab to the wanted state, idempotently, and
take it all away again."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from kubernetes import client
from kubernetes import config as kubeconfig

from lab import images, processes, topology
from lab.config import (
    AGENT_METRICS_PORT,
    API_ADDRESS,
    API_PORT,
    HOST_LINK,
    IP_FAMILIES_DEFAULT,
    SERVICE_CIDR,
    SERVICE_CIDR6,
    LabNode,
    lab_nodes,
    state_dir,
    virtual_nodes,
)
from lab.dns.addon import ensure_cluster_dns, wait_cluster_dns
from lab.journald import ensure_journald, stop_journald
from lab.kubeproxy.status import wait_programmed
from lab.tls import write_credentials

APISERVER, KUBELET = "apiserver", "kubelet"
BACKENDS = ("none", "iptables", "ebpf")
# How the lab API server validates what it stores: strict, as a real API server does
# (through the agent's model), or off, storing any well-formed object so that tests can
# hand the agents what a real server would store and the model refuses.
API_VALIDATIONS = ("strict", "off")
BPF_ROOT = Path("/sys/fs/bpf")
BPF_PINS = BPF_ROOT / "picket"  # the agents' default pin root
EBPF_STATE = Path("/run/picket")  # the agents' identity numbering (ebpf-<node>.json)


class LabError(RuntimeError):
    pass


def kubeconfig_path(state: Path | None = None) -> Path:
    return (state or state_dir()) / "kubeconfig"


def _read_config(state: Path) -> dict:
    try:
        return json.loads((state / "lab.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait_ready(state: Path, timeout: float = 15.0) -> None:
    """Until the API server answers /readyz over TLS with the lab's CA."""
    context = ssl.create_default_context(cafile=str(state / "ca.crt"))
    url = f"https://{API_ADDRESS}:{API_PORT}/readyz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, context=context, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise LabError(f"the lab API server did not become ready; see {state}/logs/apiserver.log")


def _start_apiserver(state: Path, validation: str, families: tuple[int, ...]) -> None:
    # A Service range per family the pods have, in their order: a dual-stack cluster's
    # Services are single-stack of the first family unless they ask for more.
    ranges = ",".join(str(SERVICE_CIDR if f == 4 else SERVICE_CIDR6) for f in families)
    processes.start(
        state,
        APISERVER,
        [
            "-m",
            "lab.apiserver",
            "--validation",
            validation,
            "--service-cluster-ip-range",
            ranges,
            "--bind-address",
            str(API_ADDRESS),
            "--port",
            str(API_PORT),
            "--tls-cert",
            str(state / "apiserver.crt"),
            "--tls-key",
            str(state / "apiserver.key"),
            "--token-file",
            str(state / "token"),
        ],
    )
    _wait_ready(state)


def _start_kubelet(state: Path, nodes: int, virtual: int, families: tuple[int, ...]) -> None:
    processes.start(
        state,
        KUBELET,
        [
            "-m",
            "lab.kubelet",
            "--kubeconfig",
            str(kubeconfig_path(state)),
            "--nodes",
            str(nodes),
            "--virtual-nodes",
            str(virtual),
            "--state-dir",
            str(state),
            "--ip-families",
            ",".join(map(str, families)),
        ],
    )


NODE_IP = "$(NODE_IP)"  # the DaemonSet's: the downward API's status.hostIP


def agent_args(
    backend: str,
    node: str | None = None,
    kubeconfig: str | None = None,
    address: str = NODE_IP,
) -> list[str]:
    """The `picket agent` arguments the DaemonSet runs (the container args of each
    backend's overlay, daemonset/iptables/ and daemonset/ebpf/, are exactly
    `agent_args(backend)`, plus the eBPF pin root its mount moves; a unit test holds
    them equal), so the lab exercises what is deployed. The lab adds only what a pod
    gets from its environment: the node name ($NODE_NAME) and address ($NODE_IP, from
    the downward API) and the API credentials (the in-cluster service account)."""
    metrics = f"{address}:{AGENT_METRICS_PORT}"
    args = ["agent", "--backend", backend, "--metrics-addr", metrics]
    if node is not None:
        args += ["--node", node]
    if kubeconfig is not None:
        args += ["--kubeconfig", kubeconfig]
    return args


def agent_name(node: LabNode) -> str:
    return f"agent-{node.name}"


def kube_proxy_name(node: LabNode) -> str:
    return f"kube-proxy-{node.name}"


def _reconcile_kube_proxies(state: Path, nodes: list[LabNode]) -> None:
    """One kube-proxy per node inside the node's namespace, whatever the backend (a
    node has Services without a policy enforcer too); a backend change leaves them be.
    Waits for each one's first apply, so `lab up` returns with Services programmed.
    (The order of agents and kube-proxies does not matter for policy: the agents judge
    in mangle FORWARD or a BPF hook, which kube-proxy's filter ACCEPTs cannot skip.)"""
    for node in nodes:
        if processes.running(state, kube_proxy_name(node)) is None:
            argv = ["-m", "lab.kubeproxy", "--node", node.name]
            argv += ["--kubeconfig", str(kubeconfig_path(state)), "--state-dir", str(state)]
            processes.start(state, kube_proxy_name(node), argv, netns=node.netns)
    try:
        wait_programmed(state, [n.name for n in nodes], lambda services: True)
    except TimeoutError as exc:
        raise LabError(f"{exc}; see {state}/logs/kube-proxy-*.log") from exc


def _reconcile_agents(state: Path, nodes: list[LabNode], backend: str, previous: str) -> None:
    """One agent per node inside the node's namespace. A backend change stops the old
    agents and removes what they programmed, first."""
    if previous not in ("", "none", backend):
        for node in nodes:
            processes.stop(state, agent_name(node))
            processes.run_once(
                [
                    sys.executable,
                    "-m",
                    "agent.cli",
                    "agent",
                    "--node",
                    node.name,
                    "--backend",
                    previous,
                    "--cleanup",
                ],
                node.netns,
            )
    if backend == "none":
        return
    for node in nodes:
        if processes.running(state, agent_name(node)) is None:
            args = agent_args(
                backend,
                node=node.name,
                kubeconfig=str(kubeconfig_path(state)),
                address=str(node.address),
            )
            argv = ["-m", "agent.cli", *args]
            processes.start(state, agent_name(node), argv, netns=node.netns)


def up(
    node_count: int,
    backend: str,
    virtual_count: int = 0,
    api_validation: str | None = None,
    ip_families: tuple[int, ...] | None = None,
) -> Path:
    """Build or complete the lab; returns the kubeconfig path. `api_validation` and
    `ip_families` None keep what the lab has (strict and both families for a new lab)."""
    if backend not in BACKENDS:
        raise LabError(f"backend {backend!r} is not available (have: {', '.join(BACKENDS)})")
    nodes = lab_nodes(node_count)
    virtual_nodes(virtual_count)  # validates the count
    state = state_dir()
    previous = _read_config(state)
    if previous.get("nodes", 0) > node_count:
        raise LabError(
            f"the lab is up with {previous['nodes']} nodes; "
            "run `picket lab down` before shrinking it"
        )
    validation = _api_validation(state, previous, api_validation)
    families = _ip_families(previous, ip_families)
    state.mkdir(parents=True, exist_ok=True)
    if HOST_LINK not in set(_host_links()):
        topology.check_host_is_free()
    topology.ensure_underlay()
    for node in nodes:
        topology.ensure_node(node, nodes)
    topology.ensure_external(nodes)
    _ensure_control_plane(state, previous, (node_count, virtual_count), validation, families)
    api = kubeconfig.new_client_from_config(str(kubeconfig_path(state)))
    ensure_cluster_dns(api, families[0])  # waited for below, once everything has started
    mounted = previous.get("mounted_bpffs", False)
    if not _is_bpffs(BPF_ROOT):
        # Pinned maps need the BPF filesystem (a node's systemd mounts it at boot, so the
        # lab's nodes have it whatever runs on them); the lab mounts it, and unmounts it
        # at down.
        subprocess.run(["mount", "-t", "bpf", "bpf", str(BPF_ROOT)], check=True)
        mounted = True
    # The agents' drop logs write to journald; where none runs the lab starts one.
    ensure_journald(state / "journald")
    # The image the DaemonSets of daemonset/ name, as a node imports it (lab/images.py).
    images.build(state, processes.ROOT, images.default_tag())
    _reconcile_kube_proxies(state, nodes)
    _reconcile_agents(state, nodes, backend, previous.get("backend", ""))
    _wait_cluster_dns(state, api)
    conf = {"nodes": node_count, "virtual_nodes": virtual_count, "backend": backend}
    conf |= {"mounted_bpffs": mounted, "api_validation": validation}
    conf |= {"ip_families": list(families)}
    (state / "lab.json").write_text(json.dumps(conf))
    return kubeconfig_path(state)


def _api_validation(state: Path, previous: dict, wanted: str | None) -> str:
    """The API server's validation mode. A running server keeps its own: its store
    lives in its memory, so changing the mode would mean losing every object."""
    current = previous.get("api_validation", "strict")
    if wanted is None:
        return current
    if wanted not in API_VALIDATIONS:
        raise LabError(
            f"API validation {wanted!r} is not known (have: {', '.join(API_VALIDATIONS)})"
        )
    if wanted != current and processes.running(state, APISERVER) is not None:
        raise LabError(
            f"the lab's API server runs with validation {current}; "
            "run `picket lab down` before changing it"
        )
    return wanted


def _ip_families(previous: dict, wanted: tuple[int, ...] | None) -> tuple[int, ...]:
    """The pods' address families: fixed while the lab is up, since every pod already
    has its addresses."""
    current = tuple(previous.get("ip_families", IP_FAMILIES_DEFAULT))
    if wanted is None or not previous:
        return wanted or current
    if wanted != current:
        raise LabError(
            f"the lab is up with IP families {','.join(map(str, current))}; "
            "run `picket lab down` before changing them"
        )
    return wanted


def ip_families() -> tuple[int, ...]:
    """The running lab's pod address families, the primary first."""
    return tuple(_read_config(state_dir()).get("ip_families", IP_FAMILIES_DEFAULT))


def _ensure_control_plane(
    state: Path, previous: dict, wanted: tuple[int, int], validation: str, families: tuple[int, ...]
) -> None:
    """The API server and the kubelet, (re)started where they are not running."""
    if not kubeconfig_path(state).exists():
        write_credentials(state, f"https://{API_ADDRESS}:{API_PORT}", [str(API_ADDRESS)])
    if processes.running(state, APISERVER) is None:
        _start_apiserver(state, validation, families)
    if (previous.get("nodes"), previous.get("virtual_nodes", 0)) != wanted:
        processes.stop(state, KUBELET)  # it serves a fixed node list: restart to add nodes
    if processes.running(state, KUBELET) is None:
        _start_kubelet(state, *wanted, families)


def _wait_cluster_dns(state: Path, api: client.ApiClient) -> None:
    """Until kube-system/kube-dns answers, so that a lab that is up resolves names."""
    if not wait_cluster_dns(api):
        raise LabError(
            "the cluster DNS (kube-system/coredns) did not become ready; see "
            f"{state}/logs/kubelet.log and {state}/logs/dns-*.log"
        )


def _host_links() -> list[str]:
    with topology.netns_ipr(None) as ipr:
        return [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]


def down() -> list[str]:
    """Stop every lab process, delete namespaces, links and files; say what went."""
    state = state_dir()
    # The kubelet first: it would start again the containers of pods it runs; then
    # every other process at once.
    others = [name for name in processes.names(state) if name != KUBELET]
    removed = [f"process {KUBELET}"] if processes.stop(state, KUBELET) else []
    removed += [f"process {name}" for name in processes.stop_all(state, others)]
    removed += topology.remove_everything()
    removed += _remove_bpf_leftovers(_read_config(state).get("mounted_bpffs", False))
    removed += stop_journald(state / "journald")
    if state.exists():
        shutil.rmtree(state)
        removed.append(f"files {state}")
    return removed


def config() -> dict:
    return _read_config(state_dir())


def _is_bpffs(path: Path) -> bool:
    mounts = Path("/proc/mounts").read_text().splitlines()
    return any(line.split()[1] == str(path) and line.split()[2] == "bpf" for line in mounts)


def _remove_bpf_leftovers(unmount: bool) -> list[str]:
    """The eBPF agents' pinned maps and numbering of lab nodes (their programs went with
    the node namespaces), and the BPF filesystem if the lab mounted it."""
    removed = []
    for pins in sorted(BPF_PINS.glob("node-*")) if BPF_PINS.exists() else []:
        shutil.rmtree(pins)
        removed.append(f"pinned maps {pins}")
    for numbering in sorted(EBPF_STATE.glob("ebpf-node-*.json")):
        numbering.unlink()
        removed.append(f"file {numbering}")
    if BPF_PINS.exists() and not any(BPF_PINS.iterdir()):
        BPF_PINS.rmdir()
    if EBPF_STATE.exists() and not any(EBPF_STATE.iterdir()):
        EBPF_STATE.rmdir()
    if unmount and _is_bpffs(BPF_ROOT):
        subprocess.run(["umount", str(BPF_ROOT)], check=False)
        removed.append(f"mount {BPF_ROOT}")
    return removed
