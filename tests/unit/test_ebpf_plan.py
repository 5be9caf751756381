"""The eBPF map plan against the oracle: on random clusters and random sequences of
changes, the maps the planner maintains from the IR diffs alone (as the backend is
handed them), read with the datapath's own lookups (ebpf/evaluate.py), decide every
connection as the oracle does; and after every change they are exactly what a plan from
scratch gives. Dual-stack clusters too: every pod address of both families, ipBlocks of
both, through the one 16-byte address map (IPv4 mapped, as the kernel's trie holds it)."""

from __future__ import annotations

import copy
import dataclasses
from ipaddress import ip_address, ip_network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.compiler.diff import diff_ir
from agent.compiler.incremental import IncrementalCompiler
from agent.compiler.ir import NodeIR
from agent.dataplane.ebpf.entries import MapDelta, MapState, port_blocks
from agent.dataplane.ebpf.evaluate import endpoint_admits
from agent.dataplane.ebpf.planner import EbpfPlanner
from agent.dataplane.ebpf_layout import DIR_EGRESS, DIR_INGRESS
from agent.model.live import LiveState
from agent.model.oracle import verdict
from agent.model.parse import parse_object
from agent.model.state import ClusterState
from tests.support.mutations import NODES, key, mutate, ops
from tests.support.strategies import clusters

OUTSIDE = ["198.19.200.7", "198.19.200.8", "198.18.0.1", "198.18.0.2"]
OUTSIDE6 = ["2001:2:0:fe00::7", "2001:2:0:fe00::8", "2001:2::1", "2001:2::2", "2001:db8::1"]
TARGETS = [("TCP", 80), ("TCP", 81), ("UDP", 81), ("TCP", 1080), ("TCP", 1081), ("SCTP", 80)]


def maps_allow(plans: dict, irs: dict, src: str, dst: str, protocol: str, port: int) -> bool:
    """Both ends' datapaths, as the oracle's `allowed`: egress at the source's node,
    ingress at the destination's."""
    s, d = ip_address(src), ip_address(dst)
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


def write(kernel: MapState, delta: MapDelta) -> None:
    """What the backend's writes of `delta` do to maps holding `kernel`."""
    kernel.addresses.update(delta.addr_set)
    for address in delta.addr_del:
        kernel.addresses.pop(address, None)
    for ref in delta.endpoint_del:
        kernel.endpoints.pop(ref, None)
    kernel.endpoints.update(delta.endpoint_set)
    kernel.policy = (kernel.policy | delta.policy_add) - delta.policy_del
    kernel.named = (kernel.named | delta.named_add) - delta.named_del


def plan_change(planner: EbpfPlanner, old: NodeIR, new: NodeIR) -> MapDelta:
    """As the backend plans an incremental sync: from the diff, with the node's
    addresses only when they changed."""
    change = diff_ir(old, new)
    return planner.update(new, change, new.node_ips if change.node_ips is not None else None)


def assert_as_from_scratch(planner: EbpfPlanner, ir: NodeIR) -> None:
    """The incrementally kept maps are what a full sync plans (with the same numbering),
    so a full sync after incremental ones writes nothing."""
    again = copy.deepcopy(planner)
    delta = again.rebuild(ir, ir.node_ips)
    assert again.state == planner.state
    assert delta.empty, delta


