"""The iptables renderers per address family: one dual-stack IR rendered as IPv4
(iptables-restore, `picket-` sets, `family inet`) and as IPv6 (ip6tables-restore,
`picket6-` sets, `family inet6`), each naming only its own family's sets, members,
pod CIDRs, transit pods and node addresses."""

from __future__ import annotations

import dataclasses
import re
from ipaddress import ip_address, ip_network

import pytest

from agent.compiler.compile import compile_node
from agent.compiler.diff import diff_ir
from agent.compiler.ir import CIDRSet, NodeIR
from agent.dataplane import source_check, transit_mark, unprogrammed
from agent.dataplane.ipset_render import (
    SET_NAME_MAX,
    family_count,
    family_name,
    ipset_create,
    member_text,
    ours,
    render_sets,
    set_name,
    swap_script,
    update_script,
)
from agent.dataplane.iptables_render import counted_rules, render, render_families, restore_text
from tests.support.builders import dual_stack, model_cluster, policy, state_of, v6_of

V4_CIDR, V6_CIDR = ip_network("198.18.1.0/24"), ip_network("2001:2:0:1::/64")


def veths(ir: NodeIR) -> dict[str, str]:
    return {ref: "veth-" + ref.replace("/", "-") for ref in ir.endpoints}


def compiled(*policies: dict) -> NodeIR:
    ir = compile_node(state_of(dual_stack([*model_cluster(), *policies])), "node-1")
    return dataclasses.replace(
        ir,
        pod_cidrs=(V4_CIDR, V6_CIDR),
        peer_node_ips=(ip_address("198.18.0.2"), ip_address("2001:2::2")),
    )


INGRESS_80 = policy(
    "y",
    "web",
    {
        "podSelector": {},
        "ingress": [
            {
                "from": [
                    {"podSelector": {"matchLabels": {"pod": "b"}}},
                    {"ipBlock": {"cidr": "198.19.200.0/24"}},
                    {"ipBlock": {"cidr": "2001:2:0:fe00::/64", "except": ["2001:2:0:fe00::7/128"]}},
                ],
                "ports": [{"port": 80}],
            }
        ],
    },
)
ONLY_V4_BLOCK = policy(
    "x",
    "one-v4-address",
    {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "198.19.200.7/32"}}]}]},
)
EGRESS_EVERYWHERE_V6 = policy(
    "z",
    "out-v6",
    {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "::/0"}}]}],
    },
)
NAMED_PORT_EGRESS = policy(
    "x",
    "to-http",
    {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "serve-80-tcp"}]}],
    },
)
FAMILY = {4: "picket-", 6: "picket6-"}
OTHER = {4: "picket6-", 6: "picket-"}


def text_of(ir: NodeIR, family: int) -> str:
    return restore_text(render(ir, veths(ir), family=family))


@pytest.mark.parametrize("family", [4, 6])
def test_each_family_names_only_its_own_sets_addresses_and_cidrs(family):
    ir = compiled(INGRESS_80, ONLY_V4_BLOCK, EGRESS_EVERYWHERE_V6, NAMED_PORT_EGRESS)
    ruleset = render(ir, veths(ir), family=family)
    text = restore_text(ruleset)
    named = set(re.findall(r"--match-set (\S+)", text))
    assert named and all(n.startswith(FAMILY[family]) for n in named)
    assert named <= set(ruleset.sets)  # every set a rule names is rendered
    assert all(s.family == family for s in ruleset.sets.values())
    addresses = re.findall(r"-[sd] (\S+)", text)
    assert addresses and all(ip_network(a).version == family for a in addresses)
    other = V6_CIDR if family == 4 else V4_CIDR
    assert str(other) not in text


def test_a_cidr_set_exists_only_in_its_own_family():
    ir = compiled(INGRESS_80, ONLY_V4_BLOCK, EGRESS_EVERYWHERE_V6)
    cidr_sets = {sid: s for sid, s in ir.sets.items() if isinstance(s, CIDRSet)}
    for family in (4, 6):
        rendered = render_sets(ir, family)
        for sid, peer in cidr_sets.items():
            assert (set_name(sid, family) in rendered) == (peer.cidr.version == family)
    v6 = render_sets(ir, 6)
    members = {s.name: s.members for s in v6.values() if s.kind == "hash:net"}
    assert frozenset({"::/1", "8000::/1"}) in members.values()  # ::/0: hash:net holds no /0
    assert frozenset({"2001:2:0:fe00::/64", "2001:2:0:fe00::7/128 nomatch"}) in members.values()


