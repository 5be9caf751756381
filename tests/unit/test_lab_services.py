"""Services in the lab's commands (pure): probe targets, the ClusterIP and port a probe
goes to, `lab status` lines, the matrix's probe Services, and the command lines."""

from __future__ import annotations

import pytest

from agent.cli import build_parser
from agent.portspec import parse_service_target
from lab.cluster import LabPod, probe_destination
from lab.probe_services import (
    PROBE_LABEL,
    WantedPort,
    probe_service_key,
    service_manifest,
    service_name,
    slice_manifest,
    unprogrammed,
    wanted_programming,
)
from lab.services import parse_nodeport_target, probe_address, status_line


def svc(cluster_ip="198.19.240.20", ports=None, kind=None, ns="x", name="web"):
    spec = {"clusterIP": cluster_ip, "ports": ports or [{"port": 80, "protocol": "TCP"}]}
    if kind:
        spec["type"] = kind
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def test_service_targets():
    assert parse_service_target("svc/x/web") == ("x", "web")
    for bad in ("svc/x", "svc//web", "svc/x/web/80", "x/web"):
        with pytest.raises(ValueError, match="svc/NAMESPACE/NAME"):
            parse_service_target(bad)


def test_nodeport_targets():
    assert parse_nodeport_target("nodeport/node-1/30080") == ("node-1", 30080, "TCP")
    assert parse_nodeport_target("nodeport/node-2/30053/udp") == ("node-2", 30053, "UDP")
    for bad in ("nodeport/node-1", "nodeport//30080", "node-1/30080"):
        with pytest.raises(ValueError, match="nodeport/NODE/PORT"):
            parse_nodeport_target(bad)
    with pytest.raises(ValueError, match="port"):
        parse_nodeport_target("nodeport/node-1/http")


def test_a_nodeport_target_is_the_nodes_address_and_takes_no_port_argument():
    # No API call: the node's address comes from the lab's address plan.
    assert probe_destination(None, "nodeport/node-2/30080/sctp", None) == (
        "198.18.0.2",
        30080,
        "SCTP",
    )
    with pytest.raises(ValueError, match="no PORT argument"):
        probe_destination(None, "nodeport/node-2/30080", "80")
    with pytest.raises(ValueError, match="no lab node"):
        probe_destination(None, "nodeport/vnode-1/30080", None)
    with pytest.raises(ValueError, match=r"PORT.*missing"):
        probe_destination(None, "198.18.1.5", None)


def test_probe_goes_to_the_cluster_ip_at_a_service_port():
    service = svc(ports=[{"port": 80, "targetPort": 8080}, {"port": 53, "protocol": "UDP"}])
    assert probe_address(service, 80, "TCP") == "198.19.240.20"
    assert probe_address(service, 53, "UDP") == "198.19.240.20"
    with pytest.raises(ValueError, match=r"no port 8080/TCP \(it has 80/TCP, 53/UDP\)"):
        probe_address(service, 8080, "TCP")  # the target port is not the Service's


@pytest.mark.parametrize(("address", "why"), [("None", "is headless"), (None, "has no ClusterIP")])
def test_probe_needs_a_cluster_ip(address, why):
    with pytest.raises(ValueError, match=why):
        probe_address(svc(address), 80, "TCP")


def test_status_line():
    service = svc(
        ports=[{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}], kind="NodePort"
    )
    slices = [
        {
            "endpoints": [
                {"addresses": ["198.18.1.5"]},
                {"addresses": ["198.18.2.5"], "conditions": {"ready": False}},
            ]
        }
    ]
    assert status_line(service, slices).split() == [
        "x/web",
        "NodePort",
        "198.19.240.20",
        "80:30080/TCP,53/UDP",
        "endpoints",
        "1",
    ]
    assert status_line(svc(None), []).split()[1:3] == ["ClusterIP", "-"]


def test_status_line_of_a_dual_stack_service_counts_both_families():
    service = svc(ports=[{"port": 80}])
    service["spec"]["clusterIPs"] = ["198.19.240.20", "2001:2:0:ff00::14"]
    slices = [
        {"addressType": "IPv4", "endpoints": [{"addresses": ["198.18.1.5"]}]},
        {"addressType": "IPv6", "endpoints": [{"addresses": ["2001:2:0:1::5"]}]},
    ]
    fields = status_line(service, slices).split()
    assert fields[2] == "198.19.240.20,2001:2:0:ff00::14"
    assert fields[-2:] == ["endpoints", "2"]


def test_probe_service_names():
    assert service_name("a") == "picket-probe-a"
    long_name = "b" * 60
    for odd in (long_name, "web.v1", "pod.with.dots"):
        name = service_name(odd)
        assert name.startswith("picket-probe-") and len(name) <= 63 and "." not in name
    assert service_name(long_name) != service_name("c" * 60)


POD = LabPod("x/a", "198.18.1.5", "node-1", "picket-pod-1", True, False)
POD6 = LabPod(
    "x/a", "198.18.1.5", "node-1", "picket-pod-1", True, False, ("198.18.1.5", "2001:2:0:1::5")
)


