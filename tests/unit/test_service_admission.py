"""Services through the lab API server's verbs, without the network: the defaults, the
ClusterIP and NodePort allocation and the 422s a real kube-apiserver gives, and an
allocator that always agrees with the store."""

from __future__ import annotations

import copy
from ipaddress import IPv4Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from lab.apiserver import status as st
from lab.apiserver.handlers import Api
from lab.apiserver.resources import BY_PATH
from lab.apiserver.routing import Target
from lab.apiserver.service_registry import ServiceRegistry
from lab.apiserver.store import Store
from lab.config import NODEPORT_RANGE, SERVICE_CIDR, SERVICE_CIDR6

NAMESPACES = BY_PATH[("", "v1", "namespaces")]
SERVICES = BY_PATH[("", "v1", "services")]


def api_with(*namespaces: str, strict: bool = True, store: Store | None = None) -> Api:
    api = Api(store or Store(), strict=strict)
    for name in namespaces:
        api.create(Target(NAMESPACES, None, None, None), {"metadata": {"name": name}})
    return api


def service(name: str, **spec: object) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def create(api: Api, name: str, ns: str = "x", **spec: object) -> dict:
    return api.create(Target(SERVICES, ns, None, None), service(name, **spec))


def refused(api: Api, name: str, **spec: object) -> str:
    with pytest.raises(st.ApiError) as info:
        create(api, name, **spec)
    assert info.value.code == 422, info.value.message
    return info.value.message


def update(api: Api, name: str, change: dict, ns: str = "x") -> dict:
    current = copy.deepcopy(api.get(Target(SERVICES, ns, name, None)))
    current["spec"].update(change)
    return api.update(Target(SERVICES, ns, name, None), current)


PORT = [{"port": 80}]