def compare(objects: dict, plans: dict, irs: dict) -> None:
    """Every pair of one family: every address of every pod, and outside addresses."""
    state = ClusterState.from_objects(parse_object(o) for o in objects.values())
    pod_ips = [str(ip) for p in state.endpoint_pods for ip in p.ips]
    outside = OUTSIDE + (OUTSIDE6 if any(":" in ip for ip in pod_ips) else [])
    for src in pod_ips + outside:
        for dst in pod_ips + outside:
            if (src in outside and dst in outside) or (":" in src) != (":" in dst):
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
    kernels = {n: MapState() for n in NODES}  # the maps, written delta by delta
    for n in NODES:
        write(kernels[n], plans[n].rebuild(irs[n], irs[n].node_ips))
        assert kernels[n] == plans[n].state
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
            new = compilers[n].update(live)
            write(kernels[n], plan_change(plans[n], irs[n], new))
            irs[n] = new
            assert kernels[n] == plans[n].state
            # Endpoint flags (isolation, named ports, audit mode) as a fresh plan has them.
            fresh = EbpfPlanner()
            fresh.rebuild(irs[n], irs[n].node_ips)
            flags = {ref: value[1] for ref, value in plans[n].state.endpoints.items()}
            assert flags == {ref: value[1] for ref, value in fresh.state.endpoints.items()}
            assert_as_from_scratch(plans[n], irs[n])
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
    planner.rebuild(ir, ir.node_ips)
    pod = next(
        o
        for o in objs
        if o["kind"] == "Pod" and o["metadata"]["name"] == "b" and o["metadata"]["namespace"] == "z"
    )
    relabelled = copy.deepcopy(pod)
    relabelled["metadata"]["labels"] = {"pod": "a"}  # z/a has these labels already
    live.put(parse_object(relabelled))
    delta = plan_change(planner, ir, compiler.update(live))
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
    first.rebuild(ir, ir.node_ips)
    again = EbpfPlanner(first.allocations())
    again.rebuild(ir, ir.node_ips)
    assert again.state == first.state
    assert not again.numbers.take_changed()  # nothing new to persist


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


def test_an_incremental_plan_works_from_the_diff_alone():
    """What the diff does not name is not replanned: the planner keeps no second copy
    of the IR to diff against (the backend contract, docs/agent.md)."""
    from agent.compiler.diff import IRDiff
    from tests.support.builders import model_cluster, policy

    deny = policy("y", "deny", {"podSelector": {}})
    live = LiveState.from_state(ClusterState.from_objects(parse_object(o) for o in model_cluster()))
    compiler, planner = IncrementalCompiler("node-1"), EbpfPlanner()
    ir = compiler.rebuild(live)
    planner.rebuild(ir, ir.node_ips)
    before = copy.deepcopy(planner.state)
    live.put(parse_object(deny))
    isolated = compiler.update(live)
    assert planner.update(isolated, IRDiff()).empty
    assert planner.state == before
    delta = plan_change(planner, ir, isolated)
    assert delta.endpoint_set and planner.state != before


def test_a_reused_endpoint_number_keeps_its_entries():
    """A pod deleted and another created in one sync: the new endpoint takes the freed
    number, and an entry both of them have (here "any peer") is neither deleted nor
    added; a delta holding it in both would have the kernel lose it."""
    from tests.support.builders import model_cluster, policy

    objs = [*model_cluster(), policy("y", "open", {"podSelector": {}, "ingress": [{}]})]
    live = LiveState.from_state(ClusterState.from_objects(parse_object(o) for o in objs))
    compiler, planner = IncrementalCompiler("node-1"), EbpfPlanner()
    ir = compiler.rebuild(live)
    planner.rebuild(ir, ir.node_ips)
    kernel = copy.deepcopy(planner.state)
    gone = next(
        o
        for o in objs
        if o["kind"] == "Pod"
        and o["metadata"]["namespace"] == "y"
        and o["spec"]["nodeName"] == "node-1"
    )
    replacement = copy.deepcopy(gone)
    replacement["metadata"]["name"] = "replacement"
    live.remove("Pod", f"y/{gone['metadata']['name']}")
    live.put(parse_object(replacement))
    delta = plan_change(planner, ir, compiler.update(live))
    assert not delta.policy_add & delta.policy_del
    write(kernel, delta)
    assert kernel == planner.state


# --- dual-stack ------------------------------------------------------------------------

