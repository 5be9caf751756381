"""Random changes to a cluster's raw objects (relabels, pods and policies coming and
going, namespace labels and audit mode), shared by the incremental compiler's and the
eBPF planner's property tests."""

from __future__ import annotations

import copy

from hypothesis import strategies as st

from tests.support.builders import policy
from tests.support.strategies import NAMESPACES, labels, pod_dict, policy_spec

NODES = ("node-1", "node-2")

ops = st.one_of(
    st.tuples(st.just("relabel"), st.integers(0, 20), labels),
    st.tuples(st.just("delete-pod"), st.integers(0, 20)),
    st.tuples(
        st.just("add-pod"),
        st.sampled_from(NAMESPACES),
        st.integers(0, 3),
        labels,
        st.sampled_from(NODES),
        st.sampled_from([None, 80, 81]),
    ),
    st.tuples(st.just("namespace-labels"), st.sampled_from(NAMESPACES), labels),
    st.tuples(st.just("namespace-audit"), st.sampled_from(NAMESPACES), st.booleans()),
    st.tuples(st.just("put-policy"), st.sampled_from(NAMESPACES), st.integers(0, 3), policy_spec),
    st.tuples(st.just("delete-policy"), st.integers(0, 20)),
)


def key(obj: dict) -> tuple[str, str]:
    meta = obj["metadata"]
    return obj["kind"], f"{meta.get('namespace', '')}/{meta['name']}"


def mutate(objects: dict, op: tuple, counter: list[int]) -> list[tuple[str, str]]:
    """Apply `op` to the raw objects; returns the keys it touched."""
    pods = sorted(k for k in objects if k[0] == "Pod")
    policies = sorted(k for k in objects if k[0] == "NetworkPolicy")
    kind = op[0]
    if kind == "relabel" and pods:
        k = pods[op[1] % len(pods)]
        objects[k] = copy.deepcopy(objects[k])
        objects[k]["metadata"]["labels"] = dict(op[2])
        return [k]
    if kind == "delete-pod" and pods:
        k = pods[op[1] % len(pods)]
        del objects[k]
        return [k]
    if kind == "add-pod":
        counter[0] += 1
        ns, _, pod_labels, node, http = op[1:]
        subnet = 1 if node == "node-1" else 2
        obj = pod_dict(
            ns, f"n{counter[0]}", f"198.18.{subnet}.{100 + counter[0]}", pod_labels, node, http
        )
        objects[key(obj)] = obj
        return [key(obj)]
    if kind == "namespace-labels":
        k = ("Namespace", f"/{op[1]}")
        objects[k] = copy.deepcopy(objects[k])
        objects[k]["metadata"]["labels"] = dict(op[2])
        return [k]
    if kind == "namespace-audit":
        k = ("Namespace", f"/{op[1]}")
        objects[k] = copy.deepcopy(objects[k])
        mode = {"picket.io/enforcement": "audit"} if op[2] else {}
        objects[k]["metadata"]["annotations"] = mode
        return [k]
    if kind == "put-policy":
        obj = policy(op[1], f"q{op[2]}", op[3])
        objects[key(obj)] = obj
        return [key(obj)]
    if kind == "delete-policy" and policies:
        k = policies[op[1] % len(policies)]
        del objects[k]
        return [k]
    return []
