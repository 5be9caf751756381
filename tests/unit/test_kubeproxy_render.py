"""The lab kube-proxy's pure core, table by table: chain names against kube-proxy's
own test data, what Services and slices become, which endpoints a node uses, and the
rules that carry the semantics (masquerade, balancing, reject, drop)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.kubeproxy import names
from lab.kubeproxy.objects import Endpoint, ServicePort, service_ports, slice_endpoints
from lab.kubeproxy.render import NodeContext, merged_programmed, render, restore_text
from lab.kubeproxy.topology import categorize

NODE = NodeContext("node-1", "198.18.1.0/24")


# Expected names from kubernetes pkg/proxy/iptables proxier_test.go (ns1/svc1:p80 ...).
@pytest.mark.parametrize(
    ("port_name", "endpoint", "chain"),
    [
        ("ns1/svc1:p80", None, "KUBE-SVC-XPGD46QRK7WJZT7O"),
        ("ns2/svc2:p80", None, "KUBE-SVC-GNZBNJ2PO5MGZ6GT"),
        ("ns3/svc3:p80", None, "KUBE-SVC-X27LE4BHSL4DOUIK"),
        ("ns4/svc4:p80", None, "KUBE-SVC-4SW47YFZTEDKD3PK"),
        ("ns1/svc1:p80", "10.180.0.1:80", "KUBE-SEP-SXIVWICOYRO3J4NJ"),
        ("ns2/svc2:p80", "10.180.0.2:80", "KUBE-SEP-RS4RBKLTHTF2IUXJ"),
        ("ns3/svc3:p80", "10.180.0.3:80", "KUBE-SEP-OYPFS5VJICHGATKP"),
        ("ns4/svc4:p80", "10.180.0.4:80", "KUBE-SEP-UKSFD7AGPMPPLUHC"),
        ("ns4/svc4:p80", "10.180.0.5:80", "KUBE-SEP-C6EBXVWJJZMIWKLZ"),
    ],
)
def test_chain_names_are_kube_proxys(port_name, endpoint, chain):
    if endpoint is None:
        assert names.cluster_policy_chain(port_name, "TCP") == chain
    else:
        assert names.endpoint_chain(port_name, "TCP", endpoint) == chain


def test_the_other_chains_share_the_service_ports_hash():
    svc = names.cluster_policy_chain("ns2/svc2:p80", "TCP")
    assert names.local_policy_chain("ns2/svc2:p80", "tcp") == "KUBE-SVL-GNZBNJ2PO5MGZ6GT"
    assert names.external_chain("ns2/svc2:p80", "TCP") == "KUBE-EXT-GNZBNJ2PO5MGZ6GT"
    assert names.cluster_policy_chain("ns2/svc2:p80", "UDP") != svc  # protocol is hashed
    assert len(svc) <= 28  # iptables' chain name limit


@pytest.mark.parametrize(
    ("n", "text"), [(1, "1.0000000000"), (2, "0.5000000000"), (3, "0.3333333333")]
)
def test_probability_is_formatted_as_kube_proxy_does(n, text):
    assert names.probability(n) == text


def svc(name: str, spec: dict, namespace: str = "ns") -> dict:
    return {"kind": "Service", "metadata": {"namespace": namespace, "name": name}, "spec": spec}


@pytest.mark.parametrize(
    "spec",
    [
        {"ports": [{"port": 80}]},  # not allocated yet
        {"clusterIP": "", "ports": [{"port": 80}]},
        {"clusterIP": "None", "ports": [{"port": 80}]},  # headless
        {"type": "ExternalName", "externalName": "example.com"},
        {"clusterIP": "2001:2::1", "ports": [{"port": 80}]},  # another family
    ],
    ids=["no-cluster-ip", "empty", "headless", "external-name", "ipv6"],
)
def test_services_kube_proxy_skips_silently(spec):
    assert service_ports([svc("s", spec)]) == ([], [])


@pytest.mark.parametrize(
    ("port", "problem"),
    [
        ({"port": 80, "protocol": "ICMP"}, "spec.ports[0].protocol: Unsupported value: 'ICMP'"),
        ({"port": 0}, "spec.ports[0].port: Invalid value: 0"),
        ({"port": "80"}, "spec.ports[0].port: Invalid value: '80'"),
        ({"port": 80, "nodePort": 70000}, "spec.ports[0].nodePort: Invalid value: 70000"),
    ],
)
def test_a_bad_port_is_reported_by_object_and_field(port, problem):
    ports, problems = service_ports([svc("s", {"clusterIP": "198.19.240.1", "ports": [port]})])
    assert (ports, problems) == ([], [f"Service ns/s: {problem}"])


def test_service_port_defaults():
    (port,), _ = service_ports(
        [svc("web", {"clusterIP": "198.19.240.1", "ports": [{"port": 80, "nodePort": 0}]})]
    )
    assert port == ServicePort("ns", "web", "", "TCP", "198.19.240.1", 80, None, False, False)
    assert port.name_string == "ns/web"


def es(endpoints: list, ports: list | None = None, name: str = "s-1", **extra) -> dict:
    meta = {"namespace": "ns", "name": name, "labels": {"kubernetes.io/service-name": "s"}}
    ports = [{"name": "", "port": 80, "protocol": "TCP"}] if ports is None else ports
    return {
        "metadata": meta,
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
        **extra,
    }


@pytest.mark.parametrize(
    ("conditions", "ready", "serving", "terminating"),
    [
        (None, True, True, False),  # unset conditions: ready
        ({"ready": False}, False, True, False),
        ({"ready": False, "serving": True, "terminating": True}, False, True, True),
        ({"ready": False, "serving": False, "terminating": True}, False, False, True),
    ],
)
def test_endpoint_conditions(conditions, ready, serving, terminating):
    entry = {"addresses": ["198.18.1.2"], "nodeName": "node-1"}
    if conditions is not None:
        entry["conditions"] = conditions
    (found,) = slice_endpoints([es([entry])], "node-1")[("ns", "s", "", "TCP")]
    assert (found.ready, found.serving, found.terminating) == (ready, serving, terminating)


def test_slices_merge_deduplicate_and_sort_as_text():
    a = {"addresses": ["198.18.1.2"], "nodeName": "node-2"}
    b = {"addresses": ["198.18.1.10", "198.18.1.99"], "nodeName": "node-1"}
    c = {"addresses": ["198.18.1.2"], "nodeName": "node-1"}
    found = slice_endpoints([es([a, b], name="s-1"), es([c], name="s-2")], "node-1")
    eps = found[("ns", "s", "", "TCP")]
    assert [e.address for e in eps] == ["198.18.1.10:80", "198.18.1.2:80"]  # first address only
    assert eps[1].node == "node-1"  # the local copy of a duplicate wins


@pytest.mark.parametrize(
    "bad",
    [
        es([{"addresses": ["198.18.1.2"]}], addressType="IPv6"),
        {**es([{"addresses": ["198.18.1.2"]}]), "metadata": {"namespace": "ns", "name": "x"}},
        es([{"addresses": ["198.18.1.2"]}], ports=[{"port": 80}]),  # a port without a name
        es([{"addresses": ["198.18.1.2"]}], ports=[{"name": "", "port": 0}]),
    ],
    ids=["ipv6", "no-service-label", "nameless-port", "no-port-number"],
)
def test_slices_kube_proxy_ignores(bad):
    assert not any(slice_endpoints([bad], "node-1").values())


def ep(ip: str, node: str = "node-1", ready: bool = True, serving: bool = True, term: bool = False):
    return Endpoint(ip, 80, node, ready, serving, term)


def port(external_local: bool = False, internal_local: bool = False, node_port: int | None = None):
    return ServicePort(
        "ns", "s", "", "TCP", "198.19.240.1", 80, node_port, external_local, internal_local
    )


LOCAL_READY, REMOTE_READY = ep("198.18.1.2"), ep("198.18.2.2", "node-2")
LOCAL_TERMINATING = ep("198.18.1.3", ready=False, term=True)
REMOTE_GONE = ep("198.18.2.3", "node-2", ready=False, serving=False, term=True)


@pytest.mark.parametrize(
    ("service_port", "endpoints", "cluster", "local", "has_any"),
    [
        (port(), [LOCAL_READY, REMOTE_READY], [LOCAL_READY, REMOTE_READY], [], True),
        (port(), [LOCAL_TERMINATING, REMOTE_READY], [REMOTE_READY], [], True),
        (port(), [LOCAL_TERMINATING, REMOTE_GONE], [LOCAL_TERMINATING], [], True),
        (port(), [REMOTE_GONE], [], [], False),
        (port(internal_local=True), [REMOTE_READY], [], [], True),
        (port(internal_local=True), [LOCAL_READY, REMOTE_READY], [], [LOCAL_READY], True),
        (
            port(external_local=True, node_port=30080),
            [LOCAL_READY, REMOTE_READY],
            [LOCAL_READY, REMOTE_READY],
            [LOCAL_READY],
            True,
        ),
        (
            port(external_local=True, node_port=30080),
            [LOCAL_TERMINATING, REMOTE_READY],
            [REMOTE_READY],
            [LOCAL_TERMINATING],
            True,
        ),
        # externalTrafficPolicy means nothing without a node port.
        (
            port(external_local=True),
            [LOCAL_READY, REMOTE_READY],
            [LOCAL_READY, REMOTE_READY],
            [],
            True,
        ),
    ],
)
def test_categorize(service_port, endpoints, cluster, local, has_any):
    found = categorize(service_port, endpoints, "node-1")
    assert (list(found.cluster), list(found.local), found.has_any) == (cluster, local, has_any)
    merged = {e.address for e in (*cluster, *local)}
    assert {e.address for e in found.reachable} == merged


def rules_for(service_port: ServicePort, endpoints: list[Endpoint]) -> tuple[dict, dict]:
    r = render([service_port], {service_port.key: endpoints}, NODE)
    return r.filter, r.nat


def test_balancing_is_even_and_the_last_endpoint_unconditional():
    endpoints = [ep(f"198.18.1.{i}") for i in range(2, 6)]
    _, nat = rules_for(port(), endpoints)
    jumps = nat[names.cluster_policy_chain("ns/s", "TCP")][1:]
    assert [j.partition("--probability ")[2].split()[0] for j in jumps[:-1]] == [
        "0.2500000000",
        "0.3333333333",
        "0.5000000000",
    ]
    assert "statistic" not in jumps[-1]


@given(st.integers(min_value=1, max_value=60))
def test_each_endpoint_is_chosen_with_probability_one_in_n(n):
    """The rendered chain, read as the kernel runs it: rule i is taken with its
    probability if no rule before it was; every endpoint gets 1/n."""
    endpoints = [ep(f"198.18.1.{i}") for i in range(2, 2 + n)]
    _, nat = rules_for(port(), endpoints)
    untaken, chances = 1.0, []
    for rule in nat[names.cluster_policy_chain("ns/s", "TCP")][1:]:
        p = float(rule.partition("--probability ")[2].split()[0]) if "statistic" in rule else 1.0
        chances.append(untaken * p)
        untaken *= 1 - p
    assert len(chances) == n and untaken == 0
    assert all(abs(c - 1 / n) < 1e-9 for c in chances)


def test_no_endpoints_rejects_in_filter_and_writes_no_nat_chains():
    service_port = port(node_port=30080)
    filt, nat = rules_for(service_port, [])
    assert filt["KUBE-SERVICES"] == [
        '-m comment --comment "ns/s has no endpoints" -m tcp -p tcp -d 198.19.240.1 '
        "--dport 80 -j REJECT"
    ]
    assert filt["KUBE-EXTERNAL-SERVICES"][0].endswith("--dport 30080 -j REJECT")
    assert not any(names.is_service_chain(c) for c in nat)
    assert nat["KUBE-NODEPORTS"] == []


def test_node_port_cluster_policy_masquerades_every_node_port_connection():
    _, nat = rules_for(port(node_port=30080), [REMOTE_READY])
    ext = nat[names.external_chain("ns/s", "TCP")]
    assert ext[0].endswith("-j KUBE-MARK-MASQ") and "-s" not in ext[0]
    assert ext[-1] == f"-j {names.cluster_policy_chain('ns/s', 'TCP')}"


def test_node_port_local_policy_keeps_the_client_address():
    filt, nat = rules_for(port(external_local=True, node_port=30080), [LOCAL_READY, REMOTE_READY])
    ext = nat[names.external_chain("ns/s", "TCP")]
    svl = names.local_policy_chain("ns/s", "TCP")
    assert ext[-1] == f"-j {svl}"  # outside clients: this node's endpoints, no mark
    assert [r.split(" -j ")[1] for r in ext[:-1]] == [
        names.cluster_policy_chain("ns/s", "TCP"),  # our pods
        "KUBE-MARK-MASQ",  # the node itself
        names.cluster_policy_chain("ns/s", "TCP"),
    ]
    sep = names.endpoint_chain("ns/s", "TCP", "198.18.1.2:80")
    assert nat[svl] == [f'-m comment --comment "ns/s -> 198.18.1.2:80" -j {sep}']
    assert filt["KUBE-EXTERNAL-SERVICES"] == []


def test_node_port_local_policy_drops_on_a_node_without_local_endpoints():
    filt, nat = rules_for(port(external_local=True, node_port=30080), [REMOTE_READY])
    assert filt["KUBE-EXTERNAL-SERVICES"] == [
        '-m comment --comment "ns/s has no local endpoints" -m addrtype --dst-type LOCAL '
        "-m tcp -p tcp --dport 30080 -j DROP"
    ]
    assert not nat[names.external_chain("ns/s", "TCP")][-1].startswith("-j ")


def test_cluster_ip_masquerades_only_traffic_not_from_the_nodes_pods():
    _, nat = rules_for(port(), [REMOTE_READY])
    first = nat[names.cluster_policy_chain("ns/s", "TCP")][0]
    assert first.endswith("! -s 198.18.1.0/24 -j KUBE-MARK-MASQ")


def test_an_endpoint_reaching_itself_is_masqueraded_before_dnat():
    _, nat = rules_for(port(), [LOCAL_READY])
    sep = nat[names.endpoint_chain("ns/s", "TCP", "198.18.1.2:80")]
    assert sep == [
        "-m comment --comment ns/s -s 198.18.1.2 -j KUBE-MARK-MASQ",
        "-m comment --comment ns/s -m tcp -p tcp -j DNAT --to-destination 198.18.1.2:80",
    ]


def test_the_node_port_jump_stays_last_in_kube_services():
    two = [port(), ServicePort("ns", "t", "", "UDP", "198.19.240.2", 53, None, False, False)]
    nat = render(two, {p.key: [LOCAL_READY] for p in two}, NODE).nat
    assert "-j KUBE-NODEPORTS" in nat["KUBE-SERVICES"][-1]
    assert len(nat["KUBE-SERVICES"]) == 3


def test_tcp_be_liberal_leaves_out_the_invalid_drop():
    liberal = render([], {}, NodeContext("node-1", "198.18.1.0/24", tcp_be_liberal=True))
    assert not any("INVALID" in r for r in liberal.filter["KUBE-FORWARD"])
    assert any("INVALID" in r for r in render([], {}, NODE).filter["KUBE-FORWARD"])


def test_restore_text_empties_then_deletes_stale_chains():
    text = restore_text(render([], {}, NODE), ["KUBE-SVC-OLD", "KUBE-SEP-OLD"])
    nat = text.split("*nat\n")[1]
    assert ":KUBE-SEP-OLD - [0:0]\n:KUBE-SVC-OLD - [0:0]\n" in nat
    assert nat.endswith("-X KUBE-SEP-OLD\n-X KUBE-SVC-OLD\nCOMMIT\n")
    assert "-X" not in text.split("*nat\n")[0]  # the filter table's chains are fixed


# --- dual-stack: one proxier per family ------------------------------------------------

DUAL = svc(
    "web",
    {
        "clusterIP": "198.19.240.5",
        "clusterIPs": ["198.19.240.5", "2001:2:0:ff00::5"],
        "ipFamilies": ["IPv4", "IPv6"],
        "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}],
        "type": "NodePort",
    },
)


def dual_slice(family: int, address: str) -> dict:
    return {
        "metadata": {
            "namespace": "ns",
            "name": f"web-{family}",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": f"IPv{family}",
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [address], "nodeName": "node-2"}],
    }


SLICES = [dual_slice(4, "198.18.2.7"), dual_slice(6, "2001:2:0:2::7")]


def test_each_family_proxies_its_own_cluster_ip_and_endpoints():
    (v4,), _ = service_ports([DUAL], 4)
    (v6,), _ = service_ports([DUAL], 6)
    assert (v4.cluster_ip, v6.cluster_ip) == ("198.19.240.5", "2001:2:0:ff00::5")
    ends4 = slice_endpoints(SLICES, "node-1", 4)[v4.key]
    ends6 = slice_endpoints(SLICES, "node-1", 6)[v6.key]
    assert [e.address for e in ends4] == ["198.18.2.7:8080"]
    assert [e.address for e in ends6] == ["[2001:2:0:2::7]:8080"]
    # A single-stack IPv4 Service has nothing for the IPv6 proxier.
    single = svc("old", {"clusterIP": "198.19.240.6", "ports": [{"port": 80}]})
    assert service_ports([single], 6) == ([], [])


def test_the_ipv6_rules_name_ipv6_addresses_and_have_no_localhost_exception():
    (v6,), _ = service_ports([DUAL], 6)
    node6 = NodeContext("node-1", "2001:2:0:1::/64")
    rules = render([v6], slice_endpoints(SLICES, "node-1", 6), node6)
    text = restore_text(rules)
    assert "-d 2001:2:0:ff00::5 --dport 80" in text
    assert "! -s 2001:2:0:1::/64" in text
    assert "DNAT --to-destination [2001:2:0:2::7]:8080" in text
    assert "127.0.0.0/8" not in text and "-j KUBE-NODEPORTS" in text
    assert "198." not in text  # nothing of the other family
    (v4,), _ = service_ports([DUAL], 4)
    text4 = restore_text(render([v4], slice_endpoints(SLICES, "node-1", 4), NODE))
    assert "! -d 127.0.0.0/8 -j KUBE-NODEPORTS" in text4 and "2001:" not in text4


def test_the_status_merges_both_families():
    (v4,), _ = service_ports([DUAL], 4)
    (v6,), _ = service_ports([DUAL], 6)
    node6 = NodeContext("node-1", "2001:2:0:1::/64")
    renders = [
        render([v4], slice_endpoints(SLICES, "node-1", 4), NODE),
        render([v6], slice_endpoints(SLICES, "node-1", 6), node6),
    ]
    merged = merged_programmed(renders)["ns/web"]
    assert merged["clusterIP"] == "198.19.240.5"
    assert merged["clusterIPs"] == ["198.19.240.5", "2001:2:0:ff00::5"]
    assert merged["ports"]["80/TCP"]["endpoints"] == ["198.18.2.7:8080", "[2001:2:0:2::7]:8080"]
    assert renders[0].programmed["ns/web"]["clusterIPs"] == ["198.19.240.5"]  # not changed