IPV6_BLOCKS = [
    {"cidr": "2001:2:0:1::/64"},
    {"cidr": "2001:2:0:1::1/128"},
    {"cidr": "2001:2::/48", "except": ["2001:2:0:2::/64"]},
    {"cidr": "2001:2:0:fe00::/64", "except": ["2001:2:0:fe00::7/128"]},
    {"cidr": "::/0", "except": ["2001:2:0:1::/64"]},  # holds ::ffff:0:0/96: no IPv4 in it
    {"cidr": "::/0"},
    {"cidr": "198.18.1.0/24"},  # an IPv4 block beside: it never matches IPv6
    {"cidr": "0.0.0.0/0", "except": ["198.19.200.7/32"]},
]


def dual_stack(objs: list[dict]) -> list[dict]:
    """`objs` with an IPv6 address beside every IPv4 one, as the dual-stack lab plans
    them (docs/lab.md): pod 198.18.N.M also 2001:2:0:N::M, node i also 2001:2::i."""
    out = copy.deepcopy(objs)
    for o in out:
        if o["kind"] == "Pod" and o["status"].get("podIP"):
            n, m = ip_address(o["status"]["podIP"]).packed[2:]
            v4 = o["status"]["podIP"]
            o["status"]["podIPs"] = [{"ip": v4}, {"ip": f"2001:2:0:{n:x}::{m:x}"}]
        elif o["kind"] == "Node":
            i = int(o["metadata"]["name"].rpartition("-")[2])
            o["status"]["addresses"].append({"type": "InternalIP", "address": f"2001:2::{i:x}"})
    return out


def ipblock_policy(namespace: str, direction: str, blocks: list[dict]) -> dict:
    from tests.support.builders import policy

    side = "from" if direction == "ingress" else "to"
    spec = {
        "podSelector": {},
        "policyTypes": [direction.capitalize()],
        direction: [{side: [{"ipBlock": b} for b in blocks]}],
    }
    return policy(namespace, f"blocks-{direction}", spec)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    clusters().map(dual_stack),
    st.lists(st.sampled_from(IPV6_BLOCKS), max_size=3),
    st.sampled_from(["x", "y", "z"]),
    st.sampled_from(["ingress", "egress"]),
    st.lists(st.lists(ops, min_size=1, max_size=3), max_size=1),
)
def test_dual_stack_maps_decide_like_the_oracle_on_both_families(
    objs, blocks, namespace, direction, batches
):
    extra = [ipblock_policy(namespace, direction, blocks)] if blocks else []
    run_sequence([*objs, *extra], batches)


def test_a_dual_stack_pods_addresses_share_its_identity():
    from tests.support.builders import model_cluster

    objs = dual_stack([*model_cluster(), ipblock_policy("y", "ingress", IPV6_BLOCKS[:3])])
    ir = IncrementalCompiler("node-1").rebuild(
        LiveState.from_state(ClusterState.from_objects(parse_object(o) for o in objs))
    )
    planner = EbpfPlanner()
    planner.rebuild(ir, ir.node_ips)
    addresses = planner.state.addresses
    # One identity per pod, whichever family; the node's own addresses HOST in both.
    assert addresses[("198.18.1.1", 32)][0] == addresses[("2001:2:0:1::1", 128)][0]
    assert addresses[("198.18.0.1", 32)] == addresses[("2001:2::1", 128)] == (1, 0)
    # A pod's IPv6 address carries its IPv6 ipBlock's identity (the /128, the longest).
    block = planner.prefixes.by_thing[ip_network("2001:2:0:1::1/128")]
    assert addresses[("2001:2:0:1::1", 128)][1] == block
    assert addresses[("198.18.1.1", 32)][1] == 0  # no IPv4 block holds it
    assert addresses[("2001:2:0:1::", 64)] == (
        2,
        planner.prefixes.get(ip_network("2001:2:0:1::/64")),
    )
    assert ("0.0.0.0", 0) not in addresses  # no IPv6 block as wide as IPv4's mapped space
    # The node's IPv6 link-local and loopback addresses are never a forwarded packet's.
    host = [ip_address(a) for a in ("198.18.0.1", "2001:2::1", "fe80::1", "::1", "127.0.0.1")]
    planner.rebuild(ir, host)
    assert ("fe80::1", 128) not in planner.state.addresses
    assert ("::1", 128) not in planner.state.addresses
    assert planner.state.addresses[("2001:2::1", 128)] == (1, 0)