def test_a_clusterip_service_gets_the_defaults_and_an_address():
    got = create(api_with("x"), "web", selector={"app": "web"}, ports=PORT)
    assert got["spec"] == {
        "selector": {"app": "web"},
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
        "type": "ClusterIP",
        "sessionAffinity": "None",
        "internalTrafficPolicy": "Cluster",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        # The first address above the static band (256 addresses of the /20).
        "clusterIP": "198.19.241.1",
        "clusterIPs": ["198.19.241.1"],
    }
    assert got["status"] == {"loadBalancer": {}}


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        (
            {"type": "NodePort", "ports": PORT},
            {"externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster"},
        ),
        (
            {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": PORT},
            {"allocateLoadBalancerNodePorts": True, "healthCheckNodePort": 30087},
        ),
        (
            {"sessionAffinity": "ClientIP", "ports": PORT},
            {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}},
        ),
        (
            {"clusterIP": "None", "selector": {"app": "db"}},
            {"clusterIPs": ["None"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"},
        ),
        # A headless Service without selector may carry slices of both families.
        (
            {"clusterIP": "None"},
            {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"},
        ),
        (
            {"type": "ExternalName", "externalName": "db.example.com"},
            {"type": "ExternalName", "sessionAffinity": "None"},
        ),
        (
            {"ports": [{"port": 80, "targetPort": "http"}]},
            {"ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]},
        ),
    ],
)
def test_defaults(spec, want):
    got = create(api_with("x"), "svc", **spec)["spec"]
    assert {k: got.get(k) for k in want} == want


def test_external_name_and_headless_get_no_address():
    api = api_with("x")
    assert "clusterIP" not in create(api, "ext", type="ExternalName", externalName="a.b")["spec"]
    assert create(api, "hl", clusterIP="None", ports=PORT)["spec"]["clusterIP"] == "None"
    assert api.services.allocator.pools["IPv4"].holders == {}


def test_a_requested_address_is_honoured_if_free_and_in_range():
    api = api_with("x", "kube-system")
    dns = create(api, "kube-dns", "kube-system", clusterIP="198.19.240.10", ports=PORT)
    assert dns["spec"]["clusterIPs"] == ["198.19.240.10"]
    taken = refused(api, "again", clusterIP="198.19.240.10", ports=PORT)
    assert taken == (
        'Service "again" is invalid: spec.clusterIPs: Invalid value: ["198.19.240.10"]: '
        "failed to allocate IP 198.19.240.10: provided IP is already allocated"
    )
    for outside in ("10.96.0.10", "198.19.240.0", "198.19.255.255"):
        message = refused(api, "out", clusterIP=outside, ports=PORT)
        assert f"the provided IP ({outside}) is not in the valid range" in message
        assert "The range of valid IPs is 198.19.240.0/20" in message


def test_an_address_is_released_with_its_service():
    api = api_with("x")
    create(api, "a", clusterIP="198.19.240.20", ports=PORT)
    api.delete(Target(SERVICES, "x", "a", None))
    assert create(api, "b", clusterIP="198.19.240.20", ports=PORT)["spec"]["clusterIP"]


def test_dynamic_addresses_never_repeat_and_skip_requested_ones():
    api = api_with("x")
    create(api, "pinned", clusterIP="198.19.241.2", ports=PORT)
    ips = [create(api, f"s{i}", ports=PORT)["spec"]["clusterIP"] for i in range(3)]
    assert ips == ["198.19.241.1", "198.19.241.3", "198.19.241.4"]


def test_node_ports_are_allocated_per_port_and_shared_across_protocols():
    api = api_with("x")
    ports = [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        {"name": "web", "port": 80, "nodePort": 30080},
    ]
    got = create(api, "np", type="NodePort", ports=ports)["spec"]["ports"]
    # 86 node ports at the low end are kept for requests.
    assert [p["nodePort"] for p in got] == [30086, 30086, 30080]


def test_requested_node_ports():
    api = api_with("x")
    create(api, "a", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
    assert refused(api, "b", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]) == (
        'Service "b" is invalid: spec.ports[0].nodePort: Invalid value: 30080: '
        "provided port is already allocated"
    )
    assert refused(api, "c", type="NodePort", ports=[{"port": 80, "nodePort": 80}]) == (
        'Service "c" is invalid: spec.ports[0].nodePort: Invalid value: 80: provided port is '
        "not in the valid range. The range of valid ports is 30000-32767"
    )


def test_node_ports_go_when_the_type_goes_back_to_clusterip():
    api = api_with("x")
    create(api, "a", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
    back = update(api, "a", {"type": "ClusterIP"})["spec"]
    assert "nodePort" not in back["ports"][0] and "externalTrafficPolicy" not in back
    assert create(api, "b", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])


def test_an_update_keeps_what_was_allocated():
    api = api_with("x")
    first = create(api, "a", type="NodePort", ports=[{"name": "web", "port": 80}])["spec"]
    # The manifest again, as `kubectl replace` sends it: no clusterIP, no nodePort.
    body = service("a", type="NodePort", ports=[{"name": "web", "port": 80}], selector={"a": "b"})
    again = api.update(Target(SERVICES, "x", "a", None), body)["spec"]
    assert again["clusterIP"] == first["clusterIP"]
    assert again["ports"][0]["nodePort"] == first["ports"][0]["nodePort"]


def test_cluster_ip_is_immutable():
    api = api_with("x")
    create(api, "a", ports=PORT)
    with pytest.raises(st.ApiError) as info:
        update(api, "a", {"clusterIP": "198.19.240.99", "clusterIPs": ["198.19.240.99"]})
    assert "spec.clusterIPs[0]: Invalid value: " in info.value.message
    assert info.value.message.endswith("may not change once set")


def test_turning_into_external_name_releases_the_address():
    api = api_with("x")
    ip = create(api, "a", clusterIP="198.19.240.30", ports=PORT)["spec"]["clusterIP"]
    ext = update(api, "a", {"type": "ExternalName", "externalName": "db.example.com"})["spec"]
    assert "clusterIP" not in ext and "ipFamilies" not in ext
    assert create(api, "b", clusterIP=ip, ports=PORT)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({}, "spec.ports: Required value"),
        ({"type": "Bogus", "ports": PORT}, 'spec.type: Unsupported value: "Bogus"'),
        ({"ports": [{"port": 0}]}, "spec.ports[0].port: Invalid value: 0: must be between 1"),
        ({"ports": [{"port": 70000}]}, "spec.ports[0].port: Invalid value: 70000"),
        (
            {"ports": [{"port": 80, "protocol": "ICMP"}]},
            'spec.ports[0].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP"',
        ),
        ({"ports": [{"port": 80}, {"port": 81}]}, "spec.ports[0].name: Required value"),
        (
            {"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]},
            'spec.ports[1].name: Duplicate value: "a"',
        ),
        ({"ports": [{"name": "A_b", "port": 80}]}, 'spec.ports[0].name: Invalid value: "A_b"'),
        (
            {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]},
            "spec.ports[1]: Duplicate value",
        ),
        (
            {"ports": [{"port": 80, "targetPort": 0.5}]},
            "spec.ports[0].targetPort: Invalid value: 0.5",
        ),
        (
            {"ports": [{"port": 80, "targetPort": 99999}]},
            "spec.ports[0].targetPort: Invalid value: 99999",
        ),
        (
            {"ports": [{"port": 80, "targetPort": "http--x"}]},
            'targetPort: Invalid value: "http--x": must not contain consecutive hyphens',
        ),
        (
            {"ports": [{"port": 80, "targetPort": "a-very-long-port-name"}]},
            "must be no more than 15 characters",
        ),
        (
            {"ports": PORT, "selector": {"app": 1}},
            "spec.selector[app]: Invalid value: 1: must be a string",
        ),
        ({"ports": PORT, "selector": ["app"]}, 'spec.selector: Invalid value: ["app"]'),
        ({"ports": PORT, "selector": {"app": "a b"}}, 'spec.selector[app]: Invalid value: "a b"'),
        (
            {"ports": PORT, "sessionAffinity": "Sticky"},
            'spec.sessionAffinity: Unsupported value: "Sticky"',
        ),
        (
            {"ports": PORT, "clusterIP": "not-an-ip"},
            'spec.clusterIPs[0]: Invalid value: "not-an-ip": must be a valid IP address',
        ),
        (
            {"ports": PORT, "clusterIP": "198.19.240.5", "clusterIPs": ["198.19.240.6"]},
            'spec.clusterIPs: Invalid value: ["198.19.240.6"]: first value must match `clusterIP`',
        ),
        (
            {"type": "NodePort", "clusterIP": "None", "ports": PORT},
            "clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort",
        ),
        (
            {"ports": [{"port": 80, "nodePort": 30001}]},
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
        ),
        (
            {"ports": PORT, "externalTrafficPolicy": "Local"},
            'externalTrafficPolicy: Invalid value: "Local": may only be set for externally',
        ),
        (
            {"type": "NodePort", "ports": PORT, "externalTrafficPolicy": "Near"},
            'spec.externalTrafficPolicy: Unsupported value: "Near"',
        ),
        (
            {"ports": PORT, "internalTrafficPolicy": "Near"},
            'spec.internalTrafficPolicy: Unsupported value: "Near"',
        ),
        (
            {"ports": PORT, "ipFamilies": ["IPv6"]},
            'spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster',
        ),
        (
            {"ports": PORT, "ipFamilyPolicy": "RequireDualStack"},
            "this cluster is not configured for dual-stack services",
        ),
        ({"type": "ExternalName"}, "spec.externalName: Required value"),
    ],
)
def test_invalid_services_are_422_naming_the_field(spec, error):
    message = refused(api_with("x"), "bad", **spec)
    assert message.startswith('Service "bad" is invalid: ')
    assert error in message


