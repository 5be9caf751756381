"""Transit endpoints in the datapaths (pure parts): the transit mark's rules and sets,
the iptables chains that judge a transit pod's ingress, the eBPF maps that hold it, and
the conntrack cleanup's view of DNATed and upstream-judged connections."""

from __future__ import annotations

from ipaddress import ip_address

from pyroute2.conntrack import NFCTAttrTuple

from agent.compiler.compile import compile_node
from agent.compiler.diff import diff_ir
from agent.compiler.evaluate import node_admits
from agent.dataplane import transit_mark
from agent.dataplane.conntrack import real_ends
from agent.dataplane.ebpf.planner import EbpfPlanner
from agent.dataplane.iptables_render import render
from tests.support.builders import model_cluster, policy, state_of
from tests.support.transit import ISOLATE_Y, web

C_IP = "198.18.2.13"  # y/c, on node-2: a transit endpoint of node-1
NODE_1, NODE_2 = ip_address("198.18.0.1"), ip_address("198.18.0.2")
OUTSIDE = ip_address("198.19.200.7")


def test_the_mark_needs_peers_for_trust_and_transit_endpoints_for_marking():
    alone = compile_node(state_of(model_cluster()), "node-1")
    assert alone.peer_node_ips == (NODE_2,)
    trust_only = transit_mark.chain_rules(alone, ["eth0"], 0x17)
    assert len(trust_only) == 1
    assert "-i eth0 -m conntrack --ctstate NEW -m dscp --dscp 0x17" in trust_only[0]
    assert f"--match-set {transit_mark.PEER_NODES_SET} src" in trust_only[0]
    assert "CONNMARK --set-xmark 0x1000000/0x1000000" in trust_only[0]
    assert transit_mark.chain_rules(alone, [], 0x17) == []  # no uplink: nothing trusted
    assert transit_mark.chain_rules(alone, ["eth0"], 0) == []  # mark off
    ir = compile_node(state_of(web(ISOLATE_Y)), "node-1")
    rules = transit_mark.chain_rules(ir, ["eth0"], 0x17)
    assert rules[-1].startswith("-m conntrack --ctstate NEW -m conntrack --ctstate DNAT")
    assert rules[-1].endswith("-j DSCP --set-dscp 0x17")
    peers, transit = transit_mark.render_sets(ir)
    assert [s.members for s in peers] == [{"198.18.0.2"}]
    assert [s.members for s in transit] == [{C_IP}]


def test_iptables_judges_a_transit_pod_for_what_this_node_dnats():
    ir = compile_node(state_of(web(ISOLATE_Y)), "node-1")
    ruleset = render(ir, {}, uplinks=["eth0"])
    forward = ruleset.chains["PICKET-FORWARD"]
    own_node = f"-s {NODE_2} -d {C_IP} -m conntrack --ctstate DNAT"
    judged = f"-d {C_IP} -m conntrack --ctstate DNAT"
    (exempt,) = [r for r in forward if r.startswith(own_node)]
    (jump,) = [r for r in forward if r.startswith(judged)]
    assert exempt.endswith("-j RETURN") and forward.index(exempt) < forward.index(jump)
    chain = jump.rpartition("-j ")[2]
    assert chain.startswith("PICKET-IN-") and ruleset.chains[chain][-1] == "-j DROP"
    # The mark is read (and set) before any pod's chain, trusted connections return.
    assert forward.index("-j PICKET-TRANSIT") < forward.index(jump)
    assert any("--mark 0x1000000/0x1000000" in r and r.endswith("-j RETURN") for r in forward)
    assert set(transit_mark.SETS) <= set(ruleset.sets)
    # Without transit endpoints, nothing of them; without the mark, no chain at all.
    bare = render(compile_node(state_of(web()), "node-1"), {}, uplinks=["eth0"])
    assert not any(C_IP in r for r in bare.chains["PICKET-FORWARD"])
    assert transit_mark.TRANSIT_SET not in bare.sets
    off = render(ir, {}, uplinks=["eth0"], transit_dscp=0)
    assert "PICKET-TRANSIT" not in off.chains and not set(transit_mark.SETS) & set(off.sets)


def test_ebpf_plans_a_transit_pod_by_its_address_with_its_home():
    ir = compile_node(state_of(web(ISOLATE_Y)), "node-1")
    planner = EbpfPlanner()
    delta = planner.update(ir, diff_ir(None, ir), ())
    number = planner.endpoint_ids.by_thing["y/c"]
    assert delta.transit_set == {C_IP: (number, 1)}  # ingress-isolated
    assert delta.home_add == {(number, str(NODE_2))}
    assert "y/c" not in planner.state.endpoints  # not keyed by any interface
    assert delta.policy_add == set()  # isolated by a policy that admits nothing
    admit = policy("y", "from-outside", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]})
    wider = compile_node(state_of(web(ISOLATE_Y, admit)), "node-1")
    delta = planner.update(wider, diff_ir(ir, wider))
    assert {e.endpoint for e in delta.policy_add} >= {number}
    gone = compile_node(state_of(web()), "node-1")
    delta = planner.update(gone, diff_ir(wider, gone))
    assert delta.transit_del == {C_IP} and delta.home_del == {(number, str(NODE_2))}
    assert delta.endpoint_del["y/c"] == number
    assert {e.endpoint for e in delta.policy_del} >= {number}
    assert not planner.state.transit and not planner.state.homes


def test_rebuild_keeps_a_transit_pods_number_and_entries():
    ir = compile_node(state_of(web(ISOLATE_Y)), "node-1")
    planner = EbpfPlanner()
    planner.update(ir, diff_ir(None, ir), ())
    assert planner.rebuild(ir, ()).empty


def _tuple(saddr: str, daddr: str, sport: int, dport: int) -> NFCTAttrTuple:
    return NFCTAttrTuple(saddr=saddr, daddr=daddr, sport=sport, dport=dport, proto=6)


def test_real_ends_say_whether_the_connection_was_dnated():
    # Outside -> node-1:30080 -> y/c:80, masqueraded to node-1.
    orig = _tuple(str(OUTSIDE), str(NODE_1), 40000, 30080)
    reply = _tuple(C_IP, str(NODE_1), 80, 40000)
    ends = real_ends(orig, reply)
    assert ends is not None and ends.dnat
    assert (ends.client, ends.server, ends.port) == (OUTSIDE, ip_address(C_IP), 80)
    direct = real_ends(_tuple(str(OUTSIDE), C_IP, 1, 80), _tuple(C_IP, str(OUTSIDE), 80, 1))
    assert direct is not None and not direct.dnat


def test_judged_upstream_counts_only_from_another_nodes_address():
    # node-2's view of y/c, isolated: the masqueraded leg comes from node-1's address.
    ir = compile_node(state_of(web(ISOLATE_Y)), "node-2")
    c = ip_address(C_IP)
    assert not node_admits(ir, NODE_1, c, "TCP", 80)
    assert node_admits(ir, NODE_1, c, "TCP", 80, judged_upstream=True)
    assert not node_admits(ir, OUTSIDE, c, "TCP", 80, judged_upstream=True)
