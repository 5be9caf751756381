"""Cluster DNS in the lab: `lab up` runs dnsmasq as the backend of kube-system/kube-dns,
inside the DNS pod's own network namespace; it answers the cluster's Service names to
pods over UDP and TCP, from the API's Services and EndpointSlices, and follows their
changes; `picket lab resolve` tells a name that does not exist (NXDOMAIN) from a server
that does not answer (timeout); no dnsmasq outlives its pod or the lab. The lab is
dual-stack: names answer AAAA records for their IPv6 addresses beside the A records,
dnsmasq answers on both of the DNS pod's addresses, and the last test brings up an
IPv6-only lab, where a pod resolves through kube-dns at its IPv6 address.

Most tests ask the DNS pod at its own address (`--server`). Those marked THROUGH THE
CLUSTERIP ask the kube-dns Service, as pods do, and so need the lab kube-proxy and the
EndpointSlice controller of issue #14; without them these fail (timeout)."""

from __future__ import annotations

import json

import pytest

from lab.cluster import family_of
from lab.config import DNS_SERVICE_IP, DNS_SERVICE_IP6, pod_netns
from tests.support.cluster_dns import (
    dns_pod,
    dnsmasq_pids,
    pod_endpoint,
    resolve,
    same_netns,
)
from tests.support.enforcement import apply
from tests.support.lab_cli import Kubectl, picket, wait_until
from tests.support.services import endpoint_slice, service, service_port

WEB_IP = "198.19.240.50"


@pytest.fixture(scope="module")
def dns_ip(model) -> str:
    apply(model, service("z", "web", WEB_IP, [service_port("http", 80)]))
    return dns_pod(model)["status"]["podIP"]


@pytest.fixture(scope="module")
def dns_ip6(model, dns_ip) -> str:
    return address_of(dns_pod(model), 6)


def address_of(pod: dict, family: int) -> str:
    return next(p["ip"] for p in pod["status"]["podIPs"] if family_of(p["ip"]) == family)


def answers(*args: str) -> list[str] | None:
    status, out = resolve(*args)
    return out if status == 0 else None


def cluster_ips(kubectl: Kubectl, ns: str, name: str) -> list[str]:
    return kubectl.json("get", "service", "-n", ns, name)["spec"]["clusterIPs"]


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


def test_a_dual_stack_service_answers_a_and_aaaa_on_both_dns_pod_addresses(model, dns_ip, dns_ip6):
    dual = service("z", "dual", None, [service_port("http", 80)])
    apply(model, dual | {"spec": dual["spec"] | {"ipFamilyPolicy": "RequireDualStack"}})
    v4, v6 = cluster_ips(model, "z", "dual")
    ask6 = ("x/a", "dual.z", "--family", "6")
    assert wait_until(lambda: answers(*ask6, "--server", dns_ip6) == [v6])
    assert answers(*ask6, "--server", dns_ip6, "--tcp") == [v6]
    assert answers(*ask6, "--server", dns_ip) == [v6]
    # By default the pod's primary family, IPv4 here, whatever the server's.
    assert answers("x/a", "dual.z", "--server", dns_ip6) == [v4]
    # A single-stack IPv4 Service has no AAAA record.
    assert resolve("x/a", "web.z", "--server", dns_ip, "--family", "6") == (1, ["NODATA"])


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

    # A headless Service without selector is dual-stack: the same endpoints in a slice
    # per family, AAAA records from the IPv6 one.
    ip6 = {n: address_of(model.json("get", "pod", "-n", "y", n), 6) for n in "abc"}

    def slices(v4: list[dict]) -> list[dict]:
        v6 = [e | {"addresses": [ip6[n]]} for n, e in zip("abc", v4, strict=True)]
        ipv6 = endpoint_slice("y", "db", ports, v6, name="db-6") | {"addressType": "IPv6"}
        return [endpoint_slice("y", "db", ports, v4), ipv6]

    first = endpoints("a", "b")
    first[0] = first[0] | {"hostname": "db-0"}
    apply(model, service("y", "db", "None", ports), *slices(first))
    ask = ("--server", dns_ip)
    assert wait_until(
        lambda: sorted(answers("x/a", "db.y", *ask) or []) == sorted([ip["a"], ip["b"]])
    )
    assert answers("x/a", "db-0.db.y", "--tcp", *ask) == [ip["a"]]
    assert wait_until(
        lambda: (
            sorted(answers("x/a", "db.y", "--family", "6", *ask) or [])
            == sorted([ip6["a"], ip6["b"]])
        )
    )
    assert answers("x/a", "db-0.db.y", "--family", "6", *ask) == [ip6["a"]]
    # The slices change: b goes unready, c becomes ready, a loses its hostname.
    apply(model, *slices(endpoints("a", "c")))
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


def test_kube_dns_made_dual_stack_answers_on_its_ipv6_cluster_ip(model, dns_ip):
    """THROUGH THE CLUSTERIP of each family: kubeadm makes kube-dns single-stack; a user
    who asks for both families gets a second address that answers too."""

    def policy(name: str) -> None:
        body = {"spec": {"ipFamilyPolicy": name}}
        model("patch", "service", "-n", "kube-system", "kube-dns", "-p", json.dumps(body))

    policy("PreferDualStack")
    try:
        v4, v6 = cluster_ips(model, "kube-system", "kube-dns")
        assert v4 == str(DNS_SERVICE_IP)
        assert wait_until(lambda: answers("x/a", "web.z", "--server", v6) == [WEB_IP])
        assert answers("x/a", "kube-dns.kube-system", "--server", v6, "--family", "6") == [v6]
    finally:
        policy("SingleStack")  # drops the second family
    assert cluster_ips(model, "kube-system", "kube-dns") == [str(DNS_SERVICE_IP)]


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


def test_an_ipv6_only_lab_resolves_names_through_kube_dns_at_its_ipv6_address():
    """THROUGH THE CLUSTERIP, in `lab up --ip-families 6`: one node, one client pod."""
    picket("lab", "down")
    try:
        up = picket("lab", "up", "--nodes", "1", "--backend", "none", "--ip-families", "6")
        kubectl = Kubectl(up.stdout.strip().splitlines()[-1])
        client = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": "x", "name": "a"},
            "spec": {"containers": [{"name": "c", "image": "agnhost"}]},
        }
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}
        apply(kubectl, namespace, client, service("x", "web", None, [service_port("http", 80)]))
        kubectl("wait", "--for=condition=Ready", "pod", "-n", "x", "a", "--timeout=30s")
        [web] = cluster_ips(kubectl, "x", "web")
        assert family_of(web) == 6
        assert wait_until(lambda: answers("x/a", "web") == [web])
        assert answers("x/a", "kube-dns.kube-system", "--tcp") == [str(DNS_SERVICE_IP6)]
        assert resolve("x/a", "web", "--family", "4") == (1, ["NODATA"])
    finally:
        picket("lab", "down")
