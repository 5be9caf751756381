"""Cluster DNS in the lab: `lab up` runs dnsmasq as the backend of kube-system/kube-dns,
inside the DNS pod's own network namespace; it answers the cluster's Service names to
pods over UDP and TCP, from the API's Services and EndpointSlices, and follows their
changes; `picket lab resolve` tells a name that does not exist (NXDOMAIN) from a server
that does not answer (timeout); no dnsmasq outlives its pod or the lab.

Most tests ask the DNS pod at its own address (`--server`). The two marked THROUGH THE
CLUSTERIP ask the kube-dns Service, as pods do, and so need the lab kube-proxy and the
EndpointSlice controller of issue #14; without them these two fail (timeout)."""

from __future__ import annotations

import pytest

from lab.config import DNS_SERVICE_IP, pod_netns
from tests.support.cluster_dns import (
    dns_pod,
    dnsmasq_pids,
    pod_endpoint,
    resolve,
    same_netns,
)
from tests.support.enforcement import apply
from tests.support.lab_cli import picket, wait_until
from tests.support.services import endpoint_slice, service, service_port

WEB_IP = "198.19.240.50"


@pytest.fixture(scope="module")
def dns_ip(model) -> str:
    apply(model, service("z", "web", WEB_IP, [service_port("http", 80)]))
    return dns_pod(model)["status"]["podIP"]


def answers(*args: str) -> list[str] | None:
    status, out = resolve(*args)
    return out if status == 0 else None


def test_lab_up_runs_the_dns_addon_as_kubeadm_names_it(model, dns_ip):
    svc = model.json("get", "service", "-n", "kube-system", "kube-dns")["spec"]
    assert svc["clusterIP"] == str(DNS_SERVICE_IP)
    assert svc["selector"] == {"k8s-app": "kube-dns"}
    assert [(p["name"], p["port"], p["protocol"]) for p in svc["ports"]] == [
        ("dns", 53, "UDP"),
        ("dns-tcp", 53, "TCP"),
        ("metrics", 9153, "TCP"),
    ]
    deployment = model.json("get", "deployment", "-n", "kube-system", "coredns")
    assert deployment["status"]["readyReplicas"] == 1
    pod = dns_pod(model)
    assert pod["metadata"]["name"].startswith("coredns-")
    [pid] = dnsmasq_pids()
    assert same_netns(pid, pod_netns(pod["metadata"]["uid"]))
    # 9153 is served as any container port is; 53 is dnsmasq's.
    ref = f"kube-system/{pod['metadata']['name']}"
    assert picket("lab", "probe", "x/a", ref, "9153").stdout.strip() == f"connected {ref}"


@pytest.mark.parametrize("transport", [[], ["--tcp"]], ids=["udp", "tcp"])
def test_a_pod_resolves_service_names_with_its_search_list(dns_ip, transport):
    ask = ["--server", dns_ip, *transport]
    assert wait_until(lambda: answers("x/a", "web.z", *ask) == [WEB_IP])
    assert answers("z/a", "web", *ask) == [WEB_IP]  # its own namespace's search domain
    assert answers("y/b", "web.z.svc.cluster.local.", *ask) == [WEB_IP]
    assert answers("y/b", "kube-dns.kube-system", *ask) == [str(DNS_SERVICE_IP)]


