"""The lab's address plan and CNI configuration (pure)."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from lab.cni import network_config, result_ipv4
from lab.config import API_ADDRESS, UNDERLAY, LabNode, lab_nodes, pod_netns


def test_address_plan_stays_in_the_test_range():
    lab_range = IPv4Network("198.18.0.0/15")
    nodes = lab_nodes(200)
    assert API_ADDRESS in UNDERLAY and UNDERLAY.subnet_of(lab_range)
    assert all(n.address in UNDERLAY and n.address != API_ADDRESS for n in nodes)
    cidrs = [n.pod_cidr for n in nodes]
    assert all(c.subnet_of(lab_range) and not c.overlaps(UNDERLAY) for c in cidrs)
    assert len(set(cidrs)) == len(cidrs)
    assert all(len(n.underlay_link) <= 15 for n in nodes)  # IFNAMSIZ


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
    conf = network_config("198.18.1.0/24", "/run/x")
    (ptp,) = conf["plugins"]
    assert conf["cniVersion"] == "1.0.0" and ptp["type"] == "ptp" and ptp["ipMasq"] is False
    assert ptp["ipam"] == {
        "type": "host-local",
        "ranges": [[{"subnet": "198.18.1.0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "/run/x",
    }
    assert "dataDir" not in network_config("10.0.0.0/24")["plugins"][0]["ipam"]


def test_cni_result_address():
    result = {"ips": [{"address": "fd00::5/64"}, {"address": "198.18.1.7/24"}]}
    assert str(result_ipv4(result)) == "198.18.1.7"
    assert result_ipv4({"ips": []}) is None
