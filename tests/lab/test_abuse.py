"""What an attacker in a pod sends, on both backends and both address families (the
lab is dual-stack: each case that is the same over IPv6 runs on both, with ICMPv6 in
ICMP's place); and what Picket touches: only policed directions, and in them every
ICMP message that is no error is policed like any protocol; a pod sends only from its
own address.

- Between pods no policy selects Picket is as if it were not there: a connection whose
  conntrack entry was flushed is picked up mid-stream and goes on, and ICMP requests
  arrive. iptables once dropped INVALID and mid-stream TCP for every forwarded packet.
  (What conntrack calls INVALID, an unknown ICMP type for one, kube-proxy's
  KUBE-FORWARD drops for every forwarded packet on these nodes, as upstream does unless
  `nf_conntrack_tcp_be_liberal` is set: so no test here can see Picket pass it.)
- NetworkPolicy has no ICMP rule: echo, timestamp (ICMPv6: node information) and
  unknown types are denied in an isolated direction unless a rule with no ports admits
  the peer (the round-1 eBPF datapath passed every type but echo as an "error").
  Neighbour discovery and MLD types sent to a pod through the node are messages
  conntrack leaves UNTRACKED (no entry, not INVALID: kube-proxy's drop lets them by):
  nothing to judge them as, so an isolated direction drops them, a rule without ports
  or not (iptables' chains once judged them by the rules). Between a pod and its own
  node neighbour discovery and router solicitation are never forwarded, and pass.

- A packet leaving a pod's interface with a source that is not the pod's is dropped,
  whoever sends it: a pod no policy selects forging the one peer an isolated pod admits
  gets nothing through (both backends took a packet's identity from its source alone);
  over IPv6 neither does a link-local source (the kernel refuses to forward it), an
  IPv4-mapped one (`::ffff:a.b.c.d`, where the eBPF maps keep IPv4) or another address
  of the pod's prefix.

- Headers conntrack cannot parse (truncated TCP and UDP, over IPv6 also behind more
  extension headers than the eBPF program walks) and ICMP errors related to no
  connection get nothing into an isolated pod; extension headers hide no port; a
  fragmented datagram is judged whole (its ports), and a non-first fragment without
  its first never arrives; path-MTU discovery works for an allowed connection (the
  error is RELATED); a flood of new flows that fills the node's conntrack table leaves
  an established connection alone. Packets conntrack calls INVALID are let past
  kube-proxy's INVALID drop for those tests, so that Picket's own drop shows
  (docs/ebpf.md, "Threat model").

- A pod's connection state goes with the pod: once it is deleted no conntrack entry of
  its addresses is left on any node, so a new pod there inherits nothing.

Arrivals are counted by the receiving pod's kernel (its /proc/net/snmp and snmp6), not
by Picket."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from lab.cluster import family_of
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
    AF,
    DESTINATION,
    HOP_BY_HOP,
    ROUTING,
    flood_udp,
    fragments_in,
    icmp_error_of_nothing,
    icmp_in,
    lone_fragment,
    send_icmp,
    send_large_udp,
    send_raw,
    send_router_solicitations,
    send_udp_from,
    snmp,
    snmp6,
    truncated,
    udp_errors_in,
    udp_in,
    udp_packets,
)

COUNT = 5
DROPPED = "picket_dropped_packets_total"
DROP_LOG_WINDOW = 5.0  # the agent's default --drop-log-window: a record is written when it closes
DNS_PORT, DENIED_PORT, BULK_PORT = 5353, 5354, 7000
DATAGRAM = 4000  # bytes of UDP payload: three fragments at the pods' 1500-byte MTU
FAMILIES = (4, 6)
ECHO = {4: 8, 6: 128}
# Requests conntrack tracks as NEW connections besides echo: ICMP timestamp, ICMPv6
# node information query.
QUERY = {4: 13, 6: 139}
UNKNOWN = {4: 42, 6: 200}  # no informational type conntrack knows: INVALID
# ICMPv6 types conntrack marks UNTRACKED (no entry, and not INVALID): neighbour
# solicitation, MLD query.
UNTRACKED = (135, 130)
UNREACHABLE, PACKET_TOO_BIG = {4: 3, 6: 1}, 2
LINK_MTU = 1280  # the smaller link of the path-MTU test: IPv6's minimum, so IPv6 stays on it
REPLAYED_PORT = 40123  # x/a's source port of the flow replayed at a reused address
MAX_FLOOD_FLOWS = 1_200_000  # bounds the flood: about 15 s from Python
# Extension-header chains (IPv6) in front of a transport header: each kind alone, a mix,
# and more than the eBPF program walks itself (IPV6_EXTENSIONS_WALKED, bpf/lib/headers.h).
WALKED = 6
EXTENSION_CHAINS = (
    (HOP_BY_HOP,),
    (DESTINATION,),
    (ROUTING,),
    (HOP_BY_HOP, DESTINATION, ROUTING, DESTINATION),
    (HOP_BY_HOP, *(DESTINATION,) * WALKED),
)

Pods = dict[str, LabPod]


def _by_family(kubectl: Kubectl) -> dict[int, Pods]:
    """The lab's pods addressed by each family's address (the lab is dual-stack)."""
    pods = lab_pods(kubectl)
    for pod in pods.values():
        assert any(":" in ip for ip in pod.ips), f"{pod.ref} has no IPv6 address: {pod.ips}"
    return {
        4: pods,
        6: {ref: dataclasses.replace(pod, ip=pod.address(6)) for ref, pod in pods.items()},
    }


@pytest.fixture(scope="module", params=BACKENDS)
def scoped(request: pytest.FixtureRequest) -> Iterator[tuple[dict[int, Pods], str, Kubectl]]:
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
        for family in FAMILIES:
            assert wait_until(
                lambda f=family: probe_once("x/a", "z/c", "80", family=f) == "timeout"
            )
            assert wait_until(
                lambda f=family: probe_once("x/c", "y/b", "81", family=f) == "timeout"
            )
        yield _by_family(kubectl), request.param, kubectl


def _flush_conntrack() -> None:
    for node in (LabNode(1), LabNode(2)):
        subprocess.run(
            ["ip", "netns", "exec", node.netns, "conntrack", "-F"],  # both families
            check=True,
            capture_output=True,
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_a_flushed_connection_between_unselected_pods_goes_on(scoped, family):
    pods, backend, _ = scoped
    connection = Connection("x/a", pods[family]["y/b"].ip, 80)
    try:
        assert wait_until(lambda: connection.echoes_since(0) > 3, 10)
        _flush_conntrack()
        flushed = time.monotonic()
        assert wait_until(lambda: connection.echoes_since(flushed) > 10, 5), (
            f"{backend}: the x/a -> y/b connection (IPv{family}) stopped when its conntrack "
            "entry went, although no policy selects either pod"
        )
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("family", "kind"), [(f, kinds[f]) for kinds in (ECHO, QUERY) for f in FAMILIES]
)
def test_icmp_between_unselected_pods_arrives(scoped, family, kind):
    pods, backend, _ = scoped
    target = pods[family]["y/b"]
    before = icmp_in(target.netns, kind, family)
    send_icmp(pods[family]["x/a"].netns, target.ip, kind, COUNT)
    assert wait_until(lambda: icmp_in(target.netns, kind, family) - before >= COUNT, 5), (
        f"{backend}: {icmp_in(target.netns, kind, family) - before} of {COUNT} IPv{family} "
        f"type-{kind} messages between unselected pods arrived"
    )


def _sent_after_control(pods: Pods, family: int, kind: int) -> None:
    """Echo requests (or, for a type conntrack leaves untracked, messages of `kind`)
    from x/a to y/b, along a path Picket leaves alone, sent after a case's messages and
    waited for: once they have arrived, whatever of the case's could arrive has (unknown
    types meet kube-proxy's INVALID drop on any path)."""
    control = pods["y/b"]
    kind = kind if kind in UNTRACKED else ECHO[family]
    before = icmp_in(control.netns, kind, family)
    send_icmp(pods["x/a"].netns, control.ip, kind, COUNT)
    assert wait_until(lambda: icmp_in(control.netns, kind, family) - before >= COUNT, 5)
    time.sleep(0.2)


