"""The IR's structure: shared peer sets, membership-only changes, local endpoints."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from agent.cli import main
from agent.compiler.compile import compile_node
from agent.compiler.diff import diff_ir
from agent.compiler.ir import PeerPortClause, PortRange
from tests.support.builders import model_cluster, pod, policy, state_of

FROM_X = {
    "podSelector": {},
    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}],
}


def relabel(objs: list[dict], ref: str, **labels: str) -> list[dict]:
    out = copy.deepcopy(objs)
    for obj in out:
        meta = obj["metadata"]
        if obj["kind"] == "Pod" and f"{meta['namespace']}/{meta['name']}" == ref:
            meta["labels"] = dict(labels)
    return out


def test_identical_peers_share_one_set():
    objs = [*model_cluster(), policy("y", "one", FROM_X), policy("z", "two", FROM_X)]
    ir = compile_node(state_of(objs), "node-1")
    peers = {c.peers for e in ir.endpoints.values() if e.ingress for c in e.ingress.clauses}
    assert len(peers) == 1 and len(ir.sets) == 1


def test_relabel_of_a_peer_is_a_membership_change_only():
    sel = {
        "podSelector": {},
        "ingress": [
            {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}}]}
        ],
    }
    before = [*model_cluster(), policy("y", "p", sel)]
    after = relabel(before, "x/b", pod="a")
    old, new = (compile_node(state_of(o), "node-1") for o in (before, after))
    change = diff_ir(old, new)
    assert not change.endpoints_changed and not change.sets_added and not change.sets_removed
    (member_change,) = change.members.values()
    assert {str(ip) for ip in member_change.added} == {"198.18.1.2"}
    assert not member_change.removed


def test_no_change_is_an_empty_diff():
    objs = [*model_cluster(), policy("y", "p", FROM_X)]
    assert diff_ir(
        compile_node(state_of(objs), "node-1"), compile_node(state_of(objs), "node-1")
    ).empty


def test_first_diff_adds_everything():
    ir = compile_node(state_of([*model_cluster(), policy("y", "p", FROM_X)]), "node-1")
    change = diff_ir(None, ir)
    assert set(change.endpoints_added) == set(ir.endpoints)
    assert set(change.sets_added) == set(ir.sets)


def test_local_endpoints_are_this_nodes_policed_pods():
    objs = [
        *model_cluster(),
        pod("y", "h", "198.18.0.1", host_network=True),
        pod("y", "pending", None),
        pod("y", "done", "198.18.1.90", phase="Failed"),
    ]
    ir = compile_node(state_of(objs), "node-1")
    assert set(ir.endpoints) == {f"{ns}/{p}" for ns in "xyz" for p in "ab"}
    assert [str(ip) for ip in ir.node_ips] == ["198.18.0.1"]


def test_unresolved_named_ingress_port_admits_nothing():
    spec = {"podSelector": {}, "ingress": [{"ports": [{"port": "nope"}]}]}
    ir = compile_node(state_of([*model_cluster(), policy("y", "p", spec)]), "node-1")
    assert ir.endpoints["y/a"].ingress.clauses == ()


def test_ports_become_ranges():
    spec = {
        "podSelector": {},
        "ingress": [
            {
                "ports": [
                    {"port": 80, "endPort": 90},
                    {"protocol": "UDP"},
                    {"port": "serve-81-sctp", "protocol": "SCTP"},
                ]
            }
        ],
    }
    ir = compile_node(state_of([*model_cluster(), policy("y", "p", spec)]), "node-1")
    (clause,) = ir.endpoints["y/a"].ingress.clauses
    assert isinstance(clause, PeerPortClause) and clause.peers is None
    assert clause.ports == (
        PortRange("SCTP", 81, 81),
        PortRange("TCP", 80, 90),
        PortRange("UDP", 1, 65535),
    )


def test_compile_command_json(capsys):
    folder = str(Path(__file__).parents[2] / "examples" / "01-three-tier")
    assert main(["compile", "-f", folder, "--node", "node-1", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["node"] == "node-1" and doc["nodeIPs"] == ["198.18.0.1"]
    database = doc["endpoints"]["shop/database"]
    assert database["egress"] is None
    (clause,) = database["ingress"]["clauses"]
    assert clause["ports"] == [{"protocol": "TCP", "port": 5432, "endPort": 5432}]
    assert clause["policy"] == "shop/database-from-backend"
    assert doc["peerSets"][clause["peers"][0]]["members"] == ["198.18.2.11"]


def test_compile_command_text(capsys):
    folder = str(Path(__file__).parents[2] / "examples" / "01-three-tier")
    assert main(["compile", "-f", folder, "--node", "node-2"]) == 0
    out = capsys.readouterr().out
    assert "endpoint shop/backend 198.18.2.11" in out
    assert "ports 8080/TCP" in out  # the named port http, resolved on the backend


def test_compile_command_iptables(capsys):
    folder = str(Path(__file__).parents[2] / "examples" / "01-three-tier")
    assert main(["compile", "-f", folder, "--node", "node-1", "--backend", "iptables"]) == 0
    out = capsys.readouterr().out
    assert "# IPv4: ipset restore" in out and "create picket-s-" in out
    assert "-A PICKET-FORWARD -o <host-if:shop/database>" in out
    assert '--nflog-prefix "picket drop ingress"' in out
    # The same chains for IPv6, through ip6tables, with the IPv6 sets.
    ipv6 = out.split("# IPv6: ipset restore", 1)[1]
    assert "# ip6tables-restore --noflush" in ipv6 and "family inet6" in ipv6
    assert "-A PICKET-FORWARD -o <host-if:shop/database>" in ipv6
    assert "# and, once: ip6tables -t mangle -I FORWARD 1" in ipv6


def test_compile_command_ebpf(capsys):
    folder = str(Path(__file__).parents[2] / "examples" / "01-three-tier")
    assert main(["compile", "-f", folder, "--node", "node-1", "--backend", "ebpf"]) == 0
    out = capsys.readouterr().out
    assert "namespace shop, pods app=backend,tier=api" in out
    assert "198.18.0.1/32 -> 1, 0" in out  # the node's address is the HOST identity
    assert "ingress 256 6/5432/16  (prefixlen 120)" in out  # backend -> database:5432
