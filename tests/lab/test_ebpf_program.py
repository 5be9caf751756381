"""The TC programs on this machine: BCC compiles them against the distribution's
headers tree that `make setup` links for the running kernel, the verifier accepts them,
their maps are pinned, the C structs match their Python mirror, and cleanup unpins."""

from __future__ import annotations

import ctypes
import platform
import subprocess
from pathlib import Path

import pytest

from agent.dataplane import ebpf_layout
from agent.dataplane.ebpf.backend import EbpfBackend
from agent.dataplane.ebpf.codec import policy_key
from agent.dataplane.ebpf.entries import PolicyEntry


def test_kernel_headers_tree_is_linked():
    build = Path(f"/lib/modules/{platform.release()}/build")
    assert (build / "include").is_dir(), f"{build} (make setup links it)"


@pytest.fixture
def bpffs(tmp_path: Path):
    root = tmp_path / "bpffs"
    root.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_programs_load_pin_and_clean_up(bpffs, tmp_path):
    backend = EbpfBackend("node-test", bpffs / "picket", tmp_path / "state.json")
    pins = bpffs / "picket" / "node-test"
    assert sorted(p.name for p in pins.iterdir()) == [
        "addr",
        "config",
        "ct",
        "drop_counts",
        "endpoints",
        "named",
        "policy",
        "verdicts",
    ]
    assert backend.from_pod.fd > 0 and backend.to_pod.fd > 0
    mirrors = {
        "picket_addr": (ebpf_layout.AddrKey, ebpf_layout.AddrValue),
        "picket_endpoints": (ctypes.c_uint32, ebpf_layout.EndpointValue),
        "picket_policy": (ebpf_layout.PolicyKey, ctypes.c_uint8),
        "picket_named": (ebpf_layout.NamedKey, ctypes.c_uint8),
        "picket_ct": (ebpf_layout.CtKey, ebpf_layout.CtValue),
        "picket_drop_counts": (ebpf_layout.DropCountKey, ctypes.c_uint64),
    }
    for name, (key, value) in mirrors.items():
        table = backend.bpf[name]
        assert ctypes.sizeof(table.Key) == ctypes.sizeof(key), name
        assert ctypes.sizeof(table.Leaf) == ctypes.sizeof(value), name
    assert set(backend.counters()) == set(ebpf_layout.REASON_NAMES.values())
    # A second backend (a restarted agent) finds the same maps, with what they held.
    entry = PolicyEntry(endpoint=7, direction=0, identity=256, protocol=6, port=80, bits=16)
    backend.maps.put("picket_policy", policy_key(entry), b"\x01")
    again = EbpfBackend("node-test", bpffs / "picket", tmp_path / "state.json")
    assert again.maps.keys("picket_policy") == [policy_key(entry)]
    removed = again.cleanup()
    assert f"pinned maps {pins}" in removed
    assert not pins.exists()
