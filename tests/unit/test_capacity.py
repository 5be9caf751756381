"""When a plan does not fit (agent/dataplane/capacity.py, and the eBPF writes' order):
the endpoints with the most entries are the ones denied, a denied endpoint's IR admits
nothing both ways and keeps its policies' names, sets only it used go, and every delete
is written before any add."""

from __future__ import annotations

from ipaddress import ip_address as ip

from agent.compiler.compile import compile_node
from agent.compiler.evaluate import node_admits
from agent.dataplane.capacity import Overflow, closed, overflowing, policies_of, sets_users
from agent.dataplane.ebpf.entries import MapDelta, PolicyEntry
from agent.dataplane.ebpf.writes import EndpointWrites, ordered_writes
from agent.metrics.health import readiness
from tests.support.builders import model_cluster, policy, state_of


def from_ns(ns: str) -> dict:
    peer = {"namespaceSelector": {"matchLabels": {"ns": ns}}}
    return {"podSelector": {}, "ingress": [{"from": [peer]}]}


FROM_X, FROM_Z = from_ns("x"), from_ns("z")


def test_the_smallest_endpoints_are_kept_first_and_ties_go_by_name():
    sizes = {"big/a": 500, "big/b": 500, "small/a": 2, "small/b": 2, "mid/a": 10}
    assert overflowing(sizes, 1000) == ("big/b",)
    assert overflowing(sizes, 14) == ("big/a", "big/b")
    assert overflowing(sizes, 4) == ("big/a", "big/b", "mid/a")
    assert overflowing(sizes, 10_000) == ()


def test_a_closed_endpoint_admits_nothing_and_keeps_its_policies_names():
    objs = [*model_cluster(), policy("y", "from-x", FROM_X), policy("z", "from-z", FROM_Z)]
    ir = compile_node(state_of(objs), "node-1")
    x_a, y_a, z_a = "198.18.1.1", "198.18.1.11", "198.18.1.21"
    capped = closed(ir, {"y/a"})
    assert node_admits(ir, ip(x_a), ip(y_a), "TCP", 80)
    assert not node_admits(capped, ip(x_a), ip(y_a), "TCP", 80)  # its ingress
    assert not node_admits(capped, ip(y_a), ip(x_a), "TCP", 80)  # and its egress
    assert node_admits(capped, ip(x_a), ip("198.18.1.12"), "TCP", 80)  # y/b as before
    assert node_admits(capped, ip(z_a), ip("198.18.1.22"), "TCP", 80)  # z as before
    y = capped.endpoints["y/a"]
    assert y.ingress.policies == y.egress.policies == ("y/from-x",)
    assert y.ingress.clauses == y.egress.clauses == ()
    assert policies_of(ir, ["y/a", "z/a"]) == ("y/from-x", "z/from-z")
    assert set(sets_users(ir)) == set(ir.sets)
    # The x set is still y/b's; with both y pods closed it goes.
    both = closed(ir, {"y/a", "y/b"})
    assert set(both.sets) == set(sets_users(both)) and len(both.sets) < len(ir.sets)
    assert closed(ir, ()) is ir


def test_an_overflow_says_what_it_needs_and_whom_it_denies_and_readiness_fails():
    overflow = Overflow("policy", 100, 2500, ("big/a", "big/b"), ("big/wide",))
    assert overflow.message() == (
        "policy: the plan needs 2500 entries, the table holds 100; denying all traffic of "
        "2 endpoints until it fits: big/a, big/b (policies big/wide)"
    )
    assert readiness(True, ["policy"]).ok is False
    assert "capacity exceeded: policy" in readiness(True, ["policy"]).reason
    assert readiness(True, []).ok and not readiness(False, []).ok


def test_every_delete_is_written_before_any_add():
    old, new = PolicyEntry(1, 0, 5, 6, 5432, 16), PolicyEntry(1, 0, 5, 6, 6432, 16)
    delta = MapDelta(policy_add={new}, policy_del={old}, addr_set={("198.18.1.1", 32): (5, 0)})
    delta.addr_del.add(("198.18.1.2", 32))
    writes = ordered_writes(delta, EndpointWrites(put={7: (1, 1)}, delete=[8]), stable=True)
    kinds = [value is None for _, _, value in writes]
    assert kinds == sorted(kinds, reverse=True), writes  # deletes (None) all first
    assert writes[-1][0] == "picket_endpoints"  # the flags that make entries count: last


def test_sets_are_sized_from_their_content_and_grow_through_a_swap():
    from agent.compiler.diff import IRDiff, MemberChange
    from agent.dataplane.ipset_render import (
        DEFAULT_MAXELEM,
        IpSet,
        maxelem_for,
        swap_script,
        update_script,
    )

    assert maxelem_for(0) == maxelem_for(32768) == DEFAULT_MAXELEM  # as earlier agents'
    assert maxelem_for(32769) == 131072 and maxelem_for(100_000) == 262144
    big = IpSet(
        "picket-s-big", "hash:ip", frozenset(f"10.0.{i // 250}.{i % 250}" for i in range(40_000))
    )
    small = IpSet("picket-s-small", "hash:ip", frozenset({"10.1.0.1"}))
    fresh = swap_script([big, small])
    assert fresh[0] == "create picket-s-big hash:ip family inet maxelem 131072 -exist"
    assert "create picket-s-small hash:ip family inet -exist" in fresh
    # An existing set is not created again (create -exist fails on another size): the
    # temporary has the new size, and the swap gives it to the set.
    known = swap_script([big], existing={"picket-s-big"})
    assert known[0] == "create picket-t-s-big hash:ip family inet maxelem 131072 -exist"
    assert "swap picket-t-s-big picket-s-big" in known
    ir = compile_node(state_of([*model_cluster(), policy("y", "from-x", FROM_X)]), "node-1")
    (sid,) = ir.sets
    change = IRDiff(members={sid: MemberChange(frozenset({ip("198.18.1.99")}), frozenset())})
    assert update_script(ir, change) == [f"add picket-{sid} 198.18.1.99 -exist"]
    rebuilt = update_script(ir, change, rebuilt=[sid], existing={f"picket-{sid}"})
    assert any(line.startswith("swap ") for line in rebuilt)  # built whole
    assert not any(line.startswith("add picket-" + sid) for line in rebuilt)


def test_addresses_left_out_are_peers_first_and_endpoints_beyond_the_map_get_none():
    from agent.dataplane.capacity import without_addresses, without_endpoints

    ir = compile_node(state_of(model_cluster()), "node-1")
    local = {a for e in ir.endpoints.values() for a in e.ips}
    fewer, out = without_addresses(ir, len(local) + 1)
    assert local <= set(fewer.addresses) and len(fewer.addresses) == len(local) + 1
    assert sorted(map(str, set(ir.addresses) - set(fewer.addresses))) == sorted(out)
    assert without_addresses(ir, 100) == (ir, ())
    overflow = Overflow("addr", 8, 10, (), (), out)
    assert overflow.message().startswith("addr: the plan needs 10 entries, the table holds 8;")
    assert f"{len(out)} pod addresses left out" in overflow.message()
    kept, left = without_endpoints(ir, 2)
    assert list(kept.endpoints) == sorted(ir.endpoints)[:2] and left == tuple(
        sorted(ir.endpoints)[2:]
    )