@pytest.mark.parametrize(("sender", "receiver"), [("x/c", "y/b"), ("x/a", "z/c")])
@pytest.mark.parametrize(
    ("family", "kind"),
    [(f, kinds[f]) for kinds in (ECHO, QUERY, UNKNOWN) for f in FAMILIES]
    + [(6, kind) for kind in UNTRACKED],
)
def test_icmp_is_denied_where_no_rule_without_ports_admits_it(
    scoped, family, kind, sender, receiver
):
    """x/c's egress admits only TCP 80; z/c's ingress admits nothing."""
    pods, backend, _ = scoped
    pods = pods[family]
    target = pods[receiver]
    before = icmp_in(target.netns, kind, family)
    send_icmp(pods[sender].netns, target.ip, kind, COUNT)
    _sent_after_control(pods, family, kind)
    arrived = icmp_in(target.netns, kind, family) - before
    if receiver == "y/b" and kind in (ECHO[family], *UNTRACKED):
        arrived -= COUNT  # the control's
    assert arrived == 0, (
        f"{backend}: {arrived} IPv{family} type-{kind} messages {sender} -> {receiver} arrived"
    )


@pytest.mark.parametrize(
    ("family", "kind"),
    [(f, kinds[f]) for kinds in (ECHO, QUERY) for f in FAMILIES] + [(6, k) for k in UNTRACKED],
)
def test_icmp_to_a_peer_a_rule_without_ports_admits(scoped, family, kind):
    """y/c admits x/a on every protocol and port: requests conntrack tracks arrive; a
    type it leaves untracked (neighbour solicitation, MLD query sent through the node)
    has nothing to judge it as, and does not (the control: the same to y/b, after)."""
    pods, backend, _ = scoped
    pods = pods[family]
    target = pods["y/c"]
    before = icmp_in(target.netns, kind, family)
    send_icmp(pods["x/a"].netns, target.ip, kind, COUNT)
    if kind not in UNTRACKED:
        assert wait_until(lambda: icmp_in(target.netns, kind, family) - before >= COUNT, 5), (
            f"{backend}: IPv{family} type-{kind} messages x/a -> y/c did not arrive"
        )
        return
    _sent_after_control(pods, family, kind)
    arrived = icmp_in(target.netns, kind, family) - before
    assert arrived == 0, f"{backend}: {arrived} untracked type-{kind} messages reached y/c"