def test_a_service_name_is_a_dns_label():
    message = refused(api_with("x"), "web.v1", ports=PORT)
    assert 'metadata.name: Invalid value: "web.v1": a DNS-1035 label' in message


def test_all_problems_are_reported_at_once():
    message = refused(api_with("x"), "bad", ports=[{"port": 0, "protocol": "X"}, {"port": 2}])
    for path in ("ports[0].name", "ports[0].port", "ports[0].protocol", "ports[1].name"):
        assert f"spec.{path}:" in message


def test_with_validation_off_what_is_given_is_stored_and_still_allocated():
    api = api_with("x", strict=False)
    odd = create(
        api, "odd", type="NodePort", selector={"a": 1}, ports=[{"port": "http", "protocol": "ICMP"}]
    )
    assert odd["spec"]["selector"] == {"a": 1} and odd["spec"]["ports"][0]["protocol"] == "ICMP"
    assert odd["spec"]["clusterIP"] == "198.19.241.1"
    assert odd["spec"]["ports"][0]["nodePort"] == 30086
    # Two Services on one address is never stored, validation or not.
    refused(api, "twin", clusterIP="198.19.241.1", ports=PORT)


def test_the_allocator_is_rebuilt_from_the_store():
    store = Store()
    first = api_with("x", store=store)
    create(
        first,
        "a",
        clusterIP="198.19.240.40",
        type="NodePort",
        ports=[{"port": 80, "nodePort": 30040}],
    )
    second = Api(store)  # a new registry over the same objects
    assert "already allocated" in refused(second, "b", clusterIP="198.19.240.40", ports=PORT)
    refused(second, "c", type="NodePort", ports=[{"port": 80, "nodePort": 30040}])


def test_dry_run_allocates_nothing():
    api = api_with("x")
    body = service("a", clusterIP="198.19.240.50", ports=PORT)
    api.create(Target(SERVICES, "x", None, None), body, dry_run=True)
    assert create(api, "b", clusterIP="198.19.240.50", ports=PORT)


# Random create / update / delete sequences: whatever happens, no two stored Services
# share an address or a node port, every value is inside its range, and the allocator
# holds exactly what the store holds.
_op = hs.tuples(
    hs.sampled_from(["create", "delete", "to-nodeport", "to-clusterip", "to-external"]),
    hs.integers(0, 5),
    hs.sampled_from([None, "198.19.240.10", "198.19.241.1", "198.19.241.3", "10.0.0.1"]),
    hs.sampled_from([None, 30000, 30086, 30087, 40000]),
)


