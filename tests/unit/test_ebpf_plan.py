"""The eBPF map plan against the oracle: on random clusters and random sequences of
changes, the maps the planner maintains incrementally, read with the datapath's own
lookups (ebpf_eval), decide every connection as the oracle does."""

from __future__ import annotations

import copy
from ipaddress import IPv4Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.compiler.incremental import IncrementalCompiler
from agent.dataplane.ebpf_eval import endpoint_admits
from agent.dataplane.ebpf_layout import DIR_EGRESS, DIR_INGRESS
from agent.dataplane.ebpf_plan import EbpfPlanner, port_blocks
from agent.model.live import LiveState
from agent.model.oracle import verdict
from agent.model.parse import parse_object
from agent.model.state import ClusterState
from tests.support.mutations import NODES, key, mutate, ops
from tests.support.strategies import clusters

OUTSIDE = ["198.19.200.7", "198.19.200.8", "198.18.0.1", "198.18.0.2"]
TARGETS = [("TCP", 80), ("TCP", 81), ("UDP", 81), ("TCP", 1080), ("TCP", 1081), ("SCTP", 80)]


def maps_allow(plans: dict, irs: dict, src: str, dst: str, protocol: str, port: int) -> bool:
    """Both ends' datapaths, as the oracle's `allowed`: egress at the source's node,
    ingress at the destination's."""
    s, d = IPv4Address(src), IPv4Address(dst)
    if s == d:
        return True
    for node, ir in irs.items():
        for ref, endpoint in ir.endpoints.items():
            if s in endpoint.ips and not endpoint_admits(
                plans[node].state, ref, DIR_EGRESS, d, d, protocol, port
            ):
                return False
            if d in endpoint.ips and not endpoint_admits(
                plans[node].state, ref, DIR_INGRESS, s, d, protocol, port
            ):
                return False
    return True


def compare(objects: dict, plans: dict, irs: dict) -> None:
    state = ClusterState.from_objects(parse_object(o) for o in objects.values())
    pod_ips = [str(p.ips[0]) for p in state.endpoint_pods]
    for src in pod_ips + OUTSIDE:
        for dst in pod_ips + OUTSIDE:
            if src in OUTSIDE and dst in OUTSIDE:
                continue
            for protocol, port in TARGETS:
                want = verdict(state, src, dst, protocol, port).allowed
                got = maps_allow(plans, irs, src, dst, protocol, port)
                assert got == want, f"{src} -> {dst} {port}/{protocol}: maps {got}, oracle {want}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.lists(st.lists(ops, min_size=1, max_size=3), max_size=4))
def test_planned_maps_decide_like_the_oracle(objs, batches):
    objects = {key(o): o for o in objs}
    live = LiveState.from_state(ClusterState.from_objects(parse_object(o) for o in objs))
    compilers = {n: IncrementalCompiler(n) for n in NODES}
    plans = {n: EbpfPlanner() for n in NODES}
    irs = {n: compilers[n].rebuild(live) for n in NODES}
    for n in NODES:
        plans[n].plan(irs[n], irs[n].node_ips)
    compare(objects, plans, irs)
    counter = [0]
    for batch in batches:
        for op in batch:
            for k in mutate(objects, op, counter):
                if k in objects:
                    live.put(parse_object(objects[k]))
                else:
                    live.remove(k[0], k[1].lstrip("/"))
        changes = live.take_changes()
        for n in NODES:
            live.changes = copy.copy(changes)
            live.changes.pods = list(changes.pods)
            irs[n] = compilers[n].update(live)
            plans[n].plan(irs[n], irs[n].node_ips)
            # Endpoint flags (isolation, named ports, audit mode) as a fresh plan has them.
            fresh = EbpfPlanner()
            fresh.plan(irs[n], irs[n].node_ips)
            flags = {ref: value[1] for ref, value in plans[n].state.endpoints.items()}
            assert flags == {ref: value[1] for ref, value in fresh.state.endpoints.items()}
        compare(objects, plans, irs)


