"""The incremental compiler against the full one: on random clusters and random
sequences of changes (relabels, pods coming and going, namespace labels and audit mode,
policies added, changed and deleted; Services and EndpointSlices too, which move the
transit endpoints), update() gives exactly the IR compile_node gives."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.compiler.compile import compile_node
from agent.compiler.incremental import IncrementalCompiler
from agent.model.live import LiveState
from agent.model.parse import parse_object
from agent.model.state import ClusterState
from tests.support.mutations import NODES, key, mutate, ops, service_ops
from tests.support.strategies import clusters, service_clusters


def full_ir(objects: dict, node: str):
    return compile_node(ClusterState.from_objects(parse_object(o) for o in objects.values()), node)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.lists(st.lists(ops, min_size=1, max_size=3), max_size=6))
def test_update_equals_full_compile(objs, batches):
    check_updates(objs, batches)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    service_clusters(),
    st.lists(st.lists(st.one_of(ops, service_ops), min_size=1, max_size=3), max_size=6),
)
def test_update_equals_full_compile_with_services(objs, batches):
    check_updates(objs, batches)


def check_updates(objs: list[dict], batches: list[list[tuple]]) -> None:
    objects = {key(o): o for o in objs}
    live = LiveState.from_state(ClusterState.from_objects(parse_object(o) for o in objs))
    compilers = {n: IncrementalCompiler(n) for n in NODES}
    for node, compiler in compilers.items():
        assert compiler.rebuild(live) == full_ir(objects, node)
    counter = [0]
    for batch in batches:
        for op in batch:
            for k in mutate(objects, op, counter):
                if k in objects:
                    live.put(parse_object(objects[k]))
                else:
                    live.remove(k[0], k[1].lstrip("/"))
        changes = live.take_changes()
        for node, compiler in compilers.items():
            live.changes = copy.copy(changes)
            live.changes.pods = list(changes.pods)
            assert compiler.update(live) == full_ir(objects, node), (node, batch)
