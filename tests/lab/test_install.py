"""Install, upgrade and uninstall as a cluster's operator does them (issue #16, item 7):
the DaemonSets of daemonset/, applied with the real kubectl to a lab that has no agents,
run by the lab's kubelet as containers (lab/kubelet/picket_pods.py: the overlay's
command, environment, volumes and capabilities) from the lab's Picket images
(lab/images.py). Install leaves the nodes enforcing; an upgrade to a changed build
rolls node by node without a moment in which a denied connection gets through or an
allowed one fails; the uninstall path leaves nothing of Picket on any node."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lab.config import state_dir
from tests.support.agent_metrics import metric_sum, node_of
from tests.support.continuity import Held
from tests.support.enforcement import converged, probe_once
from tests.support.lab_cli import ROOT, lab_pods, picket, wait_until
from tests.support.node_state import (
    BPF_PINS,
    kernel_map_ids,
    picket_bpf_links,
    picket_traces,
    pinned_map_ids,
)

DAEMONSET = ROOT / "daemonset"
SHOP = ROOT / "examples" / "01-three-tier"
NODES = ("node-1", "node-2")
IDENTITIES = Path("/run/picket")


@pytest.fixture(scope="module")
def shop(kubectl):
    kubectl("apply", "-f", str(SHOP / "cluster.yaml"))
    kubectl("wait", "--for=condition=Ready", "pod", "--all", "-n", "shop", "--timeout=60s")
    kubectl("apply", "-f", str(SHOP / "policies.yaml"))
    return kubectl


def rollout(kubectl, name: str) -> None:
    kubectl(
        "-n", "picket-system", "rollout", "status", f"daemonset/{name}", "--timeout=300s",
        timeout=320,
    )  # fmt: skip


def changed_build(tmp_path: Path, version: str) -> Path:
    """The checkout with its version changed: what an upgrade brings."""
    for part in ("agent", "bpf"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("scripts/kernel-headers.sh", "daemonset/entrypoint.sh"):
        (tmp_path / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / part, tmp_path / part)
    init = tmp_path / "agent" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', f'__version__ = "{version}"'))
    assert version in init.read_text()
    return tmp_path


def versions() -> dict[str, dict[str, float]] | None:
    """Which build each node's agent says it is (None while one does not answer)."""
    try:
        return {
            node: {
                v: metric_sum(node_of(node), "picket_build_info", version=v)
                for v in ("0.1.0", "0.1.1")
            }
            for node in NODES
        }
    except OSError:
        return None


def agent_pod_uids(kubectl) -> list[str]:
    """The agents' pods, their uids as the lab's kubelet names their containers."""
    pods = kubectl.json("get", "pods", "-n", "picket-system")["items"]
    return [p["metadata"]["uid"].replace("-", "") for p in pods]


def pinned_maps() -> dict[str, int]:
    """Each pinned map's id, by pin."""
    return {
        str(pin): map_id
        for node in NODES
        for pin, map_id in pinned_map_ids(BPF_PINS / node).items()
    }


@pytest.mark.parametrize("backend", ["iptables", "ebpf"])
def test_install_upgrade_and_uninstall(shop, tmp_path, backend):
    kubectl = shop
    pods = lab_pods(kubectl)
    front, back, db = (pods[f"shop/{n}"] for n in ("frontend", "backend", "database"))
    assert probe_once("shop/frontend", "shop/database", "5432").startswith("connected")

    # Install: the overlay of the backend, on a cluster that runs without Picket.
    kubectl("apply", "-k", str(DAEMONSET / backend))
    rollout(kubectl, "picket-agent")
    for port in (5432, 8080):
        assert converged(kubectl, ["shop"], port, "TCP") == [], port
    assert versions() == {node: {"0.1.0": 1, "0.1.1": 0} for node in NODES}
    if backend == "ebpf":
        maps = pinned_maps()
        identities = {n: (IDENTITIES / f"ebpf-{n}.json").read_text() for n in NODES}
        assert maps and all(identities.values())

    # Upgrade to a changed build, node by node, while probers watch for a gap.
    picket("lab", "image", "--tag", "0.1.1", "--from", str(changed_build(tmp_path, "0.1.1")))
    images = ["agent=localhost/picket:0.1.1"]
    if backend == "ebpf":
        images.append("cleanup-iptables-backend=localhost/picket:0.1.1")
    denied = [(front.netns, db.ip, 5432), (db.netns, back.ip, 8080)]
    allowed = [(back.netns, db.ip, 5432), (front.netns, back.ip, 8080)]
    with Held(denied, allowed, kept_open=(back.netns, db.ip, 5432)) as held:
        kubectl("-n", "picket-system", "set", "image", "daemonset/picket-agent", *images)
        rollout(kubectl, "picket-agent")
        assert wait_until(lambda: versions() == {n: {"0.1.0": 0, "0.1.1": 1} for n in NODES})
    seen = held.seen
    assert seen.denied_connected == {} and seen.denied_tries > 100, seen
    assert seen.allowed_failed == {} and seen.allowed_tries > 20, seen
    assert seen.echo_failures == [] and seen.echoes > 10, seen
    if backend == "ebpf":
        # Each new pod's init container removed the iptables backend's rules (none),
        # leaving the eBPF agent's transit chain, and said nothing failed.
        for uid in agent_pod_uids(kubectl):
            log = state_dir() / "logs" / f"ctr-{uid[:12]}-cleanup-iptables-backend.log"
            assert log.exists() and "failed" not in log.read_text(), log.read_text()
        # The new build's program runs on maps of its own (filled before it took the
        # hook), and the old build's maps went with its program.
        now = pinned_maps()
        assert now.keys() == maps.keys() and not set(now.values()) & set(maps.values())
        assert not set(maps.values()) & kernel_map_ids()
        assert {n: (IDENTITIES / f"ebpf-{n}.json").read_text() for n in NODES} == identities
    for port in (5432, 8080):
        assert converged(kubectl, ["shop"], port, "TCP") == [], port

    # Uninstall: the agents go (their rules stay), then the uninstall DaemonSet.
    kubectl("delete", "-k", str(DAEMONSET / backend), "--ignore-not-found", timeout=120)
    assert probe_once("shop/frontend", "shop/database", "5432") == "timeout"  # still enforced
    kubectl("apply", "-k", str(DAEMONSET / "uninstall"))
    rollout(kubectl, "picket-uninstall")
    kubectl("delete", "-k", str(DAEMONSET / "uninstall"), timeout=120)
    assert {node: picket_traces(node) for node in NODES} == {node: [] for node in NODES}
    assert picket_bpf_links() == []
    assert not any(IDENTITIES.glob("ebpf-node-*.json"))
    assert probe_once("shop/frontend", "shop/database", "5432").startswith("connected")
    assert wait_until(
        lambda: kubectl("get", "pods", "-n", "picket-system", check=False).stdout == ""
    )
