"""The iptables backend in both address families against the real kernel, in a
namespace of the test's own (no lab): a dual-stack IR goes into iptables and ip6tables
of the flavour asked for, with both families' sets; a full sync repairs drift in
either family; cleanup removes both, leaving a family's transit chain while the eBPF
backend's jump to it stands; and the conntrack cleanup judges and removes IPv6
entries as IPv4 ones (AF_INET6 dumps and deletes, ICMPv6 included)."""

from __future__ import annotations

import dataclasses
import subprocess
from ipaddress import ip_address, ip_network

import pytest
from pyroute2 import Conntrack
from pyroute2.conntrack import NFCTAttrTuple

from agent.compiler.compile import compile_node
from agent.dataplane import transit_mark
from agent.dataplane.conntrack import AF, remove_denied
from agent.dataplane.iptables import IptablesBackend
from agent.dataplane.iptables_render import JUMP_RULE
from tests.support.builders import model_cluster, policy, state_of
from tests.support.scratch_netns import scratch_netns

NODE4, NODE6 = "198.18.0.1", "2001:2::1"
PEER4, PEER6 = "198.18.0.2", "2001:2::2"
# y/a, y/b on node-1 (the lab's plan: 198.18.1.n beside 2001:2:0:1::n)
PODS = {"y-a": ("198.18.1.11", "2001:2:0:1::11"), "y-b": ("198.18.1.12", "2001:2:0:1::12")}


def _dual_stack(objs: list[dict]) -> list[dict]:
    for obj in objs:
        if obj["kind"] == "Pod" and obj["status"].get("podIP"):
            _, _, node, n = obj["status"]["podIP"].split(".")
            obj["status"]["podIPs"] += [{"ip": f"2001:2:0:{node}::{n}"}]
    return objs


FROM_Z = policy(
    "y",
    "from-z",
    {
        "podSelector": {},
        "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}], "ports": [{"port": 80}]}
        ],
    },
)
IR = dataclasses.replace(
    compile_node(state_of(_dual_stack([*model_cluster(), FROM_Z])), "node-1"),
    node_ips=(ip_address(NODE4), ip_address(NODE6)),
    peer_node_ips=(ip_address(PEER4), ip_address(PEER6)),
    pod_cidrs=(ip_network("198.18.1.0/24"), ip_network("2001:2:0:1::/64")),
)


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def wire() -> None:
    """The pods' host-side interfaces (routes to their IPv4 addresses, which is how the
    backend finds them) and the node's uplink holding both node addresses."""
    sh("ip", "link", "set", "lo", "up")
    for name, (v4, v6) in PODS.items():
        sh("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}-p")
        sh("ip", "link", "set", name, "up")
        sh("ip", "route", "add", f"{v4}/32", "dev", name)
        sh("ip", "-6", "route", "add", f"{v6}/128", "dev", name)
    sh("ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-p")
    sh("ip", "link", "set", "uplink", "up")
    sh("ip", "addr", "add", f"{NODE4}/24", "dev", "uplink")
    sh("ip", "addr", "add", f"{NODE6}/64", "dev", "uplink", "nodad")


def saved(command: str, mode: str) -> str:
    return sh(f"{command}-{mode}-save", "-t", "mangle")


def ipsets() -> dict[str, str]:
    """Set name -> its header line (family, size)."""
    out, name = {}, None
    for line in sh("ipset", "list", "-t").splitlines():
        if line.startswith("Name: "):
            name = line.removeprefix("Name: ")
        elif line.startswith("Header: ") and name:
            out[name] = line
    return out


@pytest.fixture(params=["legacy", "nft"])
def node(request):
    with scratch_netns():
        wire()
        yield request.param


def test_both_families_are_programmed_with_their_own_sets(node):
    backend = IptablesBackend(mode=node)
    assert backend.families == (4, 6)
    backend.apply(IR)
    v4, v6 = saved("iptables", node), saved("ip6tables", node)
    for text, family_sets, foreign in ((v4, "picket-", "picket6-"), (v6, "picket6-", "picket-")):
        assert text.index("-A FORWARD ") < text.index("-A PICKET-")
        first_forward = next(line for line in text.splitlines() if line.startswith("-A FORWARD"))
        assert first_forward.endswith("-j PICKET-FORWARD")
        assert ":PICKET-TRANSIT" in text and ":PICKET-SPOOFED" in text
        assert f"--match-set {family_sets}pod-links" in text
        assert f"--match-set {foreign}" not in text
    assert "-s 2001:2:0:1::/64" in v6 and "-s 198.18.1.0/24" in v4
    assert "-i uplink" in v6  # the transit mark trusts IPv6 peer nodes on the uplink
    sets = ipsets()
    v6_sets = {n: h for n, h in sets.items() if n.startswith("picket6-")}
    assert v6_sets and all("family inet6" in h for h in v6_sets.values())
    assert all("family inet " in h for n, h in sets.items() if n.startswith("picket-"))
    members = sh("ipset", "list", "picket6-pod-sources")
    assert "2001:2:0:1::11,y-a" in members and "198.18" not in members
    rules = {4: v4.count("\n-A PICKET-"), 6: v6.count("\n-A PICKET-")}
    assert backend.rules_by_family() == rules  # picket_iptables_rules, per family
    assert backend.rule_count() == sum(rules.values())


