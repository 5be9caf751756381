"""The iptables rendering: chain layout, sharing, multiport limits, audit mode (the
golden files of every example are in test_golden.py)."""

from __future__ import annotations

import dataclasses
from ipaddress import ip_network

from agent.compiler.compile import compile_node
from agent.compiler.ir import PortRange
from agent.dataplane import source_check, transit_mark
from agent.dataplane.iptables_render import (
    ESTABLISHED_RULE,
    INVALID_RULE,
    MULTIPORT_LIMIT,
    _multiport_chunks,
    counted_rules,
    render,
)
from tests.support.builders import model_cluster, policy, state_of

VETHS = {f"{ns}/{pod}": f"veth-{ns}-{pod}" for ns in "xyz" for pod in "abc"}


def test_rule_count_does_not_depend_on_peer_pods():
    spec = {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}
    small = state_of([*model_cluster(), policy("y", "p", spec)])
    extra = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"peer{i}", "namespace": "z"},
            "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "i"}]},
            "status": {"podIP": f"198.19.{i // 250}.{i % 250 + 1}"},
        }
        for i in range(2000)
    ]
    big = state_of([*model_cluster(), *extra, policy("y", "p", spec)])
    interfaces = {f"{ns}/{p}": f"v{ns}{p}" for ns in "xyz" for p in "abc"}
    few, many = (render(compile_node(s, "node-1"), interfaces) for s in (small, big))
    assert few.rule_count() == many.rule_count()
    ours = {*transit_mark.SETS, *source_check.SETS}
    peer_sets = [[v for k, v in r.sets.items() if k not in ours] for r in (few, many)]
    (small_set,), (big_set,) = peer_sets
    assert len(big_set.members) == len(small_set.members) + 2000


def test_shared_chains_for_pods_selected_alike():
    spec = {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}
    ir = compile_node(state_of([*model_cluster(), policy("y", "p", spec)]), "node-1")
    ruleset = render(ir, {ref: "v" + ref.replace("/", "") for ref in ir.endpoints})
    in_chains = [c for c in ruleset.chains if c.startswith("PICKET-IN-")]
    assert len(in_chains) == 1  # y/a and y/b share one chain


def test_unwired_endpoints_get_no_rules():
    spec = {"podSelector": {}}
    ir = compile_node(state_of([*model_cluster(), policy("y", "p", spec)]), "node-1")
    forward = render(ir, {}).chains["PICKET-FORWARD"]
    assert len(forward) == 1 and not any("-j PICKET-" in rule for rule in forward)


def test_multiport_chunks_respect_the_limit():
    ranges = [PortRange("TCP", p, p) for p in range(1000, 1020)] + [PortRange("TCP", 5, 9)]
    chunks = list(_multiport_chunks(ranges))
    for chunk in chunks:
        assert sum(2 if ":" in item else 1 for item in chunk.split(",")) <= MULTIPORT_LIMIT
    assert sorted(i for c in chunks for i in c.split(",")) == sorted(
        ["5:9", *map(str, range(1000, 1020))]
    )


def test_zero_prefix_ipblock_is_two_halves():
    spec = {
        "podSelector": {},
        "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["198.18.0.0/15"]}}]}],
    }
    ir = compile_node(state_of([*model_cluster(), policy("y", "p", spec)]), "node-1")
    (ipset,) = [v for k, v in render(ir, {}).sets.items() if k not in transit_mark.SETS]
    assert ipset.kind == "hash:net"
    assert ipset.members == {"0.0.0.0/1", "128.0.0.0/1", "198.18.0.0/15 nomatch"}


def _audited(objs: list[dict]) -> list[dict]:
    for obj in objs:
        if obj["kind"] == "Namespace" and obj["metadata"]["name"] == "y":
            obj["metadata"]["annotations"] = {"picket.io/enforcement": "audit"}
    return objs


