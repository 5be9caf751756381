"""The addresses a change can forbid connections of (agent/compiler/narrowing.py), which
the conntrack cleanup asks the kernel for instead of reading the whole table: on random
clusters and random changes, every connection the old IR admits and the new one does
not has an end among them (a new pod's address is left to `gone`: the agent removes the
entries of addresses whose pod went, agent/model/view.py)."""

from __future__ import annotations

from ipaddress import ip_address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.compiler.compile import compile_node
from agent.compiler.diff import IRDiff, MemberChange, diff_ir
from agent.compiler.evaluate import endpoints_by_ip, node_admits, transit_by_ip
from agent.compiler.narrowing import narrowed_addresses, narrows
from agent.model.parse import parse_object
from agent.model.state import ClusterState
from tests.support.builders import model_cluster, policy
from tests.support.mutations import NODES, key, mutate, ops, service_ops
from tests.support.strategies import clusters, service_clusters

OUTSIDE = ip_address("198.19.200.9")  # an address no pod holds, inside an ipBlock


def ir_of(objects: dict, node: str):
    return compile_node(ClusterState.from_objects(parse_object(o) for o in objects.values()), node)


def pod_addresses(objects: dict) -> set:
    return {
        ip_address(o["status"]["podIP"])
        for k, o in objects.items()
        if k[0] == "Pod" and o.get("status", {}).get("podIP")
    }


def admitted(ir, src, dst, protocol, port, dnat) -> bool:
    return node_admits(
        ir,
        src,
        dst,
        protocol,
        port,
        local=endpoints_by_ip(ir),
        dnat=dnat,
        transit=transit_by_ip(ir),
    )


def check_narrowing(objs: list[dict], batch: list[tuple]) -> None:
    objects = {key(o): o for o in objs}
    before = {node: ir_of(objects, node) for node in NODES}
    # The ends of connections that can exist: addresses of pods from before the change
    # (a new pod's address had none, or had its old pod's, removed as `gone`).
    addresses = pod_addresses(objects) | {OUTSIDE}
    for op in batch:
        mutate(objects, op, [0])
    for node in NODES:
        old, new = before[node], ir_of(objects, node)
        change = diff_ir(old, new)
        touching = narrowed_addresses(old, change)
        if not narrows(change) or touching is None:
            continue  # nothing judged again, or the whole table (node addresses changed)
        for src in addresses:
            for dst in addresses - {src}:
                for protocol, port in (("TCP", 80), ("TCP", 81), ("UDP", 81), ("SCTP", 80)):
                    for dnat in (False, True):
                        if admitted(old, src, dst, protocol, port, dnat) and not admitted(
                            new, src, dst, protocol, port, dnat
                        ):
                            assert src in touching or dst in touching, (node, src, dst, port)


# The random clusters rarely make a selector match (their labels are drawn apart from
# their selectors); on the 3x3 model with selectors on its own labels, peers leave and
# join sets with almost every relabel.
model_selector = st.one_of(
    st.just({}),
    st.builds(lambda v: {"matchLabels": {"pod": v}}, st.sampled_from("abc")),
)
model_peer = st.one_of(
    st.builds(lambda s: {"podSelector": s}, model_selector),
    st.builds(lambda v: {"namespaceSelector": {"matchLabels": {"ns": v}}}, st.sampled_from("xyz")),
    st.builds(
        lambda v, s: {"namespaceSelector": {"matchLabels": {"ns": v}}, "podSelector": s},
        st.sampled_from("xyz"),
        model_selector,
    ),
)
model_port = st.sampled_from(
    [{"port": 80}, {"port": 81, "protocol": "UDP"}, {"port": "serve-80-tcp"}]
)
model_rule = st.builds(
    lambda peers, ports: {"peers": peers, "ports": ports},
    st.lists(model_peer, min_size=1, max_size=2),
    st.lists(model_port, max_size=1),
)


def model_spec(selector, ingress, egress) -> dict:
    spec: dict = {"podSelector": selector, "policyTypes": []}
    for direction, peers_key, rules in (("Ingress", "from", ingress), ("Egress", "to", egress)):
        if rules is not None:
            spec["policyTypes"].append(direction)
            spec[direction.lower()] = [
                {peers_key: r["peers"], **({"ports": r["ports"]} if r["ports"] else {})}
                for r in rules
            ]
    return spec


model_policy = st.builds(
    model_spec,
    model_selector,
    st.one_of(st.none(), st.lists(model_rule, max_size=2)),
    st.one_of(st.none(), st.lists(model_rule, max_size=2)),
)
model_ops = st.one_of(
    st.tuples(
        st.just("relabel"),
        st.integers(0, 8),
        st.builds(lambda v: {"pod": v}, st.sampled_from("abc")),
    ),
    st.tuples(
        st.just("namespace-labels"),
        st.sampled_from("xyz"),
        st.builds(lambda v: {"ns": v}, st.sampled_from("xyz")),
    ),
    st.tuples(st.just("put-policy"), st.sampled_from("xyz"), st.integers(0, 2), model_policy),
    st.tuples(st.just("delete-policy"), st.integers(0, 3)),
    st.tuples(st.just("delete-pod"), st.integers(0, 8)),
)


@st.composite
def model_clusters(draw: st.DrawFn) -> list[dict]:
    policies = draw(
        st.lists(st.tuples(st.sampled_from("xyz"), model_policy), min_size=1, max_size=3)
    )
    return [*model_cluster(), *(policy(ns, f"p{i}", spec) for i, (ns, spec) in enumerate(policies))]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_clusters(), st.lists(model_ops, min_size=1, max_size=3))
def test_on_the_model_every_forbidden_connection_has_an_end_among_them(objs, batch):
    check_narrowing(objs, batch)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.lists(ops, min_size=1, max_size=3))
def test_every_forbidden_connection_has_an_end_among_the_narrowed_addresses(objs, batch):
    check_narrowing(objs, batch)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(service_clusters(), st.lists(st.one_of(ops, service_ops), min_size=1, max_size=3))
def test_with_services_every_forbidden_connection_has_an_end_among_them(objs, batch):
    check_narrowing(objs, batch)


def test_a_removed_named_port_member_gives_its_address_and_node_addresses_give_all():
    a = ip_address("198.18.1.10")
    change = IRDiff(members={"n": MemberChange(frozenset(), frozenset({(a, "TCP", 80)}))})
    old = compile_node(ClusterState.from_objects([]), "node-1")
    assert narrowed_addresses(old, change) == {a}
    assert narrowed_addresses(old, IRDiff(node_ips=(a,))) is None