def test_an_ipv6_block_over_the_mapped_space_gives_ipv4_addresses_nothing():
    """::/0 in the kernel's trie holds ::ffff:0:0/96, where IPv4 addresses are kept; the
    plan then holds the whole IPv4 space as WORLD, so that an outside IPv4 address is no
    member of the IPv6 block (and an IPv4 0.0.0.0/0 block, when there is one, takes
    that very key)."""
    from agent.dataplane.ebpf.evaluate import peer_identity
    from tests.support.builders import model_cluster

    objs = dual_stack([*model_cluster(), ipblock_policy("y", "egress", [{"cidr": "::/0"}])])
    ir = IncrementalCompiler("node-1").rebuild(
        LiveState.from_state(ClusterState.from_objects(parse_object(o) for o in objs))
    )
    planner = EbpfPlanner()
    planner.rebuild(ir, ir.node_ips)
    everything6 = planner.prefixes.by_thing[ip_network("::/0")]
    assert planner.state.addresses[("0.0.0.0", 0)] == (2, 0)
    assert peer_identity(planner.state, ip_address("198.19.200.7")) == (2, 0)
    assert peer_identity(planner.state, ip_address("2001:2:0:fe00::7")) == (2, everything6)
    # An IPv6 packet's ::ffff:a.b.c.d is no peer: not the pod whose IPv4 it spells.
    assert peer_identity(planner.state, ip_address("::ffff:198.18.1.1")) == (2, 0)
    both = [{"cidr": "::/0"}, {"cidr": "0.0.0.0/0"}]
    objs = dual_stack([*model_cluster(), ipblock_policy("y", "egress", both)])
    ir = IncrementalCompiler("node-1").rebuild(
        LiveState.from_state(ClusterState.from_objects(parse_object(o) for o in objs))
    )
    planner = EbpfPlanner()
    planner.rebuild(ir, ir.node_ips)
    everything4 = planner.prefixes.by_thing[ip_network("0.0.0.0/0")]
    assert planner.state.addresses[("0.0.0.0", 0)] == (2, everything4)


def test_named_ports_and_transit_endpoints_of_both_families():
    from agent.compiler.ir import TransitEndpoint
    from agent.dataplane.ebpf.entries import PROTOCOL_NUMBERS
    from tests.support.builders import model_cluster, policy

    to_named = {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": "serve-80-tcp"}]}],
    }
    deny_y = policy("y", "deny", {"podSelector": {}})
    objs = dual_stack([*model_cluster(), policy("x", "named", to_named), deny_y])
    ir = IncrementalCompiler("node-1").rebuild(
        LiveState.from_state(ClusterState.from_objects(parse_object(o) for o in objs))
    )
    planner = EbpfPlanner()
    planner.rebuild(ir, ir.node_ips)
    x_a = planner.state.endpoints["x/a"][0]
    tcp = PROTOCOL_NUMBERS["TCP"]
    assert {(x_a, "198.18.1.12", tcp, 80), (x_a, "2001:2:0:1::c", tcp, 80)} <= planner.state.named
    # A transit endpoint (a pod of node-2 this node DNATs to): both its addresses, and
    # both of its own node's.
    transit = TransitEndpoint(
        "y/c",
        (ip_address("198.18.2.13"), ip_address("2001:2:0:2::d")),
        ir.endpoints["y/b"].ingress,
        None,
        node_ips=(ip_address("198.18.0.2"), ip_address("2001:2::2")),
    )
    with_transit = dataclasses.replace(ir, transit={"y/c": transit})
    planner.update(with_transit, diff_ir(ir, with_transit))
    number = planner.endpoint_ids.by_thing["y/c"]
    assert {"198.18.2.13", "2001:2:0:2::d"} <= set(planner.state.transit)
    assert {(number, "198.18.0.2"), (number, "2001:2::2")} <= planner.state.homes
