"""What an attacker in a pod sends, on both backends; and what Picket touches: only
policed directions, and in them every ICMP message that is no error is policed like any
protocol; a pod sends only from its own address.

- Between pods no policy selects Picket is as if it were not there: a connection whose
  conntrack entry was flushed is picked up mid-stream and goes on, and ICMP requests
  arrive. iptables once dropped INVALID and mid-stream TCP for every forwarded packet.
  (What conntrack calls INVALID, an unknown ICMP type for one, kube-proxy's
  KUBE-FORWARD drops for every forwarded packet on these nodes, as upstream does unless
  `nf_conntrack_tcp_be_liberal` is set: so no test here can see Picket pass it.)
- NetworkPolicy has no ICMP rule: echo, timestamp and unknown types are denied in an
  isolated direction unless a rule with no ports admits the peer (the round-1 eBPF
  datapath passed every type but echo as an "error").

- A packet leaving a pod's interface with a source that is not the pod's is dropped,
  whoever sends it: a pod no policy selects forging the one peer an isolated pod admits
  gets nothing through (both backends took a packet's identity from its source alone).

- Headers conntrack cannot parse (truncated TCP and UDP) and ICMP errors related to no
  connection get nothing into an isolated pod; a fragmented datagram is judged whole
  (its ports), and a non-first fragment without its first never arrives; path-MTU
  discovery works for an allowed connection (the error is RELATED); a flood of new
  flows that fills the node's conntrack table leaves an established connection alone.
  Packets conntrack calls INVALID are let past kube-proxy's INVALID drop for those
  tests, so that Picket's own drop shows (docs/ebpf.md, "Threat model").

- A pod's connection state goes with the pod: once it is deleted no conntrack entry of
  its address is left on any node, so a new pod there inherits nothing.

Arrivals are counted by the receiving pod's kernel (its /proc/net/snmp), not by Picket."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from lab.config import LabNode
from lab.netns import socket_in
from tests.support.agent_metrics import fresh_sum, node_of
from tests.support.connection import Connection
from tests.support.enforcement import apply, probe_once
from tests.support.lab_cli import (
    Kubectl,
    LabPod,
    create_pod_at,
    drop_records,
    lab_pods,
    model_lab,
    wait_until,
)
from tests.support.policies import BACKENDS, netpol, ns_peer, pods_peer, sel
from tests.support.raw_packets import (
    flood_udp,
    icmp_error_of_nothing,
    icmp_in,
    lone_fragment,
    send_icmp,
    send_large_udp,
    send_raw,
    send_udp_from,
    snmp,
    truncated,
    udp_in,
)

COUNT = 5
DROPPED = "picket_dropped_packets_total"
DROP_LOG_WINDOW = 5.0  # the agent's default --drop-log-window: a record is written when it closes
DNS_PORT, DENIED_PORT, BULK_PORT = 5353, 5354, 7000
DATAGRAM = 4000  # bytes of UDP payload: three fragments at the pods' 1500-byte MTU
ECHO, TIMESTAMP, UNKNOWN = 8, 13, 42  # 42: no ICMP type conntrack knows (INVALID)
UNREACHABLE = 3
REPLAYED_PORT = 40123  # x/a's source port of the flow replayed at a reused address
MAX_FLOOD_FLOWS = 1_200_000  # bounds the flood: about 15 s from Python


@pytest.fixture(scope="module", params=BACKENDS)
def scoped(request: pytest.FixtureRequest) -> Iterator[tuple[dict[str, LabPod], str, Kubectl]]:
    with model_lab(request.param) as kubectl:
        apply(
            kubectl,
            # z's pods isolated for ingress, nothing admitted from outside z but UDP 5353
            # from x/a to z/a; TCP 7000 from z's own pods.
            netpol("z", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]}),
            netpol(
                "z",
                "a-dns-from-x-a",
                {
                    "podSelector": sel(pod="a"),
                    "ingress": [
                        {
                            "from": [{**ns_peer(ns="x"), **pods_peer(pod="a")}],
                            "ports": [{"protocol": "UDP", "port": DNS_PORT}],
                        }
                    ],
                },
            ),
            netpol(
                "z",
                "bulk-from-z",
                {
                    "podSelector": {},
                    "ingress": [
                        {
                            "from": [{"podSelector": {}}],
                            "ports": [{"protocol": "TCP", "port": BULK_PORT}],
                        }
                    ],
                },
            ),
            # y/c admits x/a only.
            netpol(
                "y",
                "c-from-x-a",
                {
                    "podSelector": sel(pod="c"),
                    "ingress": [{"from": [{**ns_peer(ns="x"), **pods_peer(pod="a")}]}],
                },
            ),
            # x/c may only open TCP 80 connections to y's pods.
            netpol(
                "x",
                "c-out",
                {
                    "podSelector": sel(pod="c"),
                    "policyTypes": ["Egress"],
                    "egress": [
                        {"to": [ns_peer(ns="y")], "ports": [{"protocol": "TCP", "port": 80}]}
                    ],
                },
            ),
        )
        assert wait_until(lambda: probe_once("x/a", "z/c", "80") == "timeout")
        assert wait_until(lambda: probe_once("x/c", "y/b", "81") == "timeout")
        yield lab_pods(kubectl), request.param, kubectl


def _flush_conntrack() -> None:
    for node in (LabNode(1), LabNode(2)):
        subprocess.run(
            ["ip", "netns", "exec", node.netns, "conntrack", "-F"],
            check=True,
            capture_output=True,
        )


def test_a_flushed_connection_between_unselected_pods_goes_on(scoped):
    pods, backend, _ = scoped
    connection = Connection("x/a", pods["y/b"].ip, 80)
    try:
        assert wait_until(lambda: connection.echoes_since(0) > 3, 10)
        _flush_conntrack()
        flushed = time.monotonic()
        assert wait_until(lambda: connection.echoes_since(flushed) > 10, 5), (
            f"{backend}: the x/a -> y/b connection stopped when its conntrack entry went, "
            "although no policy selects either pod"
        )
    finally:
        connection.close()


@pytest.mark.parametrize("kind", [ECHO, TIMESTAMP])
def test_icmp_between_unselected_pods_arrives(scoped, kind):
    pods, backend, _ = scoped
    target = pods["y/b"]
    before = icmp_in(target.netns, kind)
    send_icmp(pods["x/a"].netns, target.ip, kind, COUNT)
    assert wait_until(lambda: icmp_in(target.netns, kind) - before >= COUNT, 5), (
        f"{backend}: {icmp_in(target.netns, kind) - before} of {COUNT} type-{kind} "
        "messages between unselected pods arrived"
    )


@pytest.mark.parametrize(("sender", "receiver"), [("x/c", "y/b"), ("x/a", "z/c")])
@pytest.mark.parametrize("kind", [ECHO, TIMESTAMP, UNKNOWN])
def test_icmp_is_denied_where_no_rule_without_ports_admits_it(scoped, kind, sender, receiver):
    """x/c's egress admits only TCP 80; z/c's ingress admits nothing."""
    pods, backend, _ = scoped
    target, control = pods[receiver], pods["y/b"]
    before = icmp_in(target.netns, kind)
    control_before = icmp_in(control.netns, ECHO)
    send_icmp(pods[sender].netns, target.ip, kind, COUNT)
    # The control (echo requests: unknown types meet kube-proxy's INVALID drop on any
    # path) leaves after the case's messages, along a path Picket leaves alone: once it
    # has arrived, whatever of the case's could arrive has.
    send_icmp(pods["x/a"].netns, control.ip, ECHO, COUNT)
    assert wait_until(lambda: icmp_in(control.netns, ECHO) - control_before >= COUNT, 5)
    time.sleep(0.2)
    arrived = icmp_in(target.netns, kind) - before
    if receiver == control.ref and kind == ECHO:
        arrived -= COUNT
    assert arrived == 0, f"{backend}: {arrived} type-{kind} messages {sender} -> {receiver} arrived"


def test_a_forged_source_gets_nothing_through(scoped):
    """x/b (no policy selects it) sends as x/a, the one peer y/c admits; then as
    itself to y/b, the control: once that arrived, the forged datagrams would have.
    The forger's node counts them (reason "spoofed") and logs one record naming x/b."""
    pods, backend, _ = scoped
    forger, posed, target, control = pods["x/b"], pods["x/a"], pods["y/c"], pods["y/b"]
    node = node_of(forger.node)
    since = time.time()
    counted = fresh_sum(node, DROPPED, time.time(), reason="spoofed")
    before, control_before = udp_in(target.netns), udp_in(control.netns)
    send_udp_from(forger.netns, posed.ip, target.ip, 80, COUNT)
    send_udp_from(forger.netns, forger.ip, control.ip, 80, COUNT)
    assert wait_until(lambda: udp_in(control.netns) - control_before >= COUNT, 5)
    time.sleep(0.2)
    arrived = udp_in(target.netns) - before
    assert arrived == 0, f"{backend}: {arrived} of {COUNT} datagrams forged as x/a reached y/c"
    # The real x/a still reaches y/c: the check keys on the interface, not the address.
    send_udp_from(posed.netns, posed.ip, target.ip, 80, COUNT)
    assert wait_until(lambda: udp_in(target.netns) - before >= COUNT, 5)
    assert fresh_sum(node, DROPPED, time.time(), reason="spoofed") - counted >= COUNT

    def forged_records() -> list[dict]:
        return [
            r
            for r in drop_records(since, "--pod", "x/b")
            if r.get("PICKET_REASON") == "spoofed"
            and (r.get("PICKET_SENDER_NAMESPACE"), r.get("PICKET_SENDER_POD")) == ("x", "b")
        ]

    assert wait_until(lambda: forged_records(), DROP_LOG_WINDOW + 5), f"{backend}: no record"
    (record,) = forged_records()  # one per pod and window, however many packets
    assert (record["PICKET_SRC_IP"], record["PICKET_SRC_POD"]) == (posed.ip, "a")
    assert (record["PICKET_DST_IP"], record["PICKET_DST_POD"]) == (target.ip, "c")
    assert record["PICKET_REPEATS"] == str(COUNT), record
    assert record["PICKET_SENDER_INTERFACE"], record