def test_a_full_sync_repairs_either_familys_drift(node):
    backend = IptablesBackend(mode=node)
    backend.apply(IR)
    wanted = saved("ip6tables", node)
    sh(f"ip6tables-{node}", "-w", "-t", "mangle", "-F", "PICKET-FORWARD")
    sh(f"ip6tables-{node}", "-w", "-t", "mangle", "-D", *JUMP_RULE)
    sh(f"ip6tables-{node}", "-w", "-t", "mangle", "-I", "FORWARD", "1", "-j", "ACCEPT")
    sh("ipset", "flush", "picket6-pod-sources")
    backend.apply(IR, full=True)
    repaired = saved("ip6tables", node)
    ours = [line for line in repaired.splitlines() if "PICKET" in line]
    assert ours == [line for line in wanted.splitlines() if "PICKET" in line]
    first = next(line for line in repaired.splitlines() if line.startswith("-A FORWARD"))
    assert first.endswith("-j PICKET-FORWARD")
    assert backend.jumps_restored == 1
    assert "2001:2:0:1::11,y-a" in sh("ipset", "list", "picket6-pod-sources")


def test_cleanup_removes_both_families_but_a_transit_chain_the_ebpf_jump_uses(node):
    backend = IptablesBackend(mode=node)
    backend.apply(IR)
    # The eBPF backend's jump to the transit chain, in IPv6 only.
    sh(f"ip6tables-{node}", "-w", "-t", "mangle", "-A", *transit_mark.STANDALONE_JUMP)
    removed = backend.cleanup()
    assert "jump from FORWARD (mangle, IPv6)" in removed
    v4, v6 = saved("iptables", node), saved("ip6tables", node)
    assert "PICKET" not in v4
    assert [line for line in v6.splitlines() if "PICKET" in line and "TRANSIT" not in line] == []
    assert ":PICKET-TRANSIT" in v6
    left = {n for n in ipsets() if "picket" in n}
    assert left == set(transit_mark.sets(6)) & set(ipsets())
    sh(f"ip6tables-{node}", "-w", "-t", "mangle", "-D", *transit_mark.STANDALONE_JUMP)
    backend.cleanup()
    assert "PICKET" not in saved("ip6tables", node)
    assert not [n for n in ipsets() if "picket" in n]


TCP, ICMPV6 = 6, 58
Y_A6, Y_B6, X_A6, Z_A6 = "2001:2:0:1::11", "2001:2:0:1::12", "2001:2:0:1::1", "2001:2:0:1::21"


def _put6(ct: Conntrack, client: str, server: str, sport: int, port: int) -> None:
    af = AF[6]
    ct.entry(
        "add",
        timeout=300,
        tuple_orig=NFCTAttrTuple(
            family=af, saddr=client, daddr=server, proto=TCP, sport=sport, dport=port
        ),
        tuple_reply=NFCTAttrTuple(
            family=af, saddr=server, daddr=client, proto=TCP, sport=port, dport=sport
        ),
    )


def _put_echo(ct: Conntrack, client: str, server: str, ident: int) -> None:
    af = AF[6]
    common = {"family": af, "proto": ICMPV6, "icmp_id": ident, "icmp_code": 0}
    ct.entry(
        "add",
        timeout=30,
        tuple_orig=NFCTAttrTuple(saddr=client, daddr=server, icmp_type=128, **common),
        tuple_reply=NFCTAttrTuple(saddr=server, daddr=client, icmp_type=129, **common),
    )


def _left6(ct: Conntrack) -> set[tuple[str, str, int | None]]:
    return {(e.tuple_orig.saddr, e.tuple_orig.daddr, e.tuple_orig.dport) for e in ct.dump_entries()}


def test_the_conntrack_cleanup_judges_and_removes_ipv6_entries():
    with scratch_netns(), Conntrack(nfgen_family=AF[6]) as ct6, Conntrack() as ct4:
        _put6(ct6, X_A6, Y_A6, 40001, 80)  # denied: y admits only z
        _put6(ct6, Z_A6, Y_A6, 40002, 80)  # allowed: from z on 80
        _put6(ct6, Y_A6, X_A6, 40003, 80)  # allowed: x is open
        _put6(ct6, X_A6, Y_B6, 40004, 80)  # denied, but y/b is not touched
        ct4.entry(  # an IPv4 entry of a touched pod's, allowed: left alone
            "add",
            timeout=300,
            tuple_orig=NFCTAttrTuple(
                saddr="198.18.1.21", daddr="198.18.1.11", proto=TCP, sport=40005, dport=80
            ),
            tuple_reply=NFCTAttrTuple(
                saddr="198.18.1.11", daddr="198.18.1.21", proto=TCP, sport=80, dport=40005
            ),
        )
        touching = frozenset({ip_address(Y_A6)})
        assert remove_denied(IR, frozenset({ip_address(NODE6)}), touching=touching) == 1
        assert _left6(ct6) == {(Z_A6, Y_A6, 80), (Y_A6, X_A6, 80), (X_A6, Y_B6, 80)}
        assert len(list(ct4.dump_entries())) == 1
        # The whole table of both families: y/b's denied connection goes too.
        assert remove_denied(IR, frozenset({ip_address(NODE6)})) == 1
        assert _left6(ct6) == {(Z_A6, Y_A6, 80), (Y_A6, X_A6, 80)}
        # A pod gone: every entry with its address goes, ICMPv6 echo included.
        _put_echo(ct6, Z_A6, Y_A6, 7)
        gone = frozenset({ip_address(Y_A6)})
        assert remove_denied(IR, frozenset(), gone=gone, touching=frozenset()) == 3
        assert _left6(ct6) == set()
        assert len(list(ct4.dump_entries())) == 1  # IPv4's y/a address is not gone
