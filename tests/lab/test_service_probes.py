"""Probes through Services: `lab probe NS/POD svc/NS/NAME PORT` goes to the ClusterIP at
the Service port, `lab probe external nodeport/NODE/PORT` from the outside host to a
node's address, `lab matrix --via-service` through a Service per destination pod, and
`lab status` lists Services.

Tests marked THROUGH KUBE-PROXY need the lab kube-proxy of issue #14 (and the matrix
also its ClusterIP allocation): without them they fail, since nothing then carries
traffic to a ClusterIP or a NodePort. The others run on any lab."""

from __future__ import annotations

import pytest

from tests.support.cluster_dns import pod_endpoint
from tests.support.enforcement import apply
from tests.support.lab_cli import matrix, picket, wait_until
from tests.support.services import endpoint_slice, service, service_port

PROTOCOLS = ["TCP", "UDP", "SCTP"]


@pytest.fixture(scope="module")
def web(model) -> dict[str, str]:
    """y/web: ClusterIP 198.19.240.60, Service ports 8080/PROTO to y/b's 80/PROTO; and
    y/web-np: NodePort 30080 (TCP) to y/b's 80."""
    b = pod_endpoint(model, "y/b")
    ports = [service_port(f"p-{proto.lower()}", 8080, proto, 80) for proto in PROTOCOLS]
    node_port = [service_port("http", 80, "TCP", 80, node_port=30080)]
    apply(
        model,
        service("y", "web", "198.19.240.60", ports),
        endpoint_slice("y", "web", ports, [b]),
        service("y", "web-np", "198.19.240.61", node_port),
        endpoint_slice("y", "web-np", node_port, [b]),
    )
    return {"b": b["addresses"][0]}


def probe(*args: str) -> str:
    return picket("lab", "probe", *args, check=False).stdout.strip()


def test_probe_targets_are_checked_against_the_service(web):
    for target, port, message in [
        (
            "svc/y/web",
            "80",
            "Service y/web has no port 80/TCP (it has 8080/TCP, 8080/UDP, 8080/SCTP)",
        ),
        ("svc/y/nosuch", "80", 'services \\"nosuch\\" not found'),
        ("svc/y", "80", "is not svc/NAMESPACE/NAME"),
        ("nodeport/vnode-1/30080", None, "no lab node 'vnode-1'"),
    ]:
        proc = picket("lab", "probe", "x/a", target, *([port] if port else []), check=False)
        assert proc.returncode == 1 and message in proc.stderr, (target, proc.stderr)


def test_status_lists_services_with_their_ready_endpoints(model, web):
    two_ports = [service_port("http", 80), service_port("dns", 53, "UDP", 53)]
    apply(
        model,
        service("z", "two", "198.19.240.62", two_ports),
        endpoint_slice(
            "z", "two", two_ports, [pod_endpoint(model, f"z/{p}", ready=p != "c") for p in "abc"]
        ),
    )
    lines = picket("lab", "status").stdout.splitlines()
    rows = {
        line.split()[0]: line.split()[1:]
        for line in lines[lines.index("services:") + 1 :]
        if line.startswith("  ") and "/" in line.split()[0]
    }
    assert rows["z/two"] == ["ClusterIP", "198.19.240.62", "80/TCP,53/UDP", "endpoints", "2"]
    assert rows["y/web-np"] == ["NodePort", "198.19.240.61", "80:30080/TCP", "endpoints", "1"]
    assert rows["kube-system/kube-dns"][:3] == [
        "ClusterIP",
        "198.19.240.10",
        "53/UDP,53/TCP,9153/TCP",
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_probe_through_a_cluster_ip_at_the_service_port(web, protocol):
    """THROUGH KUBE-PROXY."""
    assert wait_until(lambda: probe("x/a", "svc/y/web", f"8080/{protocol}") == "connected y/b")


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_probe_a_node_port_from_the_external_host(web, node):
    """THROUGH KUBE-PROXY: on the node that has the endpoint and on the other."""
    assert wait_until(lambda: probe("external", f"nodeport/{node}/30080") == "connected y/b")


@pytest.mark.parametrize(("port", "protocol"), [(80, "TCP"), (81, "UDP"), (80, "SCTP")])
def test_matrix_via_service_is_the_direct_matrix(model, port, protocol):
    """THROUGH KUBE-PROXY, with ClusterIPs allocated by the API server."""
    args = ("--namespaces", "x,y,z", "--port", str(port), "--protocol", protocol)
    direct = matrix(*args)
    via = matrix("--via-service", *args)
    assert via == direct
    assert all(all(row.values()) for row in via["results"].values())
    left = model.json("get", "services,endpointslices", "-A", "-l", "picket.io/probe-service")
    assert left["items"] == []
