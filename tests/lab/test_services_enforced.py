"""Policy through Services, on both backends: a connection to a ClusterIP or a NodePort
gets the verdict of the same connection to the backend pod kube-proxy chose, judged on
the client's own address (docs/semantics.md, "Services").

The lab's kube-proxy programs the Services (selector Services: the lab's EndpointSlice
controller fills their slices), the agents enforce; probes go from pods' namespaces to
ClusterIPs and from the outside host to node ports. One lab per backend."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from lab.config import EXTERNAL_ADDRESS, EXTERNAL_ADDRESS6, EXTERNAL_NS, LabNode, state_dir
from lab.netns import entered
from lab.probe import probe
from tests.support.enforcement import apply
from tests.support.lab_cli import Kubectl, LabPod, lab_pods, model_lab, wait_until
from tests.support.policies import BACKENDS, netpol, ns_peer, pods_peer, sel
from tests.support.services import published

NODES = ["node-1", "node-2"]


@pytest.fixture(scope="module", params=BACKENDS)
def cluster(request: pytest.FixtureRequest) -> Iterator[tuple[Kubectl, dict[str, LabPod]]]:
    with model_lab(request.param) as kubectl:
        yield kubectl, lab_pods(kubectl)


def _service(
    name: str, pod: str, port: int = 8080, target: Any = 80, ns: str = "y", **spec: Any
) -> dict:
    """A Service in `ns` selecting one pod of the model (labels `pod: <name>`)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": ns, "name": name},
        "spec": {
            "selector": {"pod": pod},
            "ports": [{"name": "web", "port": port, "targetPort": target, "protocol": "TCP"}],
            **spec,
        },
    }


def _published(
    kubectl: Kubectl, service: dict, backend: LabPod, family: int | None = None
) -> dict[str, Any]:
    """Apply `service` and wait until every node's kube-proxy DNATs it to `backend`
    (to its address of `family`, if given)."""
    ip = backend.ip if family is None else backend.address(family)
    return published(kubectl, service, ip, NODES)


def _probe(netns: str, ip: str, port: int, source: str | None = None) -> str:
    result = asyncio.run(probe(netns, ip, port, "TCP", 1.0, source))
    return str(result)


def _agent_logs() -> str:
    logs = [state_dir() / "logs" / f"agent-{node}.log" for node in NODES]
    return "\n".join(line for log in logs for line in log.read_text().splitlines()[-8:])


def _node_address(node: str, family: int = 4) -> str:
    lab_node = LabNode(int(node.rpartition("-")[2]))
    return str(lab_node.address if family == 4 else lab_node.address6)


def _outside(family: int) -> tuple[str, dict, dict]:
    """The outside host's address of `family`, an ipBlock of it alone and one of every
    lab address of that family but it."""
    if family == 4:
        address, lab = str(EXTERNAL_ADDRESS), "198.18.0.0/15"
    else:
        address, lab = str(EXTERNAL_ADDRESS6), "2001:2::/48"
    alone = f"{address}/{32 if family == 4 else 128}"
    return address, {"cidr": alone}, {"cidr": lab, "except": [alone]}


def _node_port_service(name: str, pod: str, port: int, traffic: str, family: int) -> dict:
    """A NodePort Service of `pod`, dual-stack for IPv6 (the lab's primary family is
    IPv4: a single-stack Service would be IPv4's)."""
    families = {} if family == 4 else {"ipFamilyPolicy": "RequireDualStack"}
    return _service(
        name, pod, port=port, type="NodePort", externalTrafficPolicy=traffic, **families
    )


def test_egress_isolated_client_reaches_an_allowed_backend_through_its_cluster_ip(cluster):
    kubectl, pods = cluster
    apply(
        kubectl,
        netpol(
            "x",
            "a-to-b",
            {
                "podSelector": sel(pod="a"),
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [{**ns_peer(ns="y"), **pods_peer(pod="b")}], "ports": [{"port": 80}]}
                ],
            },
        ),
    )
    to_b = _published(kubectl, _service("to-b", "b"), pods["y/b"])
    to_c = _published(kubectl, _service("to-c", "c"), pods["y/c"])
    client = pods["x/a"].netns
    assert wait_until(lambda: _probe(client, to_c["spec"]["clusterIP"], 8080) == "timeout")
    assert _probe(client, to_b["spec"]["clusterIP"], 8080) == "connected y/b"
    assert _probe(client, pods["y/b"].ip, 80) == "connected y/b"


def test_ingress_isolation_holds_through_a_cluster_ip_and_a_named_target_port(cluster):
    kubectl, pods = cluster
    apply(
        kubectl,
        netpol(
            "y",
            "a-only",
            {
                "podSelector": sel(pod="a"),
                "ingress": [
                    {"from": [{**ns_peer(ns="z"), **pods_peer(pod="a")}], "ports": [{"port": 80}]}
                ],
            },
        ),
    )
    named = _published(kubectl, _service("to-a", "a", target="serve-80-tcp"), pods["y/a"])
    ip = named["spec"]["clusterIP"]
    assert wait_until(lambda: _probe(pods["x/b"].netns, ip, 8080) == "timeout")
    assert _probe(pods["z/a"].netns, ip, 8080) == "connected y/a"
    assert _probe(pods["z/b"].netns, ip, 8080) == "timeout"