def _entries_with(ip: str) -> list[str]:
    """Conntrack entries, on either node, with `ip` at either end."""
    found = []
    for node in (LabNode(1), LabNode(2)):
        for flag in ("--src", "--dst", "--reply-src", "--reply-dst"):
            out = subprocess.run(
                ["ip", "netns", "exec", node.netns, "conntrack", "-L", flag, ip],
                capture_output=True,
                text=True,
                check=False,
            )
            found += [f"{node.name}: {line}" for line in out.stdout.splitlines() if line]
    return found


@contextmanager
def _invalid_admitted_from(ip: str) -> Iterator[None]:
    """Lets packets from `ip` that conntrack leaves untracked or calls INVALID past
    kube-proxy's INVALID drop (filter FORWARD, which upstream has unless
    nf_conntrack_tcp_be_liberal is set) on both nodes, so that they meet Picket: the
    iptables backend's chains (mangle) come before it anyway, the eBPF hook after."""
    rule = ["FORWARD", "-s", ip, "-m", "conntrack", "--ctstate", "INVALID", "-m", "comment",
            "--comment", "picket test: past kube-proxy's INVALID drop", "-j", "ACCEPT"]  # fmt: skip
    nodes = (LabNode(1), LabNode(2))
    for node in nodes:
        _iptables(node, "-I", *rule[:1], "1", *rule[1:])
    try:
        yield
    finally:
        for node in nodes:
            _iptables(node, "-D", *rule)


