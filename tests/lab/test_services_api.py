"""Services and EndpointSlices in the lab, through the real kubectl against the lab API
server: ClusterIPs and NodePorts allocated as kube-apiserver allocates them, its 422s,
the columns `kubectl get` prints, `kubectl expose`, and EndpointSlices that follow pods
(readiness, labels, named ports) as kube-controller-manager's controller keeps them."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from typing import Any

from lab.config import NODEPORT_RANGE, SERVICE_CIDR
from tests.support.lab_cli import Kubectl, wait_until

SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"


def service(ns: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def apply(kubectl: Kubectl, *objects: dict[str, Any], check: bool = True):
    doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    return kubectl("apply", "-f", "-", stdin=json.dumps(doc), check=check)


def slices(kubectl: Kubectl, ns: str, svc: str) -> list[dict[str, Any]]:
    found = kubectl.json("get", "endpointslices", "-n", ns, "-l", f"{SERVICE_NAME}={svc}")
    return found["items"]


def endpoints(kubectl: Kubectl, ns: str, svc: str) -> set[tuple]:
    """(address, ports, ready) of every endpoint of the Service's slices."""
    out = set()
    for s in slices(kubectl, ns, svc):
        ports = tuple(sorted((p["port"], p["protocol"]) for p in s["ports"] or []))
        for e in s["endpoints"] or []:
            out.add((e["addresses"][0], ports, e["conditions"]["ready"]))
    return out


def pod_ip(kubectl: Kubectl, ns: str, name: str) -> str:
    return kubectl.json("get", "pod", "-n", ns, name)["status"]["podIP"]