def test_a_clause_of_only_ipv4_blocks_admits_nothing_over_ipv6():
    ir = compiled(ONLY_V4_BLOCK)
    (v4_chain,) = [b for n, b in render(ir, veths(ir)).chains.items() if n.startswith("PICKET-IN")]
    (v6_chain,) = [
        b for n, b in render(ir, veths(ir), family=6).chains.items() if n.startswith("PICKET-IN")
    ]
    assert any("-j RETURN" in r for r in v4_chain)
    assert not any("-j RETURN" in r for r in v6_chain)  # INVALID, NFLOG, DROP only
    assert v6_chain[-1] == "-j DROP"


def test_selector_and_named_port_sets_hold_each_familys_members():
    ir = compiled(INGRESS_80, NAMED_PORT_EGRESS)
    v4, v6 = render_sets(ir, 4), render_sets(ir, 6)
    selector = next(sid for sid, s in ir.sets.items() if s.__class__.__name__ == "SelectorSet")
    assert v4[set_name(selector)].members
    assert all(ip_address(m).version == 4 for m in v4[set_name(selector)].members)
    assert {ip_address(m) for m in v6[set_name(selector, 6)].members} == {
        ip_address(v6_of(str(ip))) for ip in map(ip_address, v4[set_name(selector)].members)
    }
    named = next(sid for sid, s in ir.sets.items() if s.__class__.__name__ == "NamedPortSet")
    assert v6[set_name(named, 6)].members
    assert all(re.fullmatch(r"[0-9a-f:]+,tcp:80", m) for m in v6[set_name(named, 6)].members)
    assert family_count(ir.members[named], 6) == len(v6[set_name(named, 6)].members)


@pytest.mark.parametrize(
    ("member", "family", "text"),
    [
        (ip_address("198.18.1.1"), 4, "198.18.1.1"),
        (ip_address("198.18.1.1"), 6, None),
        (ip_address("2001:2:0:1::1"), 6, "2001:2:0:1::1"),
        (ip_address("2001:2:0:1::1"), 4, None),
    ],
)
def test_member_text_is_of_one_family(member, family, text):
    ir = compiled(INGRESS_80)
    selector = next(s for s in ir.sets.values() if s.__class__.__name__ == "SelectorSet")
    assert member_text(selector, member, family) == text


def test_set_names_tell_the_families_apart_and_fit_ipset():
    ir = compiled(INGRESS_80, NAMED_PORT_EGRESS, EGRESS_EVERYWHERE_V6)
    for family in (4, 6):
        sets = list(render_sets(ir, family).values())
        sets += source_check.render_sets(ir, veths(ir), family)
        sets += [s for group in transit_mark.render_sets(ir, family) for s in group]
        script = swap_script(sets)
        names = {line.split()[1] for line in script if line.split()[0] in ("create", "swap")}
        assert all(n.startswith(FAMILY[family]) and ours(n) for n in names)
        assert all(len(n) <= SET_NAME_MAX for n in names)
        creates = [line for line in script if line.startswith("create")]
        inet = "family inet6" if family == 6 else "family inet "
        assert creates and all(inet in line for line in creates)
    assert family_name("picket-pod-sources", 6) == "picket6-pod-sources"
    assert ipset_create(render_sets(ir, 6)[next(iter(render_sets(ir, 6)))]).count("inet6") == 1


def test_an_incremental_member_change_updates_each_familys_set():
    before = compiled(INGRESS_80)
    objs = dual_stack([*model_cluster(), INGRESS_80])
    for obj in objs:  # y/a joins pod=b
        if (
            obj["kind"] == "Pod"
            and obj["metadata"]["name"] == "a"
            and obj["metadata"]["namespace"] == "y"
        ):
            obj["metadata"]["labels"] = {"pod": "b"}
    after = dataclasses.replace(
        compile_node(state_of(objs), "node-1"),
        pod_cidrs=before.pod_cidrs,
        peer_node_ips=before.peer_node_ips,
    )
    change = diff_ir(before, after)
    v4 = update_script(after, change, family=4)
    v6 = update_script(after, change, family=6)
    assert [line for line in v4 if "198.18.1.11 " in line and line.startswith("add picket-s-")]
    assert [line for line in v6 if "2001:2:0:1::11 " in line and line.startswith("add picket6-s-")]
    assert not any("2001:" in line for line in v4) and not any("198.18." in line for line in v6)