def _iptables(node: LabNode, *args: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", node.netns, "iptables", "-w", "-t", "filter", *args],
        check=True,
        capture_output=True,
    )


def test_headers_that_do_not_parse_get_nothing_through(scoped):
    """Truncated TCP and UDP headers from x/a to y/c, which admits x/a on every port:
    what cannot be parsed is dropped in a policed direction (counted as unparsed by
    eBPF, invalid by iptables, whose conntrack calls them that), and passes between
    unselected pods (to y/b, the control). The receiver's kernel counts a truncated
    TCP segment in Tcp InSegs and a truncated datagram in Udp InErrors."""
    pods, backend, _ = scoped
    sender, target, control = pods["x/a"], pods["y/c"], pods["y/b"]
    reason = "unparsed" if backend == "ebpf" else "invalid"
    node = node_of(target.node)
    since = time.time()
    labels = {"reason": reason, "direction": "ingress", "namespace": "y"}
    counted = fresh_sum(node, DROPPED, time.time(), **labels)

    def arrived(pod: LabPod) -> tuple[int, int]:
        counters = snmp(pod.netns)
        return counters["Tcp"]["InSegs"], counters["Udp"]["InErrors"]

    before, control_before = arrived(target), arrived(control)
    with _invalid_admitted_from(sender.ip):
        for pod in (target, control):  # the case first: once the control arrived, it would have
            packets = truncated(sender.ip, pod.ip, socket.IPPROTO_TCP, 10, COUNT)
            packets += truncated(sender.ip, pod.ip, socket.IPPROTO_UDP, 4, COUNT)
            send_raw(sender.netns, packets, pod.ip)
        assert wait_until(
            lambda: (
                min(a - b for a, b in zip(arrived(control), control_before, strict=True)) >= COUNT
            ),
            5,
        ), f"{backend}: the control's truncated packets did not reach y/b"
    time.sleep(0.2)
    got = [a - b for a, b in zip(arrived(target), before, strict=True)]
    assert got == [0, 0], f"{backend}: truncated (TCP, UDP) reaching y/c: {got}"
    got = fresh_sum(node, DROPPED, time.time(), **labels) - counted
    assert got >= 2 * COUNT, f"{backend}: {got} counted as {reason}"

    def records() -> list[dict]:
        return [
            r
            for r in drop_records(since, "--pod", "y/c")
            if (r.get("PICKET_REASON"), r.get("PICKET_DIRECTION")) == (reason, "ingress")
        ]

    # One record for y/c's ingress and this reason in the window, whatever the peer sent.
    assert wait_until(records, DROP_LOG_WINDOW + 5), f"{backend}: no {reason} record"
    (record,) = records()
    assert (record["PICKET_SRC_POD"], record["PICKET_POLICIES"]) == ("a", "y/c-from-x-a"), record
    assert record["PICKET_REPEATS"] == str(2 * COUNT), record