def namespace(kubectl: Kubectl, name: str) -> None:
    # `kubectl apply`, not `kubectl create namespace`: the lab server speaks no protobuf.
    apply(kubectl, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def header(text: str) -> list[str]:
    return text.splitlines()[0].split()


def test_cluster_ips_come_from_the_service_range(model):
    apply(model, service("x", "dns", clusterIP="198.19.240.12", ports=[{"port": 53}]))
    apply(model, service("x", "web", selector={"pod": "a"}, ports=[{"port": 80}]))
    pinned = model.json("get", "svc", "-n", "x", "dns")["spec"]
    web = model.json("get", "svc", "-n", "x", "web")["spec"]
    assert pinned["clusterIPs"] == ["198.19.240.12"]
    assert IPv4Address(web["clusterIP"]) in SERVICE_CIDR
    assert web["clusterIP"] != pinned["clusterIP"]
    assert (web["ipFamilies"], web["ipFamilyPolicy"]) == (["IPv4"], "SingleStack")
    # Applying the manifest again keeps the address it was given.
    apply(model, service("x", "web", selector={"pod": "a"}, ports=[{"port": 80}]))
    assert model.json("get", "svc", "-n", "x", "web")["spec"]["clusterIP"] == web["clusterIP"]
    model("delete", "svc", "-n", "x", "dns", "web")
    # Deleting a Service frees its address for the next one that asks for it.
    apply(model, service("y", "dns", clusterIP="198.19.240.12", ports=[{"port": 53}]))
    model("delete", "svc", "-n", "y", "dns")


def test_refusals_name_the_field(model):
    apply(model, service("x", "taken", clusterIP="198.19.240.11", ports=[{"port": 1}]))
    cases = [
        (
            service("x", "twin", clusterIP="198.19.240.11", ports=[{"port": 1}]),
            'The Service "twin" is invalid: spec.clusterIPs: Invalid value: ["198.19.240.11"]: '
            "failed to allocate IP 198.19.240.11: provided IP is already allocated",
        ),
        (
            service("x", "far", clusterIP="10.96.0.10", ports=[{"port": 1}]),
            "the provided IP (10.96.0.10) is not in the valid range. "
            "The range of valid IPs is 198.19.240.0/20",
        ),
        (
            service("x", "np", type="NodePort", ports=[{"port": 80, "nodePort": 8080}]),
            "spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid "
            "range. The range of valid ports is 30000-32767",
        ),
        (
            service("x", "two", ports=[{"port": 80}, {"port": 81, "protocol": "ICMP"}]),
            "spec.ports[0].name: Required value",
        ),
        (
            service("x", "bad-target", ports=[{"port": 80, "targetPort": "Web_Port"}]),
            'spec.ports[0].targetPort: Invalid value: "Web_Port"',
        ),
    ]
    for body, message in cases:
        proc = apply(model, body, check=False)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    model("delete", "svc", "-n", "x", "taken")


def test_node_ports_are_allocated_and_released(model):
    apply(model, service("x", "np", type="NodePort", selector={"pod": "a"}, ports=[{"port": 80}]))
    got = model.json("get", "svc", "-n", "x", "np")["spec"]
    assert got["ports"][0]["nodePort"] in NODEPORT_RANGE
    assert got["externalTrafficPolicy"] == "Cluster"
    model("patch", "svc", "-n", "x", "np", "-p", '{"spec": {"type": "ClusterIP"}}')
    back = model.json("get", "svc", "-n", "x", "np")["spec"]
    assert "nodePort" not in back["ports"][0] and back["clusterIP"] == got["clusterIP"]
    # The port is free again: another Service may ask for it.
    freed = got["ports"][0]["nodePort"]
    apply(model, service("x", "np2", type="NodePort", ports=[{"port": 80, "nodePort": freed}]))
    model("delete", "svc", "-n", "x", "np", "np2")


def test_get_prints_the_columns_kubectl_prints(model):
    ports = [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]
    apply(
        model,
        service("y", "web", selector={"pod": "b"}, ports=ports),
        service("y", "headless", clusterIP="None", selector={"pod": "b"}, ports=ports[:1]),
    )
    out = model("get", "svc", "-n", "y").stdout
    assert header(out) == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    ip = model.json("get", "svc", "-n", "y", "web")["spec"]["clusterIP"]
    assert rows["web"][:5] == ["web", "ClusterIP", ip, "<none>", "80/TCP,53/UDP"]
    assert rows["headless"][:5] == ["headless", "ClusterIP", "None", "<none>", "80/TCP"]
    wide = model("get", "svc", "-n", "y", "-o", "wide").stdout
    assert header(wide)[-1] == "SELECTOR" and wide.splitlines()[1].split()[-1] == "pod=b"
    b = pod_ip(model, "y", "b")
    assert wait_until(
        lambda: endpoints(model, "y", "web") == {(b, ((53, "UDP"), (80, "TCP")), True)}
    )
    out = model("get", "endpointslices", "-n", "y", "-l", f"{SERVICE_NAME}=web").stdout
    assert header(out) == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    name, address_type, port_text, endpoint_text = out.splitlines()[1].split()[:4]
    assert name.startswith("web-") and address_type == "IPv4"
    assert sorted(port_text.split(",")) == ["53", "80"] and endpoint_text == b
    (headless,) = slices(model, "y", "headless")
    assert headless["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    assert "Endpoints:" in model("describe", "svc", "-n", "y", "web").stdout
    model("delete", "svc", "-n", "y", "web", "headless")


def test_expose_a_pod(model):
    model("expose", "pod/a", "-n", "z", "--port", "80")
    spec = model.json("get", "svc", "-n", "z", "a")["spec"]
    # kubectl exposes every protocol the pod serves port 80 on.
    assert sorted(p["protocol"] for p in spec["ports"]) == ["SCTP", "TCP", "UDP"]
    assert spec["selector"] == {"pod": "a"}
    a = pod_ip(model, "z", "a")
    want = {(a, ((80, "SCTP"), (80, "TCP"), (80, "UDP")), True)}
    assert wait_until(lambda: endpoints(model, "z", "a") == want)
    model("delete", "svc", "-n", "z", "a")


def test_expose_a_deployment_as_node_port(kubectl):
    namespace(kubectl, "shop")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 8080}]}]
                },
            },
        },
    }
    apply(kubectl, deployment)
    kubectl(
        "expose",
        "deployment/web",
        "-n",
        "shop",
        "--port",
        "80",
        "--target-port",
        "8080",
        "--type",
        "NodePort",
    )
    spec = kubectl.json("get", "svc", "-n", "shop", "web")["spec"]
    assert spec["type"] == "NodePort" and spec["selector"] == {"app": "web"}
    assert spec["ports"][0]["targetPort"] == 8080 and spec["ports"][0]["nodePort"] in NODEPORT_RANGE
    kubectl("wait", "--for=condition=Ready", "pod", "--all", "-n", "shop", "--timeout=60s")
    ips = {p["status"]["podIP"] for p in kubectl.json("get", "pods", "-n", "shop")["items"]}
    want = {(ip, ((8080, "TCP"),), True) for ip in ips}
    assert len(ips) == 2 and wait_until(lambda: endpoints(kubectl, "shop", "web") == want)
    out = kubectl("get", "svc", "-n", "shop", "web").stdout
    assert f"80:{spec['ports'][0]['nodePort']}/TCP" in out.splitlines()[1]
    kubectl("delete", "namespace", "shop")