def test_a_pod_reaches_itself_through_its_own_service(cluster):
    kubectl, pods = cluster
    apply(
        kubectl,
        netpol(
            "y",
            "deny-c",
            {
                "podSelector": sel(pod="c"),
                "ingress": [],
                "egress": [],
                "policyTypes": ["Ingress", "Egress"],
            },
        ),
    )
    own = _published(kubectl, _service("to-c-self", "c", port=8081), pods["y/c"])
    assert wait_until(lambda: _probe(pods["x/a"].netns, pods["y/c"].ip, 80) == "timeout")
    assert _probe(pods["y/c"].netns, own["spec"]["clusterIP"], 8081) == "connected y/c"


class _Line:
    """A long-lived TCP connection from a namespace through a Service; the responder
    echoes."""

    def __init__(self, netns: str, ip: str, port: int, source: str | None = None) -> None:
        with entered(netns):
            self.sock = socket.create_connection(
                (ip, port), timeout=2, source_address=(source, 0) if source else None
            )
        self.sock.settimeout(2)
        self.sock.recv(4096)  # the identity line

    def alive(self) -> bool:
        try:
            self.sock.sendall(b"ping\n")
            return b"ping" in self.sock.recv(4096)
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()


def test_an_allowed_connection_through_a_cluster_ip_survives_unrelated_narrowing(cluster):
    kubectl, pods = cluster
    apply(
        kubectl,
        netpol(
            "y",
            "b-from-x",
            {"podSelector": sel(pod="b"), "ingress": [{"from": [ns_peer(ns="x")]}]},
        ),
    )
    svc = _published(kubectl, _service("keep-b", "b", port=8082), pods["y/b"])
    assert wait_until(lambda: _probe(pods["z/a"].netns, pods["y/b"].ip, 80) == "timeout")
    line = _Line(pods["x/a"].netns, svc["spec"]["clusterIP"], 8082)
    try:
        for i in range(100):
            # Each change narrows z/b's ingress (one port fewer than before), so every
            # agent removes the conntrack entries it now forbids, judging all of them.
            port = 80 if i % 2 else 81
            apply(
                kubectl,
                netpol(
                    "z",
                    "narrowing",
                    {"podSelector": sel(pod="b"), "ingress": [{"ports": [{"port": port}]}]},
                ),
            )
            if i % 10 == 9:
                assert line.alive(), f"cut after {i + 1} unrelated narrowing changes"
        assert wait_until(lambda: _probe(pods["x/c"].netns, pods["z/b"].ip, 81) == "timeout")
        assert line.alive()
    finally:
        line.close()


def _client_beside(pods: dict[str, LabPod], server: LabPod, placement: str) -> LabPod:
    """A client on the server's node ("same node") or on the other ("across nodes"),
    where the lab put the pods: one no earlier policy of the module isolates for egress
    (x/a is, by the first test) and the forbidding policy does not admit (z/a)."""
    for ref in ("x/b", "x/c", "y/a", "y/b", "y/c"):
        if ref in pods and (pods[ref].node == server.node) == (placement == "same node"):
            return pods[ref]
    pytest.fail(f"the lab put no client pod {placement} as {server.ref} ({server.node})")


@pytest.mark.parametrize("route", ["direct", "cluster-ip"])
@pytest.mark.parametrize("placement", ["same node", "across nodes"])
def test_a_connection_stops_when_policy_forbids_it(cluster, placement, route):
    """Direct to z/c and through a ClusterIP in front of it, the client on z/c's node
    and on the other: cut within 10 s once a policy admits only z/a into z/c."""
    kubectl, pods = cluster
    server, client = pods["z/c"], _client_beside(pods, pods["z/c"], placement)
    if route == "direct":
        address, port = server.ip, 81
    else:
        port = 8083 if placement == "same node" else 8084
        name = f"cut-c-{port}"
        svc = _published(kubectl, _service(name, "c", port=port, target=81, ns="z"), server)
        address = svc["spec"]["clusterIP"]
    line = _Line(client.netns, address, port)
    try:
        assert line.alive()
        apply(
            kubectl,
            netpol(
                "z",
                "c-from-a",
                {"podSelector": sel(pod="c"), "ingress": [{"from": [pods_peer(pod="a")]}]},
            ),
        )
        assert wait_until(lambda: not line.alive(), 10), (
            f"the forbidden connection {client.ref} ({client.node}) -> {address}:{port} "
            f"({server.ref} on {server.node}) lives on; agents: {_agent_logs()}"
        )
    finally:
        line.close()
        kubectl("delete", "networkpolicy", "-n", "z", "c-from-a", "--ignore-not-found")