def _fragments_in(pod: LabPod) -> tuple[int, int]:
    """(fragments received, datagrams reassembled) by the pod's kernel."""
    ip = snmp(pod.netns)["Ip"]
    return ip["ReasmReqds"], ip["ReasmOKs"]


def test_a_fragmented_datagram_is_judged_whole(scoped):
    """x/a to z/a, which admits x/a on UDP 5353 only: a 4,000-byte datagram (three
    fragments) to 5353 arrives whole; one to 5354 does not arrive at all, no fragment
    of it; sent first, it would have arrived before the allowed one that follows."""
    pods, backend, _ = scoped
    sender, target = pods["x/a"], pods["z/a"]
    fragments, whole = _fragments_in(target)
    datagrams = udp_in(target.netns)
    send_large_udp(sender.netns, target.ip, DENIED_PORT, DATAGRAM)
    send_large_udp(sender.netns, target.ip, DNS_PORT, DATAGRAM)
    assert wait_until(lambda: udp_in(target.netns) - datagrams >= 1, 5), (
        f"{backend}: a fragmented datagram to an allowed port did not arrive"
    )
    time.sleep(0.2)
    got = tuple(a - b for a, b in zip(_fragments_in(target), (fragments, whole), strict=True))
    assert got == (3, 1), f"{backend}: (fragments, reassembled) at z/a: {got}, want (3, 1)"
    assert udp_in(target.netns) - datagrams == 1


def test_a_non_first_fragment_without_its_first_never_passes(scoped):
    """x/a's lone last fragment to z/a (the peer and protocol it admits, but a fragment
    carries no port), then a whole fragmented datagram to 5353: only the latter's three
    fragments reach z/a."""
    pods, backend, _ = scoped
    sender, target = pods["x/a"], pods["z/a"]
    fragments, whole = _fragments_in(target)
    send_raw(
        sender.netns,
        [lone_fragment(sender.ip, target.ip, 0x6400 + n) for n in range(COUNT)],
        target.ip,
    )
    send_large_udp(sender.netns, target.ip, DNS_PORT, DATAGRAM)
    assert wait_until(lambda: _fragments_in(target)[1] - whole >= 1, 5)
    time.sleep(0.2)
    got = _fragments_in(target)[0] - fragments
    assert got == 3, f"{backend}: {got - 3} lone fragments reached z/a"


