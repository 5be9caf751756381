"""The cluster DNS's records from Services and EndpointSlices, and dnsmasq's hosts file
(pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lab.dns.records import cluster_ip, cluster_ips, render_hosts, service_records

ZONE = "cluster.local"


def service(ns, name, cluster_ip=None, kind=None, **spec):
    body = {"metadata": {"namespace": ns, "name": name}, "spec": dict(spec)}
    if cluster_ip is not None:
        body["spec"]["clusterIP"] = cluster_ip
    if kind is not None:
        body["spec"]["type"] = kind
    return body


def endpoint_slice(ns, service_name, *endpoints, address_type="IPv4", name=None):
    return {
        "metadata": {
            "namespace": ns,
            "name": name or f"{service_name}-abcde",
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": address_type,
        "endpoints": list(endpoints),
    }


def ep(*addresses, ready=True, hostname=None):
    out = {"addresses": list(addresses)}
    if ready is not None:
        out["conditions"] = {"ready": ready}
    if hostname:
        out["hostname"] = hostname
    return out


def test_a_service_with_a_cluster_ip_resolves_to_it():
    services = [
        service("x", "web", "198.19.240.20"),
        service("kube-system", "kube-dns", "198.19.240.10"),
    ]
    assert service_records(services, [], ZONE) == [
        ("kube-dns.kube-system.svc.cluster.local", "198.19.240.10"),
        ("web.x.svc.cluster.local", "198.19.240.20"),
    ]


def test_the_cluster_ip_wins_over_endpoints_for_a_normal_service():
    services = [service("x", "web", "198.19.240.20")]
    slices = [endpoint_slice("x", "web", ep("198.18.1.5"))]
    assert service_records(services, slices, ZONE) == [("web.x.svc.cluster.local", "198.19.240.20")]


def test_headless_resolves_to_ready_endpoints_of_all_its_slices():
    services = [service("x", "db", "None")]
    slices = [
        endpoint_slice("x", "db", ep("198.18.1.5"), ep("198.18.2.7", ready=False), name="db-1"),
        endpoint_slice("x", "db", ep("198.18.2.9", ready=None), name="db-2"),  # nil = ready
        endpoint_slice("y", "db", ep("198.18.1.99")),  # another namespace's Service
        endpoint_slice("x", "other", ep("198.18.1.98")),  # another Service
        endpoint_slice("x", "db", ep("2001:2::5"), address_type="IPv6", name="db-3"),
        endpoint_slice("x", "db", ep("db.example."), address_type="FQDN", name="db-4"),
    ]
    assert service_records(services, slices, ZONE) == [
        ("db.x.svc.cluster.local", "198.18.1.5"),
        ("db.x.svc.cluster.local", "198.18.2.9"),
        ("db.x.svc.cluster.local", "2001:2::5"),
    ]


def test_headless_endpoint_hostnames_get_their_own_name():
    services = [service("x", "db", "None")]
    slices = [endpoint_slice("x", "db", ep("198.18.1.5", hostname="db-0"))]
    assert service_records(services, slices, ZONE) == [
        ("db-0.db.x.svc.cluster.local", "198.18.1.5"),
        ("db.x.svc.cluster.local", "198.18.1.5"),
    ]


def test_services_without_an_address_have_no_record():
    services = [
        service("x", "pending"),  # no ClusterIP allocated yet
        service("x", "ext", kind="ExternalName", externalName="example.com"),
        service("x", "bad", "not-an-address"),
    ]
    assert service_records(services, [endpoint_slice("x", "pending", ep("198.18.1.5"))], ZONE) == []


def test_each_cluster_ip_of_a_service_is_a_record_of_its_family():
    services = [
        service("x", "dual", "198.19.240.30", clusterIPs=["198.19.240.30", "2001:2:0:ff00::30"]),
        service("x", "six", "2001:2:0:ff00:0::31"),  # an IPv6-only cluster's, not canonical
        service(
            "x", "six-first", "2001:2:0:ff00::32", clusterIPs=["2001:2:0:ff00::32", "198.19.240.32"]
        ),
    ]
    assert service_records(services, [], ZONE) == [
        ("dual.x.svc.cluster.local", "198.19.240.30"),
        ("dual.x.svc.cluster.local", "2001:2:0:ff00::30"),
        ("six-first.x.svc.cluster.local", "198.19.240.32"),
        ("six-first.x.svc.cluster.local", "2001:2:0:ff00::32"),
        ("six.x.svc.cluster.local", "2001:2:0:ff00::31"),
    ]


def test_cluster_ips_are_the_primary_first_and_one_of_a_family_is_asked_by_family():
    svc = service("x", "web", "2001:2::10", clusterIPs=["2001:2::10", "198.19.240.30"])
    assert cluster_ips(svc) == ["2001:2::10", "198.19.240.30"]
    assert (cluster_ip(svc), cluster_ip(svc, 4), cluster_ip(svc, 6)) == (
        "2001:2::10",
        "198.19.240.30",
        "2001:2::10",
    )
    assert cluster_ip(service("x", "web", "198.19.240.30"), 6) is None
    assert cluster_ips(service("x", "db", "None", clusterIPs=["None"])) == []


def test_a_dual_stack_headless_service_answers_each_family_from_its_slices():
    services = [service("x", "db", "None", clusterIPs=["None"], ipFamilyPolicy="RequireDualStack")]
    slices = [
        endpoint_slice("x", "db", ep("198.18.1.5", hostname="db-0"), ep("198.18.2.7"), name="db-4"),
        endpoint_slice(
            "x",
            "db",
            ep("2001:2:0:1::5", hostname="db-0"),
            ep("2001:2:0:2::7", ready=False),
            ep("198.18.1.99"),  # not of the slice's family: no endpoint of it
            address_type="IPv6",
            name="db-6",
        ),
    ]
    assert service_records(services, slices, ZONE) == [
        ("db-0.db.x.svc.cluster.local", "198.18.1.5"),
        ("db-0.db.x.svc.cluster.local", "2001:2:0:1::5"),
        ("db.x.svc.cluster.local", "198.18.1.5"),
        ("db.x.svc.cluster.local", "198.18.2.7"),
        ("db.x.svc.cluster.local", "2001:2:0:1::5"),
    ]


def test_hosts_file_is_one_line_per_record():
    records = [("a.x.svc.cluster.local", "198.19.240.1"), ("a.x.svc.cluster.local", "2001:2::1")]
    assert render_hosts(records) == (
        "198.19.240.1 a.x.svc.cluster.local\n2001:2::1 a.x.svc.cluster.local\n"
    )
    assert render_hosts([]) == ""


names = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
ipv4s = st.integers(0, 2**12 - 1).map(lambda i: f"198.19.{240 + i // 256}.{i % 256}")
addresses = ipv4s | st.integers(1, 2**16 - 1).map(lambda i: f"2001:2:0:ff00::{i:x}")


@given(st.lists(st.tuples(names, names, addresses), max_size=20))
def test_records_are_sorted_unique_and_in_the_zone(triples):
    services = [service(ns, name, ip) for ns, name, ip in triples]
    records = service_records(services, [], ZONE)
    assert records == sorted(set(records))
    assert all(name.endswith(".svc.cluster.local") for name, _ in records)
    assert {(f"{n}.{ns}.svc.cluster.local", ip) for ns, n, ip in triples} >= set(records)
