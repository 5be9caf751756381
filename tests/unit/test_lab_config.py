"""The lab's address plan and CNI configuration (pure)."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address

import pytest

from lab.cni import network_config, result_ips
from lab.config import (
    API_ADDRESS,
    EXTERNAL_ADDRESS6,
    OUTSIDE6,
    SERVICE_CIDR6,
    UNDERLAY,
    UNDERLAY6,
    LabNode,
    lab_nodes,
    node_by_address,
    parse_ip_families,
    pod_netns,
    virtual_nodes,
)


def test_address_plan_stays_in_the_test_range():
    lab_range = IPv4Network("198.18.0.0/15")
    nodes = lab_nodes(200)
    assert API_ADDRESS in UNDERLAY and UNDERLAY.subnet_of(lab_range)
    assert all(n.address in UNDERLAY and n.address != API_ADDRESS for n in nodes)
    cidrs = [n.pod_cidr for n in nodes]
    assert all(c.subnet_of(lab_range) and not c.overlaps(UNDERLAY) for c in cidrs)
    assert len(set(cidrs)) == len(cidrs)
    assert all(len(n.underlay_link) <= 15 for n in nodes)  # IFNAMSIZ


def test_ipv6_plan_stays_in_the_benchmarking_range_and_nothing_overlaps():
    lab_range = IPv6Network("2001:2::/48")
    nodes, virtual = lab_nodes(200), virtual_nodes(199)
    ranges = [UNDERLAY6, OUTSIDE6, SERVICE_CIDR6]
    ranges += [n.pod_cidr6 for n in nodes] + [v.pod_cidr6 for v in virtual]
    assert all(r.subnet_of(lab_range) for r in ranges)
    assert not any(a.overlaps(b) for i, a in enumerate(ranges) for b in ranges[i + 1 :])
    assert all(n.address6 in UNDERLAY6 and n.address6 != EXTERNAL_ADDRESS6 for n in nodes)
    assert all(n.pod_cidr6.prefixlen == 64 for n in nodes)
    assert str(LabNode(10).pod_cidr6) == "2001:2:0:a::/64"
    assert str(virtual[0].pod_cidr6) == "2001:2:0:101::/64"


def test_a_node_is_found_by_either_underlay_address():
    node = LabNode(7)
    assert node_by_address(str(node.address)) == node
    assert node_by_address(str(node.address6)) == node
    assert node_by_address("2001:2::ff") is None and node_by_address("nonsense") is None
    assert node.addresses((6, 4)) == (node.address6, node.address)
    assert node.pod_cidrs((4,)) == (node.pod_cidr,)


@pytest.mark.parametrize(
    ("text", "families"), [("4", (4,)), ("6", (6,)), ("4,6", (4, 6)), ("6,4", (6, 4))]
)
def test_ip_families_parse(text, families):
    assert parse_ip_families(text) == families


@pytest.mark.parametrize("text", ["", "5", "4,4", "4,6,4", "four", "4;6"])
def test_ip_families_refuse_what_is_not_a_family_list(text):
    with pytest.raises(ValueError, match="--ip-families"):
        parse_ip_families(text)


@pytest.mark.parametrize("count", [0, 201])
def test_node_count_is_bounded(count):
    with pytest.raises(ValueError, match="between 1 and 200"):
        lab_nodes(count)


def test_names():
    node = LabNode(3)
    assert (node.name, node.netns, str(node.address), str(node.pod_cidr)) == (
        "node-3",
        "picket-node-3",
        "198.18.0.3",
        "198.18.3.0/24",
    )
    assert pod_netns("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0") == "picket-pod-0f1e2d3c4b5a"


def test_cni_config_is_ptp_with_host_local():
    conf = network_config(["198.18.1.0/24"], "/run/x")
    (ptp,) = conf["plugins"]
    assert conf["cniVersion"] == "1.0.0" and ptp["type"] == "ptp" and ptp["ipMasq"] is False
    assert ptp["ipam"] == {
        "type": "host-local",
        "ranges": [[{"subnet": "198.18.1.0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "/run/x",
    }
    assert "dataDir" not in network_config(["10.0.0.0/24"])["plugins"][0]["ipam"]


def test_dual_stack_cni_config_has_a_range_set_and_a_default_route_per_family():
    ipam = network_config(["2001:2:0:1::/64", "198.18.1.0/24"])["plugins"][0]["ipam"]
    assert ipam["ranges"] == [[{"subnet": "2001:2:0:1::/64"}], [{"subnet": "198.18.1.0/24"}]]
    assert ipam["routes"] == [{"dst": "::/0"}, {"dst": "0.0.0.0/0"}]


def test_cni_result_addresses_keep_their_order():
    result = {"ips": [{"address": "2001:2:0:1::5/64"}, {"address": "198.18.1.7/24"}]}
    assert result_ips(result) == (ip_address("2001:2:0:1::5"), ip_address("198.18.1.7"))
    assert result_ips({"ips": []}) == ()