def test_an_icmp_error_of_no_connection_is_dropped(scoped):
    """Port unreachable from x/a quoting a datagram z/b never sent: related to nothing,
    so z/b (isolated, admitting nothing from x/a) gets none; y/b, which no policy
    selects, gets them (the control)."""
    pods, backend, _ = scoped
    sender, target, control = pods["x/a"], pods["z/b"], pods["y/b"]
    before, control_before = icmp_in(target.netns, UNREACHABLE), icmp_in(control.netns, UNREACHABLE)
    with _invalid_admitted_from(sender.ip):
        for pod in (target, control):
            send_raw(sender.netns, icmp_error_of_nothing(sender.ip, pod.ip, COUNT), pod.ip)
        assert wait_until(
            lambda: icmp_in(control.netns, UNREACHABLE) - control_before >= COUNT, 5
        ), f"{backend}: the control's errors did not reach y/b"
    time.sleep(0.2)
    arrived = icmp_in(target.netns, UNREACHABLE) - before
    assert arrived == 0, f"{backend}: {arrived} unrelated ICMP errors reached z/b"


def _cross_node_pair(pods: dict[str, LabPod], namespace: str) -> tuple[LabPod, LabPod]:
    mine = [p for ref, p in sorted(pods.items()) if ref.startswith(f"{namespace}/")]
    pair = next(((a, b) for a in mine for b in mine if a.node != b.node), None)
    assert pair, f"the lab put every pod of {namespace} on one node: {mine}"
    return pair


