"""The lab kube-proxy on a real kernel: Services written as an operator would (explicit
cluster IPs and node ports, EndpointSlices by hand), reached through the nat rules it
programs in each node's namespace, from pods and from the outside host.

One lab (2 nodes, backend none) for the module; each test uses Services of its own.
Backends: kp/one on node-1, kp/two on node-2, kp/three on node-1; each answers with its
`namespace/name`, so a probe says which endpoint kube-proxy chose."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from lab.cluster import core_api, get_pod
from lab.config import EXTERNAL_ADDRESS, EXTERNAL_NS, LabNode, state_dir
from lab.kubeproxy import names
from lab.kubeproxy.objects import service_ports, slice_endpoints
from lab.kubeproxy.render import JUMPS, NodeContext, render
from lab.kubeproxy.status import programmed, wait_endpoints, wait_programmed
from lab.probe import ProbeResult, probe
from lab.processes import running
from tests.support.builders import namespace, serve_ports
from tests.support.enforcement import apply
from tests.support.lab_cli import Kubectl, picket, wait_until
from tests.support.services import endpoint, endpoint_slice, service, service_port

NODES = [LabNode(1), LabNode(2)]
NODE_NAMES = [n.name for n in NODES]
BACKENDS = {"one": "node-1", "two": "node-2", "three": "node-1"}
PROTOCOLS = ("TCP", "UDP", "SCTP")


@pytest.fixture(scope="module")
def pods(kubectl: Kubectl, lab: str) -> dict[str, tuple[str, str]]:
    """name -> (pod IP, network namespace) of kp/one, kp/two, kp/three."""
    objects = [namespace("kp")]
    for name, node in BACKENDS.items():
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"namespace": "kp", "name": name},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "containers": [{"name": "c", "image": "x", "ports": serve_ports(80)}],
                },
            }
        )
    apply(kubectl, *objects)
    kubectl("wait", "--for=condition=Ready", "pod", "--all", "-n", "kp", "--timeout=60s")
    api = core_api(lab)
    found = {name: get_pod(api, f"kp/{name}") for name in BACKENDS}
    assert {n: p.node for n, p in found.items()} == BACKENDS
    return {name: (p.ip, p.netns) for name, p in found.items()}


def ports(*protocols: str, node_port: int | None = None) -> list[dict]:
    return [service_port(p.lower(), 8080, p, node_port=node_port) for p in protocols]


def publish(kubectl, name, cluster_ip, svc_ports, backends, pods, **kw) -> None:
    """The Service and its slice, then wait until both nodes programmed them."""
    eps = [endpoint(pods[b][0], BACKENDS[b]) for b in backends]
    apply(
        kubectl,
        service("kp", name, cluster_ip, svc_ports, **kw),
        endpoint_slice("kp", name, svc_ports, eps),
    )
    want = sorted(f"{pods[b][0]}:80" for b in backends)
    for p in svc_ports:
        wait_endpoints(state_dir(), NODE_NAMES, f"kp/{name}", f"8080/{p['protocol']}", want)


def run_probe(netns, ip, port, protocol, timeout=2.0, source=None) -> ProbeResult:
    return asyncio.run(probe(netns, str(ip), port, protocol, timeout, source))


def many_probes(netns: str, ip: str, port: int, count: int) -> list[ProbeResult]:
    async def all_of() -> list[ProbeResult]:
        return await asyncio.gather(*(probe(netns, ip, port, "TCP", 5.0) for _ in range(count)))

    return asyncio.run(all_of())


def from_outside(node: LabNode, port: int, protocol: str, timeout: float = 2.0) -> ProbeResult:
    return run_probe(EXTERNAL_NS, node.address, port, protocol, timeout, str(EXTERNAL_ADDRESS))


def reply_destinations(node: LabNode, protocol: str, node_port: int) -> set[str]:
    """Where the node sends the replies of connections from the outside host to its
    node port: the client's address, or the node's own if it masqueraded them."""
    command = ["ip", "netns", "exec", node.netns, "conntrack", "-L", "-p", protocol.lower()]
    command += ["--orig-src", str(EXTERNAL_ADDRESS), "--orig-port-dst", str(node_port)]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {[f for f in line.split() if f.startswith("dst=")][1][4:] for line in out.splitlines()}


def node_addresses(node: LabNode) -> set[str]:
    # Its underlay address, and the gateway address the ptp plugin gives its pods' veths.
    return {str(node.address), str(node.pod_cidr.network_address + 1)}


def iptables_save(node: LabNode, table: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", node.netns, "iptables-save", "-t", table],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_pod_reaches_a_cluster_ip_on_each_protocol(kubectl, pods, protocol):
    publish(kubectl, "solo", "198.19.240.20", ports(*PROTOCOLS), ["two"], pods)
    result = run_probe(pods["one"][1], "198.19.240.20", 8080, protocol)
    assert (result.outcome, result.peer) == ("connected", "kp/two")


def test_endpoints_on_both_nodes_are_both_chosen(kubectl, pods):
    publish(kubectl, "pair", "198.19.240.21", ports("TCP"), ["one", "two"], pods)
    results = many_probes(pods["three"][1], "198.19.240.21", 8080, 40)
    assert {r.outcome for r in results} == {"connected"}
    # Each connection picks either with probability 1/2: 40 the same way is 2 in 10^12.
    assert {r.peer for r in results} == {"kp/one", "kp/two"}


@pytest.mark.parametrize("protocol", ["TCP", "UDP"])
def test_node_port_cluster_policy_reaches_the_backend_through_any_node_masqueraded(
    kubectl, pods, protocol
):
    node_port = 30080 if protocol == "TCP" else 30081
    svc_ports = ports(protocol, node_port=node_port)
    publish(
        kubectl,
        f"np-cluster-{protocol.lower()}",
        f"198.19.240.{22 + (protocol == 'UDP')}",
        svc_ports,
        ["two"],
        pods,
        external_policy="Cluster",
    )
    for node in NODES:
        result = from_outside(node, node_port, protocol)
        assert (result.outcome, result.peer) == ("connected", "kp/two"), node.name
        # The backend saw the node, not the outside host: the node masqueraded.
        replies = reply_destinations(node, protocol, node_port)
        assert replies and replies <= node_addresses(node), (node.name, replies)


def test_node_port_local_policy_keeps_the_client_and_drops_where_no_endpoint_is(kubectl, pods):
    svc_ports = ports("TCP", node_port=30082)
    publish(kubectl, "np-local", "198.19.240.24", svc_ports, ["one"], pods, external_policy="Local")
    result = from_outside(NODES[0], 30082, "TCP")
    assert (result.outcome, result.peer) == ("connected", "kp/one")
    assert reply_destinations(NODES[0], "TCP", 30082) == {str(EXTERNAL_ADDRESS)}  # no SNAT
    # node-2 has no endpoint of it: the filter table drops, nothing answers.
    assert from_outside(NODES[1], 30082, "TCP", timeout=1.0).outcome == "timeout"
    assert '"kp/np-local:tcp has no local endpoints"' in iptables_save(NODES[1], "filter")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_pod_reaches_itself_through_its_service(kubectl, pods, protocol):
    """Hairpin: without the masquerade, the reply would go to the pod itself un-NATed."""
    publish(kubectl, "hairpin", "198.19.240.25", ports(*PROTOCOLS), ["three"], pods)
    result = run_probe(pods["three"][1], "198.19.240.25", 8080, protocol)
    assert (result.outcome, result.peer) == ("connected", "kp/three")


@pytest.mark.parametrize("protocol", ["TCP", "UDP"])
def test_a_service_without_endpoints_is_rejected(kubectl, pods, protocol):
    apply(kubectl, service("kp", "empty", "198.19.240.26", ports("TCP", "UDP")))
    wait_endpoints(state_dir(), NODE_NAMES, "kp/empty", f"8080/{protocol}", [])
    comment = f"kp/empty:{protocol.lower()} has no endpoints"
    # It is kube-proxy's rule that answers (not, say, a missing route). A periodic full
    # resync rewrites the chain and zeroes its counter, so one of a few probes counts.
    for _ in range(3):
        assert run_probe(pods["one"][1], "198.19.240.26", 8080, protocol).outcome == "refused"
        if rejected(NODES[0], comment) > 0:
            break
    else:
        pytest.fail(f"no packet matched {comment!r}")


def rejected(node: LabNode, comment: str) -> int:
    """Packets the filter rule with `comment` has matched on `node`."""
    save = subprocess.run(
        ["ip", "netns", "exec", node.netns, "iptables-save", "-c", "-t", "filter"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (line,) = [line for line in save.splitlines() if f'"{comment}"' in line]
    return int(line[1:].split(":")[0])


def test_removing_the_slice_removes_the_rules_and_the_status_follows(kubectl, pods):
    svc_ports = ports("TCP")
    publish(kubectl, "gone", "198.19.240.27", svc_ports, ["two"], pods)
    sep = names.endpoint_chain("kp/gone:tcp", "TCP", f"{pods['two'][0]}:80")
    svc = names.cluster_policy_chain("kp/gone:tcp", "TCP")
    assert all(f":{sep} " in iptables_save(n, "nat") for n in NODES)
    assert run_probe(pods["one"][1], "198.19.240.27", 8080, "TCP").peer == "kp/two"

    kubectl("delete", "endpointslice", "-n", "kp", "gone-1")
    wait_endpoints(state_dir(), NODE_NAMES, "kp/gone", "8080/TCP", [])
    for node in NODES:
        nat = iptables_save(node, "nat")
        assert f":{sep} " not in nat and f":{svc} " not in nat, node.name
    assert run_probe(pods["one"][1], "198.19.240.27", 8080, "TCP").outcome == "refused"

    kubectl("delete", "service", "-n", "kp", "gone")
    wait_endpoints(state_dir(), NODE_NAMES, "kp/gone", "8080/TCP", None)
    assert all("198.19.240.27" not in iptables_save(n, "filter") for n in NODES)


def test_headless_services_get_no_rules(kubectl, pods):
    """(A Service without a cluster IP cannot be written any more: the API server
    allocates one; the renderer's skipping of one is unit-tested.)"""
    svc_ports = ports("TCP")
    apply(
        kubectl,
        service("kp", "headless", "None", svc_ports),
        endpoint_slice("kp", "headless", svc_ports, [endpoint(pods["one"][0], "node-1")]),
        service("kp", "marker", "198.19.240.28", svc_ports),
    )
    # The marker is programmed after the others were seen (one sync renders them all).
    wait_endpoints(state_dir(), NODE_NAMES, "kp/marker", "8080/TCP", [])
    for node in NODES:
        assert "kp/headless" not in programmed(state_dir(), node.name)
        assert "kp/headless" not in iptables_save(node, "nat")


def test_lab_status_names_each_nodes_kube_proxy(kubectl, pods):
    out = picket("lab", "status").stdout
    for node in NODES:
        assert f"process kube-proxy-{node.name}: pid " in out
        line = next(x for x in out.splitlines() if x.startswith(f"kube-proxy {node.name}: "))
        assert "service ports programmed" in line and f"kube-proxy-{node.name}.log" in line


def _chain_rules(save: str) -> dict[str, int]:
    """Rules per KUBE- chain in `iptables-save` output (declared chains count 0)."""
    counts = {line[1:].split()[0]: 0 for line in save.splitlines() if line.startswith(":KUBE-")}
    for line in save.splitlines():
        if line.startswith("-A KUBE-"):
            counts[line.split()[1]] += 1
    return counts


def test_the_kernel_holds_exactly_what_the_renderer_says(kubectl, pods):
    """For the Services and slices the API holds now, each node's nat and filter tables
    have the renderer's KUBE- chains, rule for rule in number, and the jumps into them."""
    publish(
        kubectl,
        "layout",
        "198.19.240.29",
        ports(*PROTOCOLS, node_port=30083),
        ["one", "two", "three"],
        pods,
    )
    services = kubectl.json("get", "services", "-A")["items"]
    slices = kubectl.json("get", "endpointslices", "-A")["items"]
    for node in NODES:
        context = NodeContext(node.name, str(node.pod_cidr))
        want = render(service_ports(services)[0], slice_endpoints(slices, node.name), context)
        wait_programmed(state_dir(), [node.name], lambda s, w=want: s == w.programmed)
        for table, chains in (("nat", want.nat), ("filter", want.filter)):
            save = iptables_save(node, table)
            assert _chain_rules(save) == {c: len(r) for c, r in chains.items()}, table
            for jump_table, chain, rule in JUMPS:
                words = (f'"{w}"' if " " in w else w for w in rule)
                assert jump_table != table or f"-A {chain} {' '.join(words)}\n" in save


def forward_targets(node: LabNode, table: str) -> list[str]:
    save = iptables_save(node, table).splitlines()
    return [line.split(" -j ")[-1] for line in save if line.startswith("-A FORWARD ")]


def test_a_backend_change_keeps_kube_proxy_and_policy_sees_forward_first(kubectl, pods):
    """kube-proxy runs for every backend and is not restarted by a change. The agent's
    chains hang off mangle FORWARD, which runs before filter's KUBE-FORWARD (that
    accepts masqueraded node-port traffic), whichever of the two started first."""
    state = state_dir()
    before = {n.name: running(state, f"kube-proxy-{n.name}") for n in NODES}
    assert all(before.values())
    picket("lab", "up", "--nodes", "2", "--backend", "iptables")
    assert {n.name: running(state, f"kube-proxy-{n.name}") for n in NODES} == before
    for node in NODES:
        assert wait_until(lambda n=node: "PICKET-FORWARD" in forward_targets(n, "mangle"))
        assert "KUBE-FORWARD" in forward_targets(node, "filter")
        assert "PICKET-FORWARD" not in forward_targets(node, "filter")
    publish(kubectl, "after", "198.19.240.30", ports("TCP"), ["two"], pods)
    assert run_probe(pods["one"][1], "198.19.240.30", 8080, "TCP").peer == "kp/two"
