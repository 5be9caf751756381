"""Random changes to a cluster's raw objects (relabels, pods and policies coming and
going, namespace labels and audit mode; Services and EndpointSlices in `service_ops`),
shared by the incremental compiler's and the eBPF planner's property tests."""

from __future__ import annotations

import copy

from hypothesis import strategies as st

from tests.support.builders import policy
from tests.support.strategies import (
    NAMESPACES,
    endpoint_spec,
    labels,
    pod_dict,
    policy_spec,
    service_args,
    service_dict,
    slice_dict,
)

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
service_ops = st.one_of(
    st.tuples(st.just("put-service"), st.sampled_from(NAMESPACES), st.integers(0, 2), service_args),
    st.tuples(st.just("delete-service"), st.integers(0, 20)),
    st.tuples(
        st.just("put-slice"),
        st.sampled_from(NAMESPACES),
        st.integers(0, 2),
        st.lists(endpoint_spec, max_size=4),
    ),
    st.tuples(st.just("delete-slice"), st.integers(0, 20)),
    st.tuples(st.just("host-network"), st.integers(0, 20)),
    # A node's second address, on its Node object or as a pod's hostIP: the addresses
    # of a transit endpoint's own node move.
    st.tuples(st.just("node-address"), st.sampled_from(NODES)),
    st.tuples(st.just("host-ip"), st.integers(0, 20)),
)
SECOND_ADDRESS = {"node-1": "198.18.0.11", "node-2": "198.18.0.12"}


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
    return _mutate_services(objects, op, pods)


def _mutate_services(objects: dict, op: tuple, pods: list[tuple[str, str]]) -> list:
    kind = op[0]
    if kind == "put-service":
        obj = service_dict(op[1], f"s{op[2]}", op[3])
        objects[key(obj)] = obj
        return [key(obj)]
    if kind == "put-slice":
        ns, index, specs = op[1:]
        obj = slice_dict(ns, f"s{index}-a", f"s{index}", [objects[k] for k in pods], specs)
        objects[key(obj)] = obj
        return [key(obj)]
    if kind in ("host-network", "host-ip") and pods:
        k = pods[op[1] % len(pods)]
        objects[k] = copy.deepcopy(objects[k])
        if kind == "host-network":
            objects[k]["spec"]["hostNetwork"] = True
        else:
            objects[k]["status"]["hostIP"] = SECOND_ADDRESS[objects[k]["spec"]["nodeName"]]
        return [k]
    if kind == "node-address":
        k = ("Node", f"/{op[1]}")
        objects[k] = copy.deepcopy(objects[k])
        address = {"type": "InternalIP", "address": SECOND_ADDRESS[op[1]]}
        objects[k]["status"]["addresses"].append(address)
        return [k]
    if kind in ("delete-service", "delete-slice"):
        which = "Service" if kind == "delete-service" else "EndpointSlice"
        found = sorted(k for k in objects if k[0] == which)
        if found:
            k = found[op[1] % len(found)]
            del objects[k]
            return [k]
    return []