@pytest.mark.parametrize("family", [4, 6])
def test_source_check_and_unprogrammed_rules_per_family(family):
    ir = compiled(INGRESS_80)
    links, sources = source_check.render_sets(ir, veths(ir), family)
    halves = ("0.0.0.0/1", "128.0.0.0/1") if family == 4 else ("::/1", "8000::/1")
    assert {m.split(",")[0] for m in links.members} == set(halves)
    assert sources.members == {
        f"{ip},{veths(ir)[ref]}"
        for ref, e in ir.endpoints.items()
        for ip in e.ips
        if ip.version == family
    }
    forward = render(ir, veths(ir), family=family).chains["PICKET-FORWARD"]
    assert forward[0] == source_check.forward_rule(family)
    assert f"--match-set {FAMILY[family]}pod-links src,src" in forward[0]
    cidr = V4_CIDR if family == 4 else V6_CIDR
    assert forward[1:3] == unprogrammed.forward_rules(ir, family)
    assert forward[1].startswith(f"-s {cidr} -m set ! --match-set {FAMILY[family]}pod-sources")
    assert forward[2].startswith(f"-d {cidr} -m set ! --match-set {FAMILY[family]}pod-sources")


def test_an_ipv6_only_node_range_closes_only_ipv6():
    ir = dataclasses.replace(compiled(), pod_cidrs=(V6_CIDR,))
    assert unprogrammed.forward_rules(ir, 4) == []
    assert len(unprogrammed.forward_rules(ir, 6)) == 2
    # No pod wired and no IPv4 range: no IPv4 sources set to create.
    assert source_check.render_sets(ir, {}, 4) == []
    assert [s.name for s in source_check.render_sets(ir, {}, 6)] == [
        "picket6-pod-links",
        "picket6-pod-sources",
    ]


@pytest.mark.parametrize("family", [4, 6])
def test_the_transit_mark_trusts_each_familys_peer_nodes(family):
    ir = compiled()
    rules = transit_mark.chain_rules(ir, ["eth0"], 0x17, family)
    peers, _ = transit_mark.sets(family)
    assert rules and all(f"--match-set {peers} src" in r for r in rules)
    (peer_set,), transit = transit_mark.render_sets(ir, family)
    assert peer_set.members == {"198.18.0.2" if family == 4 else "2001:2::2"}
    assert peer_set.family == family and transit == []
    alone = dataclasses.replace(ir, peer_node_ips=(ip_address("198.18.0.2"),))
    assert bool(transit_mark.chain_rules(alone, ["eth0"], 0x17, family)) == (family == 4)


def test_icmpv6_is_policed_as_its_own_protocol():
    """A clause with ports writes `-p tcp` (ICMPv6 echo never matches it); one without
    ports writes no protocol (it admits echo, as it admits ICMP over IPv4); errors pass
    only by the ESTABLISHED,RELATED return."""
    allow_all_from_b = policy(
        "y",
        "any-from-b",
        {
            "podSelector": {},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
        },
    )
    for pol, protocol in ((INGRESS_80, "-p tcp"), (allow_all_from_b, None)):
        ir = compiled(pol)
        chains = render(ir, veths(ir), family=6).chains
        (body,) = [b for n, b in chains.items() if n.startswith("PICKET-IN")]
        admits = [r for r in body if r.endswith("-j RETURN")]
        assert admits
        assert all((r.startswith(protocol) if protocol else " -p " not in f" {r}") for r in admits)
        assert (
            chains["PICKET-FORWARD"].count("-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN")
            == 1
        )


def test_the_same_ir_gives_the_same_chain_names_in_both_families():
    ir = compiled(INGRESS_80, EGRESS_EVERYWHERE_V6)
    both = render_families(ir, veths(ir))
    assert set(both) == {4, 6}
    assert set(both[4].chains) == set(both[6].chains)
    assert both[4].chains != both[6].chains


def test_ip6tables_save_counters_read_as_ipv4s_do():
    ir = compiled(INGRESS_80)
    text = text_of(ir, 6)
    save = "\n".join(
        f"[3:240] {line}" if line.startswith("-A ") else line for line in text.splitlines()
    )
    counted = {labels: packets for _, labels, packets in counted_rules(save)}
    assert counted[("ingress", "policy", "y")] == 3 * len(
        [n for n in render(ir, veths(ir), family=6).chains if n.startswith("PICKET-IN")]
    )
    assert counted[("egress", "unprogrammed", "")] == 3
    assert counted[("egress", "spoofed", "")] == 3