def test_audit_mode_logs_and_admits_instead_of_dropping():
    deny = policy("y", "default-deny", {"podSelector": {}})
    enforced = render(compile_node(state_of([*model_cluster(), deny]), "node-1"), VETHS)
    audited = render(compile_node(state_of([*_audited(model_cluster()), deny]), "node-1"), VETHS)
    enforced_in = [c for n, c in enforced.chains.items() if n.startswith("PICKET-IN-")]
    audited_in = [c for n, c in audited.chains.items() if n.startswith("PICKET-IN-")]
    assert enforced_in and audited_in
    assert all(c[-1] == "-j DROP" and '"picket drop ingress"' in c[-2] for c in enforced_in)
    for chain in audited_in:
        # Only what has no conntrack entry is dropped, as in an enforcing chain (the
        # eBPF datapath does the same): audit mode reports what policy denies.
        assert chain[1] == INVALID_RULE  # after the drop log's NFLOG of it
        assert chain[0].endswith('--nflog-prefix "picket invalid ingress"')
        assert not any("DROP" in rule for rule in chain[2:])
        assert '--nflog-prefix "picket audit ingress"' in chain[-1]
    assert set(enforced.chains) != set(audited.chains)  # never shared with enforcing pods


def test_pod_cidrs_close_what_no_programmed_pod_holds_before_anything_else():
    """Traffic from or to the node's pod CIDR that is no wired pod's (on its own
    interface) goes to PICKET-UNPROG-*: after the anti-spoofing rule, before the
    ESTABLISHED return; the sources set they read exists even before any pod is wired."""
    ir = dataclasses.replace(
        compile_node(state_of(model_cluster()), "node-1"),
        pod_cidrs=(ip_network("198.18.1.0/24"), ip_network("2001:2::/64")),
    )
    wired = render(ir, VETHS)
    forward = wired.chains["PICKET-FORWARD"]
    assert forward[0] == source_check.forward_rule()
    assert forward[1:3] == [
        "-s 198.18.1.0/24 -m set ! --match-set picket-pod-sources src,src "
        '-m comment --comment "picket: a pod not programmed yet" -j PICKET-UNPROG-EG',
        "-d 198.18.1.0/24 -m set ! --match-set picket-pod-sources dst,dst "
        '-m comment --comment "picket: a pod not programmed yet" -j PICKET-UNPROG-IN',
    ]  # the IPv6 range is in the ip6tables rules (test_iptables_families.py)
    assert forward[3] == ESTABLISHED_RULE
    assert wired.chains["PICKET-UNPROG-IN"] == [
        '-j NFLOG --nflog-group 100 --nflog-prefix "picket unprogrammed ingress"',
        "-j DROP",
    ]
    unwired = render(ir, {})
    assert unwired.chains["PICKET-FORWARD"][:2] == forward[1:3]
    assert unwired.sets[source_check.SOURCES_SET].members == frozenset()
    no_cidr = render(compile_node(state_of(model_cluster()), "node-1"), {})
    assert not any("UNPROG" in rule for rule in no_cidr.chains["PICKET-FORWARD"])


def test_unprogrammed_drops_are_counted_by_direction_from_the_jump_counters():
    save = "\n".join(
        [
            "*mangle",
            "[7:420] -A PICKET-FORWARD -s 198.18.1.0/24 -m set ! --match-set picket-pod-sources"
            ' src,src -m comment --comment "picket: a pod not programmed yet" -j PICKET-UNPROG-EG',
            "[3:180] -A PICKET-FORWARD -d 198.18.1.0/24 -m set ! --match-set picket-pod-sources"
            ' dst,dst -m comment --comment "picket: a pod not programmed yet" -j PICKET-UNPROG-IN',
            "[3:180] -A PICKET-UNPROG-IN -j DROP",
            "COMMIT",
        ]
    )
    counted = {labels: packets for _, labels, packets in counted_rules(save)}
    assert counted == {("egress", "unprogrammed", ""): 7, ("ingress", "unprogrammed", ""): 3}
