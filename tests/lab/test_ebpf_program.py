"""The FORWARD programs on this machine: BCC compiles them against the distribution's
headers tree that `make setup` links for the running kernel, with the running kernel's
struct offsets from its BTF; the verifier accepts both (IPv4's and IPv6's); their maps
are pinned; the C structs match their Python mirror; the first apply hooks each into its
family's FORWARD hook through a pinned link (and turns conntrack on), in a namespace of
the test's own; a restarted agent takes both hooks over; cleanup undoes all of it."""

from __future__ import annotations

import ctypes
import json
import platform
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from agent.compiler.compile import compile_node
from agent.compiler.ir import NodeIR
from agent.dataplane import ebpf_layout
from agent.dataplane.ebpf import btf, loader, nf_link
from agent.dataplane.ebpf.backend import EbpfBackend
from agent.dataplane.ebpf.codec import addr_from_bytes, policy_key
from agent.dataplane.ebpf.entries import PolicyEntry
from agent.dataplane.ebpf.settings import EbpfSettings
from tests.support.builders import model_cluster, policy, state_of
from tests.support.node_state import pinned_map_ids
from tests.support.scratch_netns import scratch_netns as own_netns


def test_kernel_headers_tree_is_linked():
    build = Path(f"/lib/modules/{platform.release()}/build")
    assert (build / "include").is_dir(), f"{build} (make setup links it)"


def test_the_running_kernels_layouts_are_read():
    offsets = loader.kernel_offsets()
    assert set(offsets) == {d for d, _, _ in btf.OFFSETS} | {d for d, _ in btf.SIZES}
    # struct nf_conntrack_tuple: src (address, port, family), then dst.
    assert offsets["PICKET_OFF_TUPLE_SRC_ADDR"] == 0
    assert offsets["PICKET_OFF_TUPLE_SRC_PORT"] == 16
    assert offsets["PICKET_OFF_TUPLE_DST_ADDR"] < offsets["PICKET_OFF_TUPLE_PROTONUM"]


@pytest.fixture
def bpffs(tmp_path: Path):
    root = tmp_path / "bpffs"
    root.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True)


@pytest.fixture
def scratch_netns():
    with own_netns() as name:
        yield name


def _raw_rules(netns: str, family: int = 4) -> str:
    # Every table the namespace has (a fresh one has none, and `-t raw` would fail).
    out = ""
    command = "iptables" if family == 4 else "ip6tables"
    for save in (f"{command}-nft-save", f"{command}-legacy-save"):
        argv = ["ip", "netns", "exec", netns, save]
        out += subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return out


def _netfilter_links() -> set[int]:
    """Ids of the kernel's BPF netfilter links (bpftool 7.1 knows the type only by its
    number, BPF_LINK_TYPE_NETFILTER = 10)."""
    out = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, check=True)
    return {link["id"] for link in json.loads(out.stdout) if link["type"] in (10, "netfilter")}


def _links(pins: Path) -> dict[str, dict[str, int]]:
    """The pinned links, each with what the kernel says of it (family, hook, priority)."""
    return {
        p.name: nf_link.pinned_link_info(p)
        for p in sorted(pins.iterdir())
        if p.name.startswith("forward_link")
    }