def test_port_blocks_cover_exactly():
    for first, last in [
        (1, 65535),
        (80, 80),
        (80, 81),
        (8000, 8100),
        (30000, 30100),
        (0, 7),
        (1023, 1025),
    ]:
        covered = set()
        for start, bits in port_blocks(first, last):
            size = 1 << (16 - bits)
            assert start % size == 0
            covered |= set(range(start, start + size))
        assert covered == set(range(first, last + 1)), (first, last)
    assert len(port_blocks(1, 65534)) <= 30


def test_a_relabel_to_a_known_identity_is_one_address_update():
    from tests.support.builders import model_cluster, policy

    objs = [
        *model_cluster(),
        policy(
            "y",
            "p",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}}
                        ]
                    }
                ],
            },
        ),
    ]
    live = LiveState.from_state(ClusterState.from_objects(parse_object(o) for o in objs))
    compiler, planner = IncrementalCompiler("node-1"), EbpfPlanner()
    ir = compiler.rebuild(live)
    planner.plan(ir, ir.node_ips)
    pod = next(
        o
        for o in objs
        if o["kind"] == "Pod" and o["metadata"]["name"] == "b" and o["metadata"]["namespace"] == "z"
    )
    relabelled = copy.deepcopy(pod)
    relabelled["metadata"]["labels"] = {"pod": "a"}  # z/a has these labels already
    live.put(parse_object(relabelled))
    delta = planner.plan(compiler.update(live), ir.node_ips)
    assert list(delta.addr_set) == [(relabelled["status"]["podIP"], 32)]
    assert not (delta.policy_add or delta.policy_del or delta.endpoint_set or delta.addr_del)


def test_allocations_survive_a_restart():
    from tests.support.builders import model_cluster, policy

    objs = [
        *model_cluster(),
        policy(
            "y",
            "p",
            {
                "podSelector": {},
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": "198.18.0.0/16", "except": ["198.18.1.0/24"]}}]}
                ],
            },
        ),
    ]
    live = LiveState.from_state(ClusterState.from_objects(parse_object(o) for o in objs))
    ir = IncrementalCompiler("node-1").rebuild(live)
    first = EbpfPlanner()
    first.plan(ir, ir.node_ips)
    again = EbpfPlanner(first.allocations())
    again.plan(ir, ir.node_ips)
    assert again.state == first.state


def run_sequence(objs: list[dict], batches: list[list[tuple]]) -> None:
    """Plan incrementally through `batches` of changes, comparing with the oracle."""
    test_planned_maps_decide_like_the_oracle.hypothesis.inner_test(objs, batches)


def test_ipblock_excepts_hold():
    from tests.support.builders import model_cluster, policy

    objs = [
        *model_cluster(),
        policy(
            "y",
            "p",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {"ipBlock": {"cidr": "198.19.200.0/24", "except": ["198.19.200.7/32"]}},
                            {
                                "ipBlock": {
                                    "cidr": "198.18.0.0/16",
                                    "except": ["198.18.2.0/24", "198.18.1.0/28"],
                                }
                            },
                        ]
                    }
                ],
            },
        ),
        policy(
            "x",
            "q",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["198.18.1.0/24"]}}]}
                ],
            },
        ),
    ]
    run_sequence(objs, [])


def test_relabel_out_of_a_selector_and_back():
    from tests.support.builders import model_cluster, policy

    objs = [
        *model_cluster(),
        policy(
            "y",
            "p",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}}
                        ]
                    }
                ],
            },
        ),
    ]
    objs = [
        o
        if o["kind"] != "Pod"
        else {**o, "metadata": {**o["metadata"], "labels": {"pod": o["metadata"]["labels"]["pod"]}}}
        for o in objs
    ]
    # Every pod a relabelled away (its identity goes), then one back.
    away = [("relabel", i, {"app": "web"}) for i in (0, 3, 6)]
    # A new label set may get a number that was freed: it must not inherit selections.
    newcomer = [("add-pod", "z", 0, {"tier": "db"}, "node-1", None)]
    run_sequence(objs, [away, newcomer, [("relabel", 3, {"pod": "a"})], [("delete-pod", 0)]])
