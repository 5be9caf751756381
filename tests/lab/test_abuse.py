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

- A pod's connection state goes with the pod: once it is deleted no conntrack entry of
  its address is left on any node, so a new pod there inherits nothing.

Arrivals are counted by the receiving pod's kernel (its /proc/net/snmp), not by Picket."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from lab.config import LabNode
from tests.support.agent_metrics import metric_sum, node_of
from tests.support.connection import Connection
from tests.support.enforcement import apply, probe_once
from tests.support.lab_cli import Kubectl, LabPod, drop_records, lab_pods, model_lab, wait_until
from tests.support.policies import BACKENDS, netpol, ns_peer, pods_peer, sel
from tests.support.raw_packets import icmp_in, send_icmp, send_udp_from, udp_in

COUNT = 5
DROPPED = "picket_dropped_packets_total"
DROP_LOG_WINDOW = 5.0  # the agent's default --drop-log-window: a record is written when it closes
ECHO, TIMESTAMP, UNKNOWN = 8, 13, 42  # 42: no ICMP type conntrack knows (INVALID)


@pytest.fixture(scope="module", params=BACKENDS)
def scoped(request: pytest.FixtureRequest) -> Iterator[tuple[dict[str, LabPod], str, Kubectl]]:
    with model_lab(request.param) as kubectl:
        apply(
            kubectl,
            # z's pods isolated for ingress, nothing admitted.
            netpol("z", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]}),
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
    counted = metric_sum(node, DROPPED, reason="spoofed")
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
    assert wait_until(lambda: metric_sum(node, DROPPED, reason="spoofed") - counted >= COUNT, 5)

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


def test_a_deleted_pods_connections_go_with_it(scoped):
    """Last in the module: it deletes y/a."""
    pods, backend, kubectl = scoped
    gone = pods["y/a"]
    send_udp_from(pods["x/a"].netns, pods["x/a"].ip, gone.ip, 80, COUNT)
    assert wait_until(lambda: len(_entries_with(gone.ip)) > 0, 5)
    kubectl("delete", "pod", "-n", "y", "a", "--wait=true")
    assert wait_until(lambda: not _entries_with(gone.ip), 10), (
        f"{backend}: entries of deleted y/a left: {_entries_with(gone.ip)}"
    )