def test_probe_service_and_slice_manifests():
    service = service_manifest(POD, [(81, "UDP")])
    assert service["metadata"] == {
        "name": "picket-probe-a",
        "namespace": "x",
        "labels": {PROBE_LABEL: "matrix"},
    }
    assert "selector" not in service["spec"]  # never the pod's labels: they decide verdicts
    assert service["spec"]["ports"] == [
        {"name": "udp-81", "port": 81, "protocol": "UDP", "targetPort": 81}
    ]
    piece = slice_manifest(POD, [(81, "UDP")])
    assert piece["metadata"]["labels"]["kubernetes.io/service-name"] == "picket-probe-a"
    assert piece["metadata"]["labels"][PROBE_LABEL] == "matrix"
    assert piece["addressType"] == "IPv4"
    assert piece["endpoints"] == [
        {
            "addresses": ["198.18.1.5"],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "targetRef": {"kind": "Pod", "namespace": "x", "name": "a"},
            "nodeName": "node-1",
        }
    ]
    assert piece["ports"] == [{"name": "udp-81", "port": 81, "protocol": "UDP"}]


def test_a_dual_stack_probe_service_has_both_families_and_a_slice_each():
    service = service_manifest(POD6, [(80, "TCP")], (4, 6))
    assert service["spec"]["ipFamilyPolicy"] == "RequireDualStack"
    assert service["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
    assert service_manifest(POD6, [(80, "TCP")], (6,))["spec"]["ipFamilyPolicy"] == "SingleStack"
    v4, v6 = (slice_manifest(POD6, [(80, "TCP")], f) for f in (4, 6))
    assert (v4["addressType"], v6["addressType"]) == ("IPv4", "IPv6")
    assert v4["endpoints"][0]["addresses"] == ["198.18.1.5"]
    assert v6["endpoints"][0]["addresses"] == ["2001:2:0:1::5"]
    assert v4["metadata"]["name"] != v6["metadata"]["name"]
    for piece in (v4, v6):
        assert piece["metadata"]["labels"]["kubernetes.io/service-name"] == "picket-probe-a"
    cluster_ips = {4: {"x/a": "198.19.240.33"}, 6: {"x/a": "2001:2:0:ff00::21"}}
    wanted = wanted_programming([POD6], cluster_ips, [(80, "TCP")])
    assert [w.endpoint for w in wanted] == ["198.18.1.5:80", "[2001:2:0:1::5]:80"]
    ports = {"80/TCP": {"nodePort": None, "endpoints": ["198.18.1.5:80", "[2001:2:0:1::5]:80"]}}
    both = {"clusterIP": "198.19.240.33", "clusterIPs": ["198.19.240.33", "2001:2:0:ff00::21"]}
    assert unprogrammed({"x/picket-probe-a": {**both, "ports": ports}}, wanted) == []
    only_v4 = {"clusterIP": "198.19.240.33", "ports": ports}
    assert unprogrammed({"x/picket-probe-a": only_v4}, wanted) == ["x/picket-probe-a 80/TCP"]


def test_a_probe_service_has_every_probed_port_one_number_on_several_protocols():
    ports = [(80, "TCP"), (80, "UDP"), (81, "SCTP")]
    names = [p["name"] for p in service_manifest(POD, ports)["spec"]["ports"]]
    assert names == ["tcp-80", "udp-80", "sctp-81"]
    slice_ports = slice_manifest(POD, ports)["ports"]
    assert [(p["name"], p["port"], p["protocol"]) for p in slice_ports] == [
        ("tcp-80", 80, "TCP"),
        ("udp-80", 80, "UDP"),
        ("sctp-81", 81, "SCTP"),
    ]
    assert probe_service_key("x/a") == ("x", "picket-probe-a")


def test_unprogrammed_compares_with_the_kube_proxy_status():
    wanted = wanted_programming([POD], {4: {"x/a": "198.19.240.33"}}, [(81, "UDP")])
    assert wanted == [WantedPort("x/picket-probe-a", "198.19.240.33", "81/UDP", "198.18.1.5:81")]
    ports = {"81/UDP": {"nodePort": None, "endpoints": ["198.18.1.5:81"]}}
    done = {"x/picket-probe-a": {"clusterIP": "198.19.240.33", "ports": ports}}
    assert unprogrammed(done, wanted) == []
    assert unprogrammed({}, wanted) == ["x/picket-probe-a 81/UDP"]
    assert unprogrammed(None, wanted) == ["x/picket-probe-a 81/UDP"]  # before the first apply
    stale = {
        "x/picket-probe-a": {"clusterIP": "198.19.240.33", "ports": {"81/UDP": {"endpoints": []}}}
    }
    assert unprogrammed(stale, wanted) == ["x/picket-probe-a 81/UDP"]
    moved = {"x/picket-probe-a": {"clusterIP": "198.19.240.34", "ports": ports}}
    assert unprogrammed(moved, wanted) == ["x/picket-probe-a 81/UDP"]
    two = wanted_programming([POD], {4: {"x/a": "198.19.240.33"}}, [(81, "UDP"), (80, "TCP")])
    assert unprogrammed(done, two) == ["x/picket-probe-a 80/TCP"]  # one port of two


def parse(*argv):
    return build_parser().parse_args(["lab", *argv])


def test_command_lines():
    args = parse("probe", "external", "nodeport/node-1/30080/udp")
    assert (args.source, args.target, args.port) == ("external", "nodeport/node-1/30080/udp", None)
    args = parse("probe", "x/a", "svc/y/web", "80")
    assert (args.target, args.port) == ("svc/y/web", "80")
    args = parse("resolve", "x/a", "web.y", "--tcp")
    assert (args.pod, args.name, args.tcp, args.server, args.timeout) == (
        "x/a",
        "web.y",
        True,
        None,
        2.0,
    )
    assert parse("resolve", "x/a", "web").tcp is False
    args = parse("matrix", "--via-service", "--port", "81", "--protocol", "udp")
    assert (args.via_service, args.port, args.protocol) == (True, 81, "UDP")
    assert parse("matrix").via_service is False
