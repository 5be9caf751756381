"""The DNS add-on's objects, how the kubelet recognises a DNS pod, and dnsmasq's command
line (pure)."""

from __future__ import annotations

import pytest

from agent.model.parse import parse_object
from lab.config import DNS_SERVICE_IP, SERVICE_CIDR
from lab.dns.addon import deployment_manifest, service_manifest
from lab.dns.dnsmasq import dnsmasq_argv
from lab.kubelet.dns_pod import process_name, responder_ports, runs_dnsmasq


def pod(*images):
    return {"spec": {"containers": [{"name": f"c{i}", "image": im} for i, im in enumerate(images)]}}


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        (["picket.lab/dnsmasq"], True),
        (["picket.lab/dnsmasq:2.90"], True),
        (["picket.lab/dnsmasq@sha256:" + "0" * 64], True),
        (["registry.k8s.io/coredns/coredns:v1.11.3"], False),
        (["agnhost", "picket.lab/dnsmasq"], True),
        (["picket.lab/dnsmasq-not"], False),
        (["other.registry:5000/picket.lab/dnsmasq"], False),
        ([], False),
    ],
)
def test_the_kubelet_recognises_the_dnsmasq_image(images, expected):
    assert runs_dnsmasq(pod(*images)) is expected


def test_dnsmasq_takes_port_53_from_the_responder():
    ports = [(53, "UDP"), (53, "TCP"), (9153, "TCP"), (53, "SCTP")]
    assert responder_ports(pod("picket.lab/dnsmasq"), ports) == [(9153, "TCP"), (53, "SCTP")]
    assert responder_ports(pod("agnhost"), ports) == ports


def test_process_names_are_short_and_per_pod():
    assert process_name("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0") == "dns-0f1e2d3c4b5a"


def test_dnsmasq_serves_the_zone_from_its_hosts_dir_and_never_forwards(tmp_path):
    argv = dnsmasq_argv(tmp_path / "hosts", "cluster.local")
    assert argv[0] == "dnsmasq"
    assert f"--hostsdir={tmp_path / 'hosts'}" in argv
    assert {"--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null"} <= set(
        argv
    )
    assert "--local=/cluster.local/" in argv and "--address=/#/" in argv
    assert not any(a.startswith(("--server", "-S", "--resolv-file", "--dhcp")) for a in argv)
    # Wildcard sockets of both families: every address of the pod, IPv4 and IPv6.
    assert not any(a.startswith(("--listen-address", "--interface", "--bind")) for a in argv)


def test_kube_dns_service_is_kubeadms_at_the_labs_dns_address():
    service = service_manifest()
    assert (service["metadata"]["namespace"], service["metadata"]["name"]) == (
        "kube-system",
        "kube-dns",
    )
    spec = service["spec"]
    assert spec["clusterIP"] == str(DNS_SERVICE_IP) and DNS_SERVICE_IP in SERVICE_CIDR
    assert spec["selector"] == {"k8s-app": "kube-dns"}
    assert [(p["name"], p["port"], p["protocol"]) for p in spec["ports"]] == [
        ("dns", 53, "UDP"),
        ("dns-tcp", 53, "TCP"),
        ("metrics", 9153, "TCP"),
    ]


def test_coredns_deployment_template_is_a_valid_dns_pod():
    deployment = deployment_manifest()
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert (
        spec["selector"]["matchLabels"]
        == spec["template"]["metadata"]["labels"]
        == {"k8s-app": "kube-dns"}
    )
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "coredns-x",
            "namespace": "kube-system",
            **spec["template"]["metadata"],
        },
        "spec": spec["template"]["spec"],
    }
    parsed = parse_object(body)
    assert [(p.name, p.port, p.protocol) for p in parsed.container_ports] == [
        ("dns", 53, "UDP"),
        ("dns-tcp", 53, "TCP"),
        ("metrics", 9153, "TCP"),
    ]
    assert runs_dnsmasq(body)