def _host_side(pod: LabPod) -> str:
    """The pod's interface as its node sees it (the route to its address)."""
    out = subprocess.run(
        ["ip", "-n", node_of(pod.node).netns, "-o", "route", "get", pod.ip],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return out[out.index("dev") + 1]


def test_path_mtu_discovery_works_for_an_allowed_connection(scoped):
    """A z pod sends 256 KiB over TCP to a z pod of the other node, whose node's link to
    it carries 1,200 bytes: that node answers full-size segments with "fragmentation
    needed" from its own address, which only conntrack's RELATED lets into the client
    (isolated for ingress, admitting z's pods on TCP 7000 and nothing from a node)."""
    pods, backend, _ = scoped
    client, server = _cross_node_pair(pods, "z")
    link, node = _host_side(server), node_of(server.node)
    payload = 256 * 1024
    received = bytearray()
    listener = socket_in(server.netns, socket.AF_INET, socket.SOCK_STREAM)
    listener.setblocking(True)
    listener.bind((server.ip, BULK_PORT))
    listener.listen(1)
    listener.settimeout(10)

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        with conn:
            while len(received) < payload and (chunk := conn.recv(65536)):
                received.extend(chunk)

    subprocess.run(["ip", "-n", node.netns, "link", "set", link, "mtu", "1200"], check=True)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket_in(client.netns, socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setblocking(True)
            sock.settimeout(15)
            sock.connect((server.ip, BULK_PORT))
            sock.sendall(b"m" * payload)
            thread.join(15)
    finally:
        subprocess.run(["ip", "-n", node.netns, "link", "set", link, "mtu", "1500"], check=True)
        subprocess.run(["ip", "-n", client.netns, "route", "flush", "cache"], check=False)
        listener.close()
    assert len(received) == payload, (
        f"{backend}: {len(received)} of {payload} bytes {client.ref} -> {server.ref} "
        "across the 1,200-byte link"
    )


def _conntrack_fill(node: LabNode) -> tuple[int, int]:
    """(entries, nf_conntrack_max) of the node's conntrack table."""
    out = subprocess.run(
        ["ip", "netns", "exec", node.netns, "cat",
         "/proc/sys/net/netfilter/nf_conntrack_count", "/proc/sys/net/netfilter/nf_conntrack_max"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return int(out[0]), int(out[1])


def test_a_flood_of_new_flows_leaves_established_connections_alone(scoped):
    """x/b opens UDP flows, 15 % more than nf_conntrack_max (262,144 here), to the
    node of y/c (isolated, admitting x/a), filling the conntrack table there (and on x/b's
    node, which forwards them), while x/a's connection to y/c goes on: conntrack's table
    is the kernel's, which evicts only unanswered entries; an evicted entry would end the
    connection as "no SYN"."""
    pods, backend, _ = scoped
    server, flooder = pods["y/c"], pods["x/b"]
    connection = Connection("x/a", server.ip, 80)
    try:
        assert wait_until(lambda: connection.echoes_since(0) > 3, 10)
        node = node_of(server.node)
        flows = min(int(_conntrack_fill(node)[1] * 1.15), MAX_FLOOD_FLOWS)
        sent = flood_udp(flooder.netns, str(node.address), flows, deadline=30)
        flooded = time.monotonic()
        count, most = _conntrack_fill(node)
        assert count >= 0.95 * most, f"the flood ({sent} flows) filled {count} of {most}"
        assert wait_until(lambda: connection.echoes_since(flooded) > 5, 5), (
            f"{backend}: x/a -> y/c stopped after {sent} new flows through its node"
        )
        assert "closed" not in [line for _, line in connection.lines]
    finally:
        connection.close()
        for node in (LabNode(1), LabNode(2)):
            subprocess.run(
                ["ip", "netns", "exec", node.netns, "conntrack", "-D", "-s", flooder.ip],
                capture_output=True, check=False,
            )  # fmt: skip


def test_a_deleted_pods_connections_go_with_it(scoped):
    """Last in the module: it deletes y/a. x/a holds a UDP flow with y/a (answered, so
    conntrack has it ESTABLISHED); once y/a is deleted no entry of its address is left
    on any node, and a new pod at that address (z/reused: z admits nothing from x/a)
    gets nothing of the same 5-tuple replayed: a new flow, judged and denied."""
    pods, backend, kubectl = scoped
    gone, client = pods["y/a"], pods["x/a"]
    flow = socket_in(client.netns, socket.AF_INET, socket.SOCK_DGRAM)
    flow.setblocking(True)
    flow.settimeout(2)
    with flow:
        flow.bind((client.ip, REPLAYED_PORT))
        flow.sendto(b"first", (gone.ip, 80))
        assert flow.recv(200).startswith(b"y/a"), "y/a did not answer"
        assert wait_until(lambda: len(_entries_with(gone.ip)) > 0, 5)
        kubectl("delete", "pod", "-n", "y", "a", "--wait=true")
        assert wait_until(lambda: not _entries_with(gone.ip), 10), (
            f"{backend}: entries of deleted y/a left: {_entries_with(gone.ip)}"
        )
        reused = _pod_at(kubectl, "z", "reused", gone)
        assert wait_until(lambda: probe_once("x/a", "z/reused", "80") == "timeout"), (
            f"{backend}: z/reused admits x/a"
        )
        before, control_before = udp_in(reused.netns), udp_in(pods["y/b"].netns)
        for _ in range(COUNT):
            flow.sendto(b"replayed", (gone.ip, 80))
        for _ in range(COUNT):  # the control: once these arrived, the replays would have
            flow.sendto(b"control", (pods["y/b"].ip, 80))
        assert wait_until(lambda: udp_in(pods["y/b"].netns) - control_before >= COUNT, 5)
        time.sleep(0.2)
    arrived = udp_in(reused.netns) - before
    assert arrived == 0, f"{backend}: {arrived} replayed datagrams reached z/reused at {gone.ip}"


def _pod_at(kubectl: Kubectl, namespace: str, name: str, where: LabPod) -> LabPod:
    """A new pod with `where`'s address, on its node (the lab's IP annotation)."""
    create_pod_at(kubectl, namespace, name, where.node, where.ip, ((80, "TCP"), (80, "UDP")))
    kubectl("wait", "--for=condition=Ready", "pod", "-n", namespace, name, "--timeout=30s")
    pod = lab_pods(kubectl)[f"{namespace}/{name}"]
    assert pod.ip == where.ip, f"{pod.ref} got {pod.ip}, not {where.ip}"
    return pod
