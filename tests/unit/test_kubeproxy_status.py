"""The lab kube-proxy's status file (what other lab parts wait on) and its judgement of
which UDP conntrack entries are stale."""

from __future__ import annotations

import json
import threading

import pytest

from lab.kubeproxy.conntrack import UdpFrontends
from lab.kubeproxy.status import (
    endpoints,
    programmed,
    status_path,
    wait_endpoints,
    wait_programmed,
    write_status,
)

SERVICES = {
    "ns/dns": {
        "clusterIP": "198.19.240.10",
        "ports": {
            "53/UDP": {"nodePort": None, "endpoints": ["198.18.1.2:53"]},
            "53/TCP": {"nodePort": None, "endpoints": ["198.18.1.2:53"]},
        },
    },
    "ns/edge": {
        "clusterIP": "198.19.240.11",
        "ports": {"80/UDP": {"nodePort": 30080, "endpoints": []}},
    },
}


def test_status_is_written_whole_and_read_back(tmp_path):
    assert programmed(tmp_path, "node-1") is None  # nothing applied yet
    write_status(tmp_path, "node-1", SERVICES)
    assert json.loads(status_path(tmp_path, "node-1").read_text()) == {"services": SERVICES}
    assert programmed(tmp_path, "node-1") == SERVICES
    assert [p.name for p in (tmp_path / "kubeproxy").iterdir()] == ["node-1.json"]  # no tmp left


@pytest.mark.parametrize(
    ("service", "port", "found"),
    [
        ("ns/dns", "53/UDP", ["198.18.1.2:53"]),
        ("ns/edge", "80/UDP", []),  # programmed, and rejected
        ("ns/edge", "81/UDP", None),
        ("ns/other", "53/UDP", None),
    ],
)
def test_endpoints_of_a_service_port(service, port, found):
    assert endpoints(SERVICES, service, port) == found


def test_wait_returns_once_every_node_is_there(tmp_path):
    write_status(tmp_path, "node-1", {})
    timer = threading.Timer(0.2, write_status, (tmp_path, "node-2", SERVICES))
    timer.start()
    try:
        wait_endpoints(tmp_path, ["node-1", "node-2"], "ns/edge", "81/UDP", None, timeout=5)
        found = wait_programmed(tmp_path, ["node-2"], lambda s: "ns/dns" in s, timeout=5)
    finally:
        timer.cancel()
    assert found == {"node-2": SERVICES}


def test_wait_names_the_nodes_it_gave_up_on(tmp_path):
    write_status(tmp_path, "node-1", SERVICES)
    with pytest.raises(TimeoutError, match="node-2"):
        wait_programmed(tmp_path, ["node-1", "node-2"], lambda s: True, timeout=0.1)


LOCAL = frozenset({"198.18.0.1", "198.18.1.1"})


@pytest.mark.parametrize(
    ("dst", "reply", "stale"),
    [
        (("198.19.240.10", 53), ("198.18.1.2", 53), False),  # to the current endpoint
        (("198.19.240.10", 53), ("198.18.1.9", 53), True),  # to an endpoint gone since
        (("198.19.240.10", 53), ("198.19.240.10", 53), True),  # made before any DNAT
        (("198.19.240.10", 54), ("198.19.240.10", 54), False),  # not a service port
        (("198.18.0.1", 30080), ("198.18.0.1", 30080), True),  # node port, no endpoints
        (("198.18.5.5", 30080), ("198.18.5.5", 30080), False),  # not to this node
    ],
)
def test_stale_udp_entries(dst, reply, stale):
    frontends = UdpFrontends.of(SERVICES)
    assert frontends.is_stale(dst[0], dst[1], reply[0], reply[1], LOCAL) is stale


def test_only_udp_ports_have_frontends():
    assert set(UdpFrontends.of(SERVICES).by_address) == {
        ("198.19.240.10", 53),
        ("198.19.240.11", 80),
    }