def test_slices_follow_readiness_and_labels(model):
    apply(model, service("x", "b", selector={"role": "backend"}, ports=[{"port": 80}]))
    b = pod_ip(model, "x", "b")
    assert wait_until(lambda: endpoints(model, "x", "b") == set())
    model("label", "pod", "-n", "x", "b", "role=backend")
    assert wait_until(lambda: endpoints(model, "x", "b") == {(b, ((80, "TCP"),), True)})
    # The pod stops being ready, as a failing readiness probe would make its kubelet say.
    not_ready = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    model("patch", "pod", "-n", "x", "b", "--subresource=status", "-p", json.dumps(not_ready))
    assert wait_until(lambda: endpoints(model, "x", "b") == {(b, ((80, "TCP"),), False)})
    (slice_,) = slices(model, "x", "b")
    assert slice_["endpoints"][0]["conditions"] == {
        "ready": False,
        "serving": False,
        "terminating": False,
    }
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    model("patch", "pod", "-n", "x", "b", "--subresource=status", "-p", json.dumps(ready))
    assert wait_until(lambda: endpoints(model, "x", "b") == {(b, ((80, "TCP"),), True)})
    model("label", "pod", "-n", "x", "b", "role-")
    assert wait_until(lambda: endpoints(model, "x", "b") == set())
    # With no endpoint left one empty slice stays, as upstream keeps a placeholder.
    (placeholder,) = slices(model, "x", "b")
    assert placeholder["endpoints"] is None and placeholder["ports"] is None
    model("delete", "svc", "-n", "x", "b")


def test_a_named_target_port_resolves_per_pod(kubectl):
    namespace(kubectl, "named")
    pods = [
        ("v1", [{"name": "http", "containerPort": 8080}]),
        ("v2", [{"name": "http", "containerPort": 9090}]),
        ("bare", [{"name": "other", "containerPort": 7070}]),
    ]
    apply(
        kubectl,
        *(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "named", "labels": {"app": "api"}},
                "spec": {"containers": [{"name": "c", "image": "i", "ports": ports}]},
            }
            for name, ports in pods
        ),
        service(
            "named", "api", selector={"app": "api"}, ports=[{"port": 80, "targetPort": "http"}]
        ),
    )
    kubectl("wait", "--for=condition=Ready", "pod", "--all", "-n", "named", "--timeout=60s")
    ips = {name: pod_ip(kubectl, "named", name) for name, _ in pods}
    want = {
        (ips["v1"], ((8080, "TCP"),), True),
        (ips["v2"], ((9090, "TCP"),), True),
        # A pod without a port of that name is an endpoint without that port.
        (ips["bare"], (), True),
    }
    assert wait_until(lambda: endpoints(kubectl, "named", "api") == want)
    assert len(slices(kubectl, "named", "api")) == 3
    kubectl("delete", "namespace", "named")


def test_a_selectorless_service_keeps_the_slices_a_user_writes(model):
    manual = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "outside-1", "namespace": "y", "labels": {SERVICE_NAME: "outside"}},
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 443, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["198.19.200.7"], "conditions": {"ready": True}}],
    }
    apply(model, service("y", "outside", ports=[{"port": 443}]), manual)
    before = slices(model, "y", "outside")
    # A Service with a selector, made after: once its slice is there the controller has
    # seen everything before it, the user's slice included.
    apply(model, service("y", "after", selector={"pod": "a"}, ports=[{"port": 80}]))
    assert wait_until(lambda: endpoints(model, "y", "after") != set())
    after = slices(model, "y", "outside")
    assert [s["metadata"]["resourceVersion"] for s in after] == [
        s["metadata"]["resourceVersion"] for s in before
    ]
    assert after[0]["endpoints"][0]["addresses"] == ["198.19.200.7"]
    assert MANAGED_BY not in after[0]["metadata"]["labels"]
    model("delete", "svc", "-n", "y", "outside", "after")
    model("delete", "endpointslice", "-n", "y", "outside-1")


def test_slices_go_with_their_service_or_its_selector(model):
    apply(
        model,
        service("z", "gone", selector={"pod": "b"}, ports=[{"port": 80}]),
        service("z", "unselected", selector={"pod": "b"}, ports=[{"port": 80}]),
    )
    assert wait_until(lambda: len(slices(model, "z", "gone")) == 1)
    assert wait_until(lambda: len(slices(model, "z", "unselected")) == 1)
    (owned,) = slices(model, "z", "gone")
    assert owned["metadata"]["ownerReferences"][0]["kind"] == "Service"
    model("delete", "svc", "-n", "z", "gone")
    assert wait_until(lambda: slices(model, "z", "gone") == [])
    model(
        "patch",
        "svc",
        "-n",
        "z",
        "unselected",
        "--type=json",
        "-p",
        '[{"op": "remove", "path": "/spec/selector"}]',
    )
    assert wait_until(lambda: slices(model, "z", "unselected") == [])
    model("delete", "svc", "-n", "z", "unselected")
