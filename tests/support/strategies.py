"""Hypothesis strategies for random clusters and policies over the 3x3 model."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.support.builders import (
    NODE_IPS,
    endpoint,
    endpoint_slice,
    namespace,
    node,
    policy,
    service,
)

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
LABEL_KEYS = ("app", "tier")
LABEL_VALUES = ("web", "db", "")

labels = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=2)

requirement = st.one_of(
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(LABEL_KEYS),
            "operator": st.sampled_from(["In", "NotIn"]),
            "values": st.lists(st.sampled_from(LABEL_VALUES), min_size=1, max_size=2, unique=True),
        }
    ),
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(LABEL_KEYS),
            "operator": st.sampled_from(["Exists", "DoesNotExist"]),
        }
    ),
)
selector = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": st.dictionaries(
            st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=1
        ),
        "matchExpressions": st.lists(requirement, max_size=2),
    },
)
ip_block = st.sampled_from(
    [
        {"cidr": "198.18.1.0/24"},
        {"cidr": "198.18.0.0/16", "except": ["198.18.2.0/24"]},
        {"cidr": "198.18.1.0/24", "except": ["198.18.1.0/28", "198.18.1.16/28"]},
        {"cidr": "198.19.200.0/24", "except": ["198.19.200.7/32"]},
        {"cidr": "0.0.0.0/0", "except": ["198.18.0.0/15"]},
        {"cidr": "198.18.0.0/30"},
    ]
)
peer = st.one_of(
    st.fixed_dictionaries({"podSelector": selector}),
    st.fixed_dictionaries({"namespaceSelector": selector}),
    st.fixed_dictionaries({"namespaceSelector": selector, "podSelector": selector}),
    st.fixed_dictionaries({"ipBlock": ip_block}),
)
port = st.one_of(
    st.fixed_dictionaries(
        {"port": st.sampled_from([80, 81])}, optional={"protocol": st.sampled_from(["TCP", "UDP"])}
    ),
    st.fixed_dictionaries({"port": st.just(80), "endPort": st.just(81)}),
    st.fixed_dictionaries({"protocol": st.sampled_from(["TCP", "UDP"])}),
    st.fixed_dictionaries(
        {"port": st.sampled_from(["http", "serve-80-tcp", "serve-81-udp"])},
        optional={"protocol": st.sampled_from(["TCP", "UDP"])},
    ),
)


def rule(peers_key: str) -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {}, optional={peers_key: st.lists(peer, max_size=2), "ports": st.lists(port, max_size=2)}
    )


policy_spec = st.fixed_dictionaries(
    {"podSelector": selector},
    optional={
        "policyTypes": st.sampled_from([[], ["Ingress"], ["Egress"], ["Ingress", "Egress"]]),
        "ingress": st.lists(rule("from"), max_size=2),
        "egress": st.lists(rule("to"), max_size=2),
    },
)


def pod_dict(
    ns: str, name: str, ip: str, pod_labels: dict, where: str, http_port: int | None
) -> dict:
    ports = [
        {"containerPort": n, "protocol": p, "name": f"serve-{n}-{p.lower()}"}
        for n in (80, 81)
        for p in ("TCP", "UDP")
    ]
    if http_port:
        ports.append({"containerPort": http_port + 1000, "name": "http"})
        ports[0 if http_port == 80 else 2]["name"] = "web"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": pod_labels},
        "spec": {"nodeName": where, "containers": [{"name": "c", "image": "i", "ports": ports}]},
        "status": {"podIP": ip, "hostIP": NODE_IPS[where], "phase": "Running"},
    }


@st.composite
def clusters(draw: st.DrawFn) -> list[dict]:
    """Namespaces and pods of the 3x3 model with random labels, named ports that
    resolve differently per pod, and 0-4 random policies."""
    objs = [node("node-1"), node("node-2")]
    for k, ns in enumerate(NAMESPACES):
        objs.append(namespace(ns, **draw(labels)))
        for j, name in enumerate(PODS):
            where = draw(st.sampled_from(["node-1", "node-2"]))
            ip = f"198.18.{1 if where == 'node-1' else 2}.{10 * k + j + 1}"
            objs.append(
                pod_dict(ns, name, ip, draw(labels), where, draw(st.sampled_from([None, 80, 81])))
            )
    for i in range(draw(st.integers(0, 4))):
        objs.append(policy(draw(st.sampled_from(NAMESPACES)), f"p{i}", draw(policy_spec)))
    return objs


# --- Services and their EndpointSlices over those pods ---------------------------------

service_args = st.tuples(
    st.sampled_from(["NodePort", "NodePort", "LoadBalancer", "ClusterIP", "ExternalName"]),
    st.sampled_from([None, "Cluster", "Local"]),
    st.sampled_from([None, ["198.19.100.1"]]),  # externalIPs
)
# (pod index, how the endpoint names it, ready, serving); an index past the pods is an
# address no pod holds.
endpoint_spec = st.tuples(
    st.integers(0, 12),
    st.sampled_from(["address", "targetRef", "both"]),
    st.sampled_from([None, True, False]),
    st.sampled_from([None, True, False]),
)


def service_dict(ns: str, name: str, args: tuple) -> dict:
    service_type, policy_value, external_ips = args
    return service(ns, name, service_type, policy_value, external_ips=external_ips)


def slice_dict(ns: str, name: str, service_name: str, pods: list[dict], specs: list) -> dict:
    """An EndpointSlice of `service_name` whose endpoints name `pods` by `specs`."""
    endpoints = []
    for index, how, ready, serving in specs:
        if index >= len(pods):
            endpoints.append(endpoint("198.19.100.9", None, ready, serving))
            continue
        meta, status = pods[index]["metadata"], pods[index]["status"]
        address = status["podIP"] if how != "targetRef" else "198.19.100.9"
        pod_ref = f"{meta['namespace']}/{meta['name']}" if how != "address" else None
        endpoints.append(endpoint(address, pod_ref, ready, serving))
    return endpoint_slice(ns, name, service_name, endpoints or None)


@st.composite
def service_clusters(draw: st.DrawFn) -> list[dict]:
    """A cluster of `clusters()`, with 1-3 Services of random type and traffic policy
    and their EndpointSlices naming random pods (some not ready, some by targetRef only,
    some pointing at no pod), an ingress policy in one namespace, and now and then a
    slice of a Service that is not there."""
    objs = draw(clusters())
    pods = [o for o in objs if o["kind"] == "Pod"]
    for i in range(draw(st.integers(1, 3))):
        ns = draw(st.sampled_from(NAMESPACES))
        objs.append(service_dict(ns, f"s{i}", draw(service_args)))
        for k in range(draw(st.integers(1, 2))):
            specs = draw(st.lists(endpoint_spec, min_size=1, max_size=4))
            objs.append(slice_dict(ns, f"s{i}-{k}", f"s{i}", pods, specs))
    if draw(st.booleans()):
        specs = draw(st.lists(endpoint_spec, max_size=2))
        objs.append(slice_dict("x", "orphan", "missing", pods, specs))
    # Backends are transit endpoints only when isolated for ingress: isolate some.
    spec = {**draw(policy_spec), "policyTypes": ["Ingress"]}
    objs.append(policy(draw(st.sampled_from(NAMESPACES)), "isolate", spec))
    return objs