def test_programs_load_pin_and_clean_up(bpffs, tmp_path, scratch_netns):
    backend = EbpfBackend("node-test", bpffs / "picket", tmp_path / "state.json")
    pins = bpffs / "picket" / "node-test"
    maps = ["addr", "config", "drop_counts", "endpoints", "named", "pod_cidrs", "policy"]
    maps += ["sources", "transit", "transit_home", "verdicts"]
    assert sorted(p.name for p in pins.iterdir()) == maps
    assert set(backend.programs) == {nf_link.NFPROTO_IPV4, nf_link.NFPROTO_IPV6}
    assert all(program.fd > 0 for program in backend.programs.values())
    assert "PICKET-CONNTRACK" not in _raw_rules(scratch_netns)
    links_before = _netfilter_links()
    backend.apply(NodeIR("node-test", ()), None, full=True)
    # One link per family, each in its own family's FORWARD hook, at the first priority.
    links = _links(pins)
    assert links == {
        "forward_link-10": {"pf": nf_link.NFPROTO_IPV4, "hooknum": 2, "prio": 10},
        "forward_link6-10": {"pf": nf_link.NFPROTO_IPV6, "hooknum": 2, "prio": 10},
    }
    assert len(_netfilter_links() - links_before) == 2
    assert loader.is_hooked(pins)
    # Conntrack is held on per family: without IPv6's, no IPv6 packet has an entry.
    assert "PICKET-CONNTRACK" in _raw_rules(scratch_netns)
    assert "PICKET-CONNTRACK" in _raw_rules(scratch_netns, 6)
    assert '-A FORWARD -m comment --comment "picket: the transit mark" -j PICKET-TRANSIT' in (
        _raw_rules(scratch_netns)
    )
    mirrors = {
        "picket_addr": (ebpf_layout.AddrKey, ebpf_layout.AddrValue),
        "picket_endpoints": (ctypes.c_uint32, ebpf_layout.EndpointValue),
        "picket_policy": (ebpf_layout.PolicyKey, ctypes.c_uint8),
        "picket_named": (ebpf_layout.NamedKey, ctypes.c_uint8),
        "picket_drop_counts": (ebpf_layout.DropCountKey, ctypes.c_uint64),
        "picket_transit": (ebpf_layout.TransitKey, ebpf_layout.EndpointValue),
        "picket_transit_home": (ebpf_layout.TransitHomeKey, ctypes.c_uint8),
        "picket_sources": (ebpf_layout.SourceKey, ctypes.c_uint8),
    }
    for name, (key, value) in mirrors.items():
        table = backend.bpf[name]
        assert ctypes.sizeof(table.Key) == ctypes.sizeof(key), name
        assert ctypes.sizeof(table.Leaf) == ctypes.sizeof(value), name
    assert set(backend.counters()) == set(ebpf_layout.REASON_NAMES.values())
    # A second backend (a restarted agent) makes and pins maps of its own, and the
    # first program keeps the hook, and its maps, until the second has written its own.
    entry = PolicyEntry(endpoint=7, direction=0, identity=256, protocol=6, port=80, bits=16)
    backend.maps.put("picket_policy", policy_key(entry), b"\x01")
    first_maps = pinned_map_ids(pins)
    again = EbpfBackend("node-test", bpffs / "picket", tmp_path / "state.json")
    assert again.maps.keys("picket_policy") == []
    assert backend.maps.keys("picket_policy") == [policy_key(entry)]
    second_maps = pinned_map_ids(pins)
    assert second_maps.keys() == first_maps.keys()
    assert not set(second_maps.values()) & set(first_maps.values())
    assert _links(pins) == links
    again.apply(NodeIR("node-test", ()), None, full=True)
    # Both hooks handed over: the new links at the other priority, the old ones gone.
    assert _links(pins) == {
        "forward_link-11": {"pf": nf_link.NFPROTO_IPV4, "hooknum": 2, "prio": 11},
        "forward_link6-11": {"pf": nf_link.NFPROTO_IPV6, "hooknum": 2, "prio": 11},
    }
    # One family's link removed (drift): not hooked, and a full sync hooks both again.
    (pins / "forward_link6-11").unlink()
    assert not loader.is_hooked(pins)
    again.apply(NodeIR("node-test", ()), None, full=True)
    assert set(_links(pins)) == {"forward_link-10", "forward_link6-10"}
    removed = again.cleanup()
    assert f"pinned maps {pins}" in removed
    assert sum("FORWARD program (link" in r for r in removed) == 2
    assert not pins.exists()
    assert "PICKET-CONNTRACK" not in _raw_rules(scratch_netns)
    assert "PICKET-CONNTRACK" not in _raw_rules(scratch_netns, 6)
    assert "PICKET-TRANSIT" not in _raw_rules(scratch_netns)
    del backend, again  # the program fds: the links went with their pins
    assert _netfilter_links() <= links_before


def test_an_address_map_too_small_keeps_the_local_pods_and_leaves_peers_out(
    bpffs, tmp_path, scratch_netns
):
    """The 3x3 model's nine pod addresses and the node's own into an address map of
    eight: the write fits (no error), node-1's own pods are in it, the peers left out
    are named, and the backend reports the map as exceeded until it fits again (z's
    pods gone)."""
    settings = EbpfSettings(addr_entries=8)
    backend = EbpfBackend("node-1", bpffs / "picket", tmp_path / "state.json", settings)
    spec = {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}
    ir = compile_node(state_of([*model_cluster(), policy("y", "from-y", spec)]), "node-1")
    try:
        backend.apply(ir, None, full=True)
        (overflow,) = backend.capacity_exceeded()
        held = {addr_from_bytes(bytes(k.addr)) for k in backend.bpf["picket_addr"]}
        assert overflow.table == "addr" and len(held) <= 8
        local = {ip for e in ir.endpoints.values() for ip in e.ips}
        assert local <= held  # the pods this node enforces for, first
        assert overflow.left_out and not {IPv4Address(a) for a in overflow.left_out} & held
        assert len(held) + len(overflow.left_out) >= len(ir.addresses)
        # Fewer pods (a pinned map keeps its size): it fits again, every address in.
        fewer = compile_node(state_of([o for o in model_cluster() if _not_in_z(o)]), "node-1")
        backend.apply(fewer, None, full=True)
        assert backend.capacity_exceeded() == []
        held = {addr_from_bytes(bytes(k.addr)) for k in backend.bpf["picket_addr"]}
        assert set(fewer.addresses) <= held
    finally:
        backend.cleanup()


def _not_in_z(obj: dict) -> bool:
    return obj["metadata"].get("namespace") != "z" and obj["metadata"]["name"] != "z"