# With Local, kube-proxy sends outside clients only to backends on the receiving node
# (another node has none to send to: it drops them, whatever the policy).
@pytest.mark.parametrize(
    "traffic_policy,receiving,family",
    [
        ("Cluster", "backend's node", 4),
        ("Cluster", "other node", 4),
        ("Local", "backend's node", 4),
        ("Cluster", "other node", 6),
    ],
)
@pytest.mark.parametrize("admitting", [True, False])
def test_node_port_is_judged_on_the_outside_clients_own_address(
    cluster, traffic_policy, receiving, family, admitting
):
    """The ipBlock admits only the outside host, or every lab address but the outside
    host: kube-proxy's masquerade (Cluster) rewrites the client to the receiving node's
    address, which must not decide, on the receiving node nor, when the backend runs on
    the other node, on the backend's (the receiving node judges the backend's ingress on
    the client's address and marks what it admitted: the transit mark). IPv6 goes
    through the other node: the transit mark of both families."""
    kubectl, pods = cluster
    backend = pods["y/a"]
    remote = receiving == "other node"
    name = (
        f"np-{traffic_policy.lower()}{'-remote' if remote else ''}{'-6' if family == 6 else ''}"
        f"-{'in' if admitting else 'out'}"
    )
    outside, alone, all_but = _outside(family)
    apply(
        kubectl,
        netpol(
            "y",
            "from-outside",
            {
                "podSelector": sel(pod="a"),
                "ingress": [{"from": [{"ipBlock": alone if admitting else all_but}]}],
            },
        ),
    )
    service = _node_port_service(name, "a", 8090, traffic_policy, family)
    svc = _published(kubectl, service, backend, family)
    node_port = svc["spec"]["ports"][0]["nodePort"]
    address = _node_address(next(n for n in NODES if (n == backend.node) != remote), family)
    if admitting:
        # y/a isolated on its node (no policy admits x/b), so that the outcome is the
        # policy's and not the time before any policy.
        assert wait_until(lambda: _probe(pods["x/b"].netns, backend.ip, 80) == "timeout", 10)
    want = "connected y/a" if admitting else "timeout"
    seen: list[str] = []

    def outcome() -> bool:
        seen.append(_probe(EXTERNAL_NS, address, node_port, outside))
        return seen[-1] == want

    # Until the agents have the policy (y/a's other policies deny the outside host).
    assert wait_until(outcome, 10), (traffic_policy, receiving, seen[-3:], _agent_logs())
    if not admitting:  # and it stays so
        again = [_probe(EXTERNAL_NS, address, node_port, outside) for _ in range(3)]
        assert again == ["timeout"] * 3, again


def _reaches(client: LabPod, server: LabPod, port: int) -> bool:
    return _probe(client.netns, server.ip, port).startswith("connected")


@pytest.mark.parametrize("family", [4, 6])
def test_a_node_port_connection_through_the_other_node_is_kept_and_cut_as_policy_says(
    cluster, family
):
    """Outside client -> the node without the backend -> (DNAT, masquerade) -> y/b on the
    other node. The backend's node holds the connection as judged upstream (the
    transit mark): narrowing changes must not cut it there; the receiving node, which
    judged it, cuts it when the backend's policy stops admitting the client."""
    kubectl, pods = cluster
    backend = pods["y/b"]
    outside, alone, all_but = _outside(family)
    admit = {"ingress": [{"from": [{"ipBlock": alone}]}]}
    apply(kubectl, netpol("y", "b-from-outside", {"podSelector": sel(pod="b"), **admit}))
    service = _node_port_service(f"np-keep-{family}", "b", 8094 + family, "Cluster", family)
    svc = _published(kubectl, service, backend, family)
    node_port = svc["spec"]["ports"][0]["nodePort"]
    receiving = _node_address(next(n for n in NODES if n != backend.node), family)
    # Isolated on its node (only namespace x and the outside host are admitted).
    assert wait_until(lambda: _probe(pods["z/a"].netns, backend.ip, 80) == "timeout", 10)
    assert wait_until(
        lambda: _probe(EXTERNAL_NS, receiving, node_port, outside) == "connected y/b", 10
    ), _agent_logs()
    line = _Line(EXTERNAL_NS, receiving, node_port, outside)
    try:
        # Narrowing every z pod's ingress (a port fewer each time after the first; x/b,
        # not egress-isolated, witnesses each change), so
        # that both agents judge their conntrack entries after each change.
        witnesses = {p.node: p for ref, p in sorted(pods.items()) if ref.startswith("z/")}
        for port in (81, 80, 81, 80):
            spec = {"podSelector": {}, "ingress": [{"ports": [{"port": port}]}]}
            apply(kubectl, netpol("z", "narrow-all", spec))
            for pod in witnesses.values():
                assert wait_until(lambda pod=pod, port=port: _reaches(pods["x/b"], pod, port), 10)
            assert line.alive(), f"cut by an unrelated narrowing change (z to port {port})"
        deny = {"ingress": [{"from": [{"ipBlock": all_but}]}]}
        apply(kubectl, netpol("y", "b-from-outside", {"podSelector": sel(pod="b"), **deny}))
        assert wait_until(lambda: not line.alive(), 10), (
            f"the forbidden NodePort connection lives on; agents: {_agent_logs()}"
        )
    finally:
        line.close()