def test_nxdomain_and_timeout_are_told_apart(model, dns_ip):
    proc = picket("lab", "resolve", "x/a", "nosuch", "--server", dns_ip, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (1, "NXDOMAIN")
    assert "nosuch.x.svc.cluster.local." in proc.stderr and "nosuch." in proc.stderr
    # Names outside the cluster do not exist either: nothing is forwarded.
    assert resolve("x/a", "example.com", "--server", dns_ip) == (1, ["NXDOMAIN"])
    ref = f"kube-system/{dns_pod(model)['metadata']['name']}"
    rules = [["INPUT", "-p", proto, "--dport", "53", "-j", "DROP"] for proto in ("udp", "tcp")]
    for rule in rules:
        picket("lab", "exec", ref, "--", "iptables", "-A", *rule)
    try:
        for transport in ([], ["--tcp"]):
            args = ("x/a", "web.z", "--server", dns_ip, "--timeout", "0.5", *transport)
            assert resolve(*args) == (1, ["timeout"]), transport
    finally:
        for rule in rules:
            picket("lab", "exec", ref, "--", "iptables", "-D", *rule)
    assert answers("x/a", "web.z", "--server", dns_ip) == [WEB_IP]


def test_headless_service_resolves_to_its_ready_endpoints(model, dns_ip):
    ports = [service_port("http", 80)]
    a, b, c = (pod_endpoint(model, f"y/{p}") for p in "abc")
    ip = {name: e["addresses"][0] for name, e in zip("abc", (a, b, c), strict=True)}

    def endpoints(*ready: str) -> list[dict]:
        return [
            e | {"conditions": {"ready": n in ready}} for n, e in zip("abc", (a, b, c), strict=True)
        ]

    first = endpoints("a", "b")
    first[0] = first[0] | {"hostname": "db-0"}
    apply(model, service("y", "db", "None", ports), endpoint_slice("y", "db", ports, first))
    ask = ("--server", dns_ip)
    assert wait_until(
        lambda: sorted(answers("x/a", "db.y", *ask) or []) == sorted([ip["a"], ip["b"]])
    )
    assert answers("x/a", "db-0.db.y", "--tcp", *ask) == [ip["a"]]
    # The slice changes: b goes unready, c becomes ready, a loses its hostname.
    apply(model, endpoint_slice("y", "db", ports, endpoints("a", "c")))
    assert wait_until(
        lambda: sorted(answers("x/a", "db.y", *ask) or []) == sorted([ip["a"], ip["c"]])
    )
    assert wait_until(lambda: resolve("x/a", "db-0.db.y", *ask) == (1, ["NXDOMAIN"]))
    model("delete", "service", "-n", "y", "db")
    assert wait_until(lambda: resolve("x/a", "db.y", *ask) == (1, ["NXDOMAIN"]))


def test_resolve_says_what_is_wrong_with_its_arguments(dns_ip):
    bad_name = picket("lab", "resolve", "x/a", "a..b", check=False)
    assert bad_name.returncode == 1 and "empty label" in bad_name.stderr
    no_pod = picket("lab", "resolve", "x/nosuch", "web.z", check=False)
    assert no_pod.returncode == 1 and "not found" in no_pod.stderr


def test_resolve_through_the_kube_dns_cluster_ip(dns_ip):
    """THROUGH THE CLUSTERIP: needs the lab kube-proxy and EndpointSlice controller."""
    for transport in ([], ["--tcp"]):
        assert wait_until(lambda t=transport: answers("x/a", "web.z", *t) == [WEB_IP]), transport


def test_resolve_from_the_dns_pod_itself_through_the_cluster_ip(model, dns_ip):
    """THROUGH THE CLUSTERIP (hairpin: the client is the only endpoint)."""
    ref = f"kube-system/{dns_pod(model)['metadata']['name']}"
    assert wait_until(lambda: answers(ref, "web.z") == [WEB_IP])


def test_dnsmasq_goes_with_its_pod_and_comes_with_the_next(model, dns_ip):
    old = dns_pod(model)
    [old_pid] = dnsmasq_pids()
    model("delete", "pod", "-n", "kube-system", old["metadata"]["name"])
    assert wait_until(lambda: old_pid not in dnsmasq_pids())

    def replaced() -> bool:
        items = model.json("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns")["items"]
        return [p["metadata"]["uid"] for p in items] not in ([], [old["metadata"]["uid"]])

    assert wait_until(replaced)
    model(
        "wait",
        "--for=condition=Ready",
        "pod",
        "-n",
        "kube-system",
        "-l",
        "k8s-app=kube-dns",
        "--timeout=30s",
    )
    new = dns_pod(model)
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    [pid] = dnsmasq_pids()
    assert same_netns(pid, pod_netns(new["metadata"]["uid"]))
    assert answers("x/a", "web.z", "--server", new["status"]["podIP"]) == [WEB_IP]


def test_lab_down_leaves_no_dnsmasq(model):
    assert len(dnsmasq_pids()) == 1
    picket("lab", "down")
    assert dnsmasq_pids() == []