def _host_side(pod: LabPod) -> str:
    """The pod's interface as its node sees it (the route to its address)."""
    out = subprocess.run(
        ["ip", "-n", node_of(pod.node).netns, "-o", "route", "get", pod.ip],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return out[out.index("dev") + 1]


def test_neighbour_discovery_and_router_solicitation_with_its_node_pass(scoped):
    """IPv6. x/c (egress-isolated, TCP 80 to y's pods only) and y/c (ingress-isolated,
    admitting x/a) forget their neighbours, and their nodes forget them: their next
    connections need neighbour solicitation and advertisement both ways between each
    pod and its node (to the node itself or link-local multicast, never forwarded),
    and connect. x/c's router solicitations reach its node (counted on the node's side
    of x/c's link: the lab's nodes advertise no prefixes, so nothing answers them)."""
    pods, backend, _ = scoped
    pods = pods[6]
    for pod in (pods["x/c"], pods["y/c"]):
        subprocess.run(["ip", "-n", pod.netns, "-6", "neigh", "flush", "all"], check=True)
        node, link = node_of(pod.node).netns, _host_side(pod)
        subprocess.run(["ip", "-n", node, "-6", "neigh", "flush", "dev", link], check=True)
    assert probe_once("x/c", "y/b", "80", family=6).startswith("connected"), backend
    assert probe_once("x/a", "y/c", "80", family=6).startswith("connected"), backend
    for pod in (pods["x/c"], pods["y/c"]):
        neighbours = subprocess.run(
            ["ip", "-n", pod.netns, "-6", "neigh", "show"], capture_output=True, text=True
        ).stdout
        assert "REACHABLE" in neighbours, f"{backend}: {pod.ref} resolved nothing: {neighbours}"
    sender = pods["x/c"]
    node, link = node_of(sender.node).netns, _host_side(sender)
    before = snmp6(node, link)["Icmp6InRouterSolicits"]
    send_router_solicitations(sender.netns, COUNT)
    assert wait_until(lambda: snmp6(node, link)["Icmp6InRouterSolicits"] - before >= COUNT, 5), (
        f"{backend}: x/c's router solicitations did not reach its node"
    )


# Who forges whom, per family (different forgers, so that both families' forgeries
# are logged in one window: one record per sending pod and window).
FORGERS = {4: "x/b", 6: "y/a"}


def test_a_forged_source_gets_nothing_through(scoped):
    """x/b over IPv4 and y/a over IPv6 (no policy selects either) send as x/a, the
    one peer y/c admits; then as themselves to y/b, the control: once that arrived,
    the forged datagrams would have. The forgers' nodes count them (reason "spoofed")
    and log one record naming each forger."""
    pods, backend, _ = scoped
    nodes = {node_of(pods[4][ref].node) for ref in FORGERS.values()}
    since = time.time()

    def spoofed() -> float:
        return sum(fresh_sum(node, DROPPED, time.time(), reason="spoofed") for node in nodes)

    def arrived() -> dict[tuple[int, str], int]:
        return {(f, ref): udp_in(pods[f][ref].netns, f) for f in FAMILIES for ref in ("y/b", "y/c")}

    counted, before = spoofed(), arrived()

    def new() -> dict[tuple[int, str], int]:
        return {key: value - before[key] for key, value in arrived().items()}

    for family, ref in FORGERS.items():
        forger, at = pods[family][ref], pods[family]
        send_udp_from(forger.netns, at["x/a"].ip, at["y/c"].ip, 80, COUNT)
        send_udp_from(forger.netns, forger.ip, at["y/b"].ip, 80, COUNT)
    assert wait_until(lambda: min(new()[f, "y/b"] for f in FAMILIES) >= COUNT, 5)
    time.sleep(0.2)
    got = {f: new()[f, "y/c"] for f in FAMILIES}
    assert got == {4: 0, 6: 0}, f"{backend}: datagrams forged as x/a reached y/c: {got}"
    for family in FAMILIES:  # the real x/a still reaches y/c: the check keys on the interface
        real = pods[family]["x/a"]
        send_udp_from(real.netns, real.ip, pods[family]["y/c"].ip, 80, COUNT)
    assert wait_until(lambda: min(new()[f, "y/c"] for f in FAMILIES) >= COUNT, 5)
    assert spoofed() - counted >= 2 * COUNT

    def forged_records(ref: str) -> list[dict]:
        sender = tuple(ref.split("/"))
        return [
            r
            for r in drop_records(since, "--pod", ref)
            if r.get("PICKET_REASON") == "spoofed"
            and (r.get("PICKET_SENDER_NAMESPACE"), r.get("PICKET_SENDER_POD")) == sender
        ]

    for family, ref in FORGERS.items():
        assert wait_until(lambda r=ref: forged_records(r), DROP_LOG_WINDOW + 5), (
            f"{backend}: no record of {ref}'s forgeries"
        )
        (record,) = forged_records(ref)  # one per pod and window, however many packets
        posed, target = pods[family]["x/a"], pods[family]["y/c"]
        assert (record["PICKET_SRC_IP"], record["PICKET_SRC_POD"]) == (posed.ip, "a")
        assert (record["PICKET_DST_IP"], record["PICKET_DST_POD"]) == (target.ip, "c")
        assert record["PICKET_REPEATS"] == str(COUNT), record
        assert record["PICKET_SENDER_INTERFACE"], record


def test_no_ipv6_source_but_the_pods_own_gets_through(scoped):
    """x/b (no policy selects it) sends to y/b from addresses that are not its own:
    link-local and unspecified (the kernel refuses to forward these), IPv4-mapped (its
    own IPv4 address and x/a's, as the eBPF maps key IPv4; the kernel forwards these,
    Picket drops them) and another address of its node's pod prefix; then from its
    own, the control. Only the control arrives."""
    pods, backend, _ = scoped
    forger, posed, target = pods[6]["x/b"], pods[4]["x/a"], pods[6]["y/b"]
    sources = (
        "fe80::bad",
        "::",
        f"::ffff:{pods[4]['x/b'].ip}",
        f"::ffff:{posed.ip}",
        forger.ip.rpartition(":")[0] + ":bad",
    )
    before = udp_in(target.netns, 6)
    for source in sources:
        send_udp_from(forger.netns, source, target.ip, 80, COUNT)
    send_udp_from(forger.netns, forger.ip, target.ip, 80, COUNT)
    assert wait_until(lambda: udp_in(target.netns, 6) - before >= COUNT, 5)
    time.sleep(0.2)
    arrived = udp_in(target.netns, 6) - before - COUNT
    assert arrived == 0, f"{backend}: {arrived} datagrams from {sources} reached y/b"


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
    nf_conntrack_tcp_be_liberal is set; kube-proxy's IPv6 rules have it too) on both
    nodes, so that they meet Picket: the iptables backend's chains (mangle) come before
    it anyway, the eBPF hook after."""
    rule = ["FORWARD", "-s", ip, "-m", "conntrack", "--ctstate", "INVALID", "-m", "comment",
            "--comment", "picket test: past kube-proxy's INVALID drop", "-j", "ACCEPT"]  # fmt: skip
    nodes, family = (LabNode(1), LabNode(2)), family_of(ip)
    for node in nodes:
        _iptables(node, family, "-I", *rule[:1], "1", *rule[1:])
    try:
        yield
    finally:
        for node in nodes:
            _iptables(node, family, "-D", *rule)


def _iptables(node: LabNode, family: int, *args: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", node.netns, "iptables" if family == 4 else "ip6tables",
         "-w", "-t", "filter", *args],
        check=True,
        capture_output=True,
    )  # fmt: skip


def test_headers_that_do_not_parse_get_nothing_through(scoped):
    """Truncated TCP and UDP headers from x/a to y/c, which admits x/a on every port,
    over IPv6 (there also truncated UDP behind more extension headers than the eBPF
    program walks), then over IPv4: what cannot be parsed is dropped in a policed
    direction (counted as unparsed by eBPF, invalid by iptables, whose conntrack calls
    them that), and passes between unselected pods (to y/b, the control). The
    receiver's kernel counts a truncated TCP segment in Tcp InSegs (one count for both
    families) and a truncated datagram in Udp (Udp6) InErrors. The drop log folds
    untracked packets by the local pod's address: one record for each of y/c's
    addresses, ingress and the reason per window, whatever the peer sends."""
    pods, backend, _ = scoped
    reason = "unparsed" if backend == "ebpf" else "invalid"
    node = node_of(pods[4]["y/c"].node)
    since = time.time()
    labels = {"reason": reason, "direction": "ingress", "namespace": "y"}
    counted = fresh_sum(node, DROPPED, time.time(), **labels)
    chains = {6: [(), EXTENSION_CHAINS[-1]], 4: [()]}
    sent = {"tcp": 2 * COUNT, 4: COUNT, 6: 2 * COUNT}  # to each of y/c and y/b

    def arrived(ref: str) -> dict[str | int, int]:
        netns = pods[4][ref].netns
        return {
            "tcp": snmp(netns)["Tcp"]["InSegs"],
            **{f: udp_errors_in(netns, f) for f in FAMILIES},
        }

    before = {ref: arrived(ref) for ref in ("y/c", "y/b")}

    def new(ref: str) -> dict[str | int, int]:
        return {key: value - before[ref][key] for key, value in arrived(ref).items()}

    with _invalid_admitted_from(pods[4]["x/a"].ip), _invalid_admitted_from(pods[6]["x/a"].ip):
        for ref in ("y/c", "y/b"):  # the case first: once the control arrived, it would have
            for family in (6, 4):
                sender, pod = pods[family]["x/a"], pods[family][ref]
                packets = truncated(sender.ip, pod.ip, socket.IPPROTO_TCP, 10, COUNT)
                for chain in chains[family]:
                    packets += truncated(sender.ip, pod.ip, socket.IPPROTO_UDP, 4, COUNT, chain)
                send_raw(sender.netns, packets, pod.ip)
        assert wait_until(lambda: all(new("y/b")[k] >= n for k, n in sent.items()), 5), (
            f"{backend}: the control's truncated packets did not reach y/b: {new('y/b')}"
        )
    time.sleep(0.2)
    got = new("y/c")
    assert not any(got.values()), f"{backend}: truncated headers reaching y/c: {got}"
    got = fresh_sum(node, DROPPED, time.time(), **labels) - counted
    assert got >= sum(sent.values()), f"{backend}: {got} counted as {reason}"

    def records(family: int) -> list[dict]:
        return [
            r
            for r in drop_records(since, "--pod", "y/c")
            if (r.get("PICKET_REASON"), r.get("PICKET_DIRECTION")) == (reason, "ingress")
            and r.get("PICKET_DST_IP") == pods[family]["y/c"].ip
            and r.get("PICKET_PROTOCOL") in ("TCP", "UDP")  # not the untracked ICMPv6 above
        ]

    for family in FAMILIES:
        assert wait_until(lambda f=family: records(f), DROP_LOG_WINDOW + 5), (
            f"{backend}: no {reason} record for y/c's IPv{family} address"
        )
        (record,) = records(family)
        assert (record["PICKET_SRC_POD"], record["PICKET_POLICIES"]) == ("a", "y/c-from-x-a")
        assert record["PICKET_SRC_IP"] == pods[family]["x/a"].ip, record
        assert record["PICKET_REPEATS"] == str(COUNT + sent[family]), record


def test_extension_headers_hide_no_port(scoped):
    """IPv6: UDP from x/a to z/a, which admits x/a on UDP 5353 only, behind each chain
    of extension headers (hop-by-hop, destination options, routing, a mix, and more
    than the eBPF program walks itself): to 5354 nothing arrives; to 5353, sent after,
    every datagram does (the control: z/a's kernel takes each chain). Conntrack and
    ip6tables walk a chain whole, whatever its length, and the eBPF program takes the
    ports from the conntrack entry: its own bounded walk, for packets conntrack holds no
    entry for (above), decides no verdict."""
    pods, backend, _ = scoped
    sender, target = pods[6]["x/a"], pods[6]["z/a"]
    before = udp_in(target.netns, 6)
    for port in (DENIED_PORT, DNS_PORT):
        for chain in EXTENSION_CHAINS:
            send_raw(sender.netns, udp_packets(sender.ip, target.ip, port, COUNT, chain), target.ip)
    allowed = COUNT * len(EXTENSION_CHAINS)
    assert wait_until(lambda: udp_in(target.netns, 6) - before >= allowed, 5), (
        f"{backend}: {udp_in(target.netns, 6) - before} of {allowed} datagrams to an allowed "
        "port arrived behind extension headers"
    )
    time.sleep(0.2)
    arrived = udp_in(target.netns, 6) - before - allowed
    assert arrived == 0, f"{backend}: {arrived} datagrams to a denied port arrived"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_fragmented_datagram_is_judged_whole(scoped, family):
    """x/a to z/a, which admits x/a on UDP 5353 only: a 4,000-byte datagram (three
    fragments) to 5353 arrives whole; one to 5354 does not arrive at all, no fragment
    of it; sent first, it would have arrived before the allowed one that follows."""
    pods, backend, _ = scoped
    sender, target = pods[family]["x/a"], pods[family]["z/a"]
    fragments, whole = fragments_in(target.netns, family)
    datagrams = udp_in(target.netns, family)
    send_large_udp(sender.netns, target.ip, DENIED_PORT, DATAGRAM)
    send_large_udp(sender.netns, target.ip, DNS_PORT, DATAGRAM)
    assert wait_until(lambda: udp_in(target.netns, family) - datagrams >= 1, 5), (
        f"{backend}: a fragmented datagram to an allowed port did not arrive"
    )
    time.sleep(0.2)
    got = tuple(
        a - b for a, b in zip(fragments_in(target.netns, family), (fragments, whole), strict=True)
    )
    assert got == (3, 1), f"{backend}: (fragments, reassembled) at z/a: {got}, want (3, 1)"
    assert udp_in(target.netns, family) - datagrams == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_a_non_first_fragment_without_its_first_never_passes(scoped, family):
    """x/a's lone last fragment to z/a (the peer and protocol it admits, but a fragment
    carries no port), then a whole fragmented datagram to 5353: only the latter's three
    fragments reach z/a."""
    pods, backend, _ = scoped
    sender, target = pods[family]["x/a"], pods[family]["z/a"]
    fragments, whole = fragments_in(target.netns, family)
    send_raw(
        sender.netns,
        [lone_fragment(sender.ip, target.ip, 0x6400 + n) for n in range(COUNT)],
        target.ip,
    )
    send_large_udp(sender.netns, target.ip, DNS_PORT, DATAGRAM)
    assert wait_until(lambda: fragments_in(target.netns, family)[1] - whole >= 1, 5)
    time.sleep(0.2)
    got = fragments_in(target.netns, family)[0] - fragments
    assert got == 3, f"{backend}: {got - 3} lone fragments reached z/a"


@pytest.mark.parametrize(
    ("family", "kind"), [(4, UNREACHABLE[4]), (6, UNREACHABLE[6]), (6, PACKET_TOO_BIG)]
)
def test_an_icmp_error_of_no_connection_is_dropped(scoped, family, kind):
    """Port unreachable (ICMPv6 also packet too big) from x/a quoting a datagram z/b
    never sent: related to nothing, so z/b (isolated, admitting nothing from x/a) gets
    none; y/b, which no policy selects, gets them (the control)."""
    pods, backend, _ = scoped
    sender, target, control = (pods[family][ref] for ref in ("x/a", "z/b", "y/b"))
    too_big = kind == PACKET_TOO_BIG

    def errors_in(pod: LabPod) -> int:
        return icmp_in(pod.netns, kind, family)

    before, control_before = errors_in(target), errors_in(control)
    with _invalid_admitted_from(sender.ip):
        for pod in (target, control):
            send_raw(sender.netns, icmp_error_of_nothing(sender.ip, pod.ip, COUNT, too_big), pod.ip)
        assert wait_until(lambda: errors_in(control) - control_before >= COUNT, 5), (
            f"{backend}: the control's errors did not reach y/b"
        )
    time.sleep(0.2)
    arrived = errors_in(target) - before
    assert arrived == 0, f"{backend}: {arrived} unrelated type-{kind} errors reached z/b"


def _cross_node_pair(pods: Pods, namespace: str) -> tuple[LabPod, LabPod]:
    mine = [p for ref, p in sorted(pods.items()) if ref.startswith(f"{namespace}/")]
    pair = next(((a, b) for a in mine for b in mine if a.node != b.node), None)
    assert pair, f"the lab put every pod of {namespace} on one node: {mine}"
    return pair


@pytest.mark.parametrize("family", FAMILIES)
def test_path_mtu_discovery_works_for_an_allowed_connection(scoped, family):
    """A z pod sends 256 KiB over TCP to a z pod of the other node, whose node's link to
    it carries 1,280 bytes: that node answers full-size segments with "fragmentation
    needed" (ICMPv6: packet too big) from its own address, which only conntrack's
    RELATED lets into the client (isolated for ingress, admitting z's pods on TCP 7000
    and nothing from a node): the client's kernel counts them, and the data arrives."""
    pods, backend, _ = scoped
    client, server = _cross_node_pair(pods[family], "z")
    too_big = UNREACHABLE[4] if family == 4 else PACKET_TOO_BIG
    errors = icmp_in(client.netns, too_big, family)
    link, node = _host_side(server), node_of(server.node)
    payload = 256 * 1024
    received = bytearray()
    listener = socket_in(server.netns, AF[family], socket.SOCK_STREAM)
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

    mtu = ["ip", "-n", node.netns, "link", "set", link, "mtu"]
    subprocess.run([*mtu, str(LINK_MTU)], check=True)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket_in(client.netns, AF[family], socket.SOCK_STREAM) as sock:
            sock.setblocking(True)
            sock.settimeout(15)
            sock.connect((server.ip, BULK_PORT))
            sock.sendall(b"m" * payload)
            thread.join(15)
    finally:
        subprocess.run([*mtu, "1500"], check=True)
        subprocess.run(["ip", "-n", client.netns, "route", "flush", "cache"], check=False)
        subprocess.run(["ip", "-n", client.netns, "-6", "route", "flush", "cache"], check=False)
        listener.close()
    assert icmp_in(client.netns, too_big, family) > errors, f"{backend}: no type-{too_big} error"
    assert len(received) == payload, (
        f"{backend}: {len(received)} of {payload} bytes {client.ref} -> {server.ref} "
        f"(IPv{family}) across the {LINK_MTU}-byte link"
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
    connection as "no SYN". IPv4 only: both families' entries share the one table."""
    pods, backend, _ = scoped
    server, flooder = pods[4]["y/c"], pods[4]["x/b"]
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


def _answered_flow(client: LabPod, server: LabPod) -> socket.socket:
    """A UDP flow from `client`'s REPLAYED_PORT to `server`'s port 80 that `server`
    answered (so conntrack has it ESTABLISHED)."""
    flow = socket_in(client.netns, AF[family_of(client.ip)], socket.SOCK_DGRAM)
    flow.setblocking(True)
    flow.settimeout(2)
    flow.bind((client.ip, REPLAYED_PORT))
    flow.sendto(b"first", (server.ip, 80))
    assert flow.recv(200).startswith(server.ref.encode()), f"{server.ref} did not answer"
    return flow


def test_a_deleted_pods_connections_go_with_it(scoped):
    """Last in the module: it deletes y/a. x/a holds a UDP flow with y/a on each family;
    once y/a is deleted no entry of either of its addresses is left on any node, and a
    new pod at its IPv4 address (z/reused: z admits nothing from x/a) gets nothing of
    the same 5-tuple replayed: a new flow, judged and denied."""
    pods, backend, kubectl = scoped
    gone, client, control = pods[4]["y/a"], pods[4]["x/a"], pods[4]["y/b"]
    addresses = (gone.ip, pods[6]["y/a"].ip)
    with _answered_flow(client, gone) as flow, _answered_flow(pods[6]["x/a"], pods[6]["y/a"]):
        assert wait_until(lambda: all(_entries_with(ip) for ip in addresses), 5)
        kubectl("delete", "pod", "-n", "y", "a", "--wait=true")
        assert wait_until(lambda: not any(_entries_with(ip) for ip in addresses), 10), (
            f"{backend}: entries of deleted y/a left: {[_entries_with(ip) for ip in addresses]}"
        )
        reused = _pod_at(kubectl, "z", "reused", gone)
        assert wait_until(lambda: probe_once("x/a", "z/reused", "80") == "timeout"), (
            f"{backend}: z/reused admits x/a"
        )
        before, control_before = udp_in(reused.netns), udp_in(control.netns)
        for _ in range(COUNT):
            flow.sendto(b"replayed", (gone.ip, 80))
        for _ in range(COUNT):  # the control: once these arrived, the replays would have
            flow.sendto(b"control", (control.ip, 80))
        assert wait_until(lambda: udp_in(control.netns) - control_before >= COUNT, 5)
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