def _apply(api: Api, op: str, i: int, ip: str | None, node_port: int | None) -> None:
    name = f"s{i}"
    spec: dict = {
        "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81, "nodePort": node_port}]
    }
    try:
        if op == "create":
            spec["type"] = "NodePort" if node_port else "ClusterIP"
            if spec["type"] == "ClusterIP":
                spec["ports"][1].pop("nodePort")
            create(api, name, **spec, **({"clusterIP": ip} if ip else {}))
        elif op == "delete":
            api.delete(Target(SERVICES, "x", name, None))
        elif op == "to-external":
            update(api, name, {"type": "ExternalName", "externalName": "a.b"})
        else:
            update(api, name, {"type": "NodePort" if op == "to-nodeport" else "ClusterIP"})
    except st.ApiError as exc:
        assert exc.code in (404, 409, 422), exc.message


@settings(max_examples=60, deadline=None)
@given(hs.lists(_op, max_size=25))
def test_allocation_invariants(ops):
    api = api_with("x")
    for op in ops:
        _apply(api, *op)
    ips: dict[str, str] = {}
    ports: dict[int, str] = {}
    for svc in api.store.items(SERVICES.key):
        name, spec = svc["metadata"]["name"], svc["spec"]
        for ip in spec.get("clusterIPs") or []:
            if ip != "None":
                assert IPv4Address(ip) in SERVICE_CIDR and ip not in ips
                ips[ip] = name
        for np in {p.get("nodePort") for p in spec["ports"]} - {None}:
            assert np in NODEPORT_RANGE and np not in ports
            ports[np] = name
    holders = api.services.allocator
    assert {str(IPv4Address(v)): k[1] for v, k in holders.pools["IPv4"].holders.items()} == ips
    assert {v: k[1] for v, k in holders.ports.holders.items()} == ports


# --- a dual-stack cluster: --service-cluster-ip-range with a range per family ---------


def dual_stack_api(*cidrs: object) -> Api:
    store = Store()
    ranges = list(cidrs) or [SERVICE_CIDR, SERVICE_CIDR6]
    api = Api(store, services=ServiceRegistry(store, ranges, NODEPORT_RANGE))
    api.create(Target(NAMESPACES, None, None, None), {"metadata": {"name": "x"}})
    return api


@pytest.mark.parametrize(
    ("spec", "families"),
    [
        ({}, ["IPv4"]),  # SingleStack, the cluster's default family
        ({"ipFamilies": ["IPv6"]}, ["IPv6"]),
        ({"ipFamilyPolicy": "PreferDualStack"}, ["IPv4", "IPv6"]),
        ({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6"]}, ["IPv6", "IPv4"]),
        ({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6", "IPv4"]}, ["IPv6", "IPv4"]),
    ],
)
def test_a_dual_stack_cluster_gives_an_address_per_family_asked_for(spec, families):
    got = create(dual_stack_api(), "web", ports=PORT, **spec)["spec"]
    assert got["ipFamilies"] == families
    versions = [IPv4Address(ip).version if "." in ip else 6 for ip in got["clusterIPs"]]
    assert versions == [4 if f == "IPv4" else 6 for f in families]
    assert got["clusterIP"] == got["clusterIPs"][0]
    for ip in got["clusterIPs"]:
        assert ip_address(ip) in (SERVICE_CIDR if "." in ip else SERVICE_CIDR6)


def test_requested_addresses_of_each_family_are_held_and_refused_to_others():
    api = dual_stack_api()
    wanted = ["198.19.240.20", "2001:2:0:ff00::20"]
    got = create(
        api,
        "a",
        ports=PORT,
        ipFamilyPolicy="RequireDualStack",
        clusterIP=wanted[0],
        clusterIPs=wanted,
    )
    assert got["spec"]["clusterIPs"] == wanted
    message = refused(api, "b", ports=PORT, clusterIP=wanted[1], clusterIPs=[wanted[1]])
    assert "provided IP is already allocated" in message
    outside = refused(api, "c", ports=PORT, clusterIP="2001:2:0:fe00::1")
    assert "is not in the valid range" in outside


def test_an_ipv6_only_cluster_defaults_to_ipv6_and_refuses_ipv4_and_dual_stack():
    api = dual_stack_api(SERVICE_CIDR6)
    got = create(api, "web", ports=PORT)["spec"]
    assert got["ipFamilies"] == ["IPv6"] and ip_address(got["clusterIP"]) in SERVICE_CIDR6
    assert "not configured on this cluster" in refused(api, "v4", ports=PORT, ipFamilies=["IPv4"])
    message = refused(api, "dual", ports=PORT, ipFamilyPolicy="RequireDualStack")
    assert "not configured for dual-stack services" in message
    # PreferDualStack on a single-stack cluster is the one family.
    prefer = create(api, "prefer", ports=PORT, ipFamilyPolicy="PreferDualStack")["spec"]
    assert prefer["ipFamilies"] == ["IPv6"] and len(prefer["clusterIPs"]) == 1
