"""The narrowing cleanup asks the kernel for the entries of the change's addresses only
(agent/dataplane/conntrack.py, CTA_FILTER): in a namespace of the test's own, with
entries put in through ctnetlink, it finds a connection by its client, by its server
and through a DNAT, removes what policy denies among them, and never reads the rest
(a denied connection of an address outside `touching` stays)."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from pyroute2 import Conntrack
from pyroute2.conntrack import NFCTAttrTuple

from agent.compiler.compile import compile_node
from agent.dataplane.conntrack import remove_denied
from tests.support.builders import model_cluster, policy, state_of
from tests.support.scratch_netns import scratch_netns

X_A, X_B, Y_A, Z_A = "198.18.1.1", "198.18.1.2", "198.18.1.11", "198.18.1.21"
CLUSTER_IP, NODE = "198.19.0.10", "198.18.0.1"
TCP = 6
NOISE = 300  # the host's own connections (scrapes in TIME_WAIT), never read


def _put(ct: Conntrack, client: str, sent_to: str, server: str, sport: int, port: int) -> None:
    ct.entry(
        "add",
        timeout=300,
        tuple_orig=NFCTAttrTuple(saddr=client, daddr=sent_to, proto=TCP, sport=sport, dport=port),
        tuple_reply=NFCTAttrTuple(saddr=server, daddr=client, proto=TCP, sport=port, dport=sport),
    )


def _left(ct: Conntrack) -> set[tuple[str, str, int]]:
    return {
        (e.tuple_orig.saddr, e.tuple_orig.daddr, e.tuple_orig.dport)
        for e in ct.dump_entries()
        if e.tuple_orig.dport != 9402
    }


@pytest.fixture
def table():
    with scratch_netns(), Conntrack() as ct:
        _put(ct, X_B, Y_A, Y_A, 40001, 80)  # denied: y admits only z
        _put(ct, X_B, CLUSTER_IP, Y_A, 40002, 80)  # denied, through a ClusterIP
        _put(ct, Y_A, X_A, X_A, 40003, 80)  # allowed: x is open
        _put(ct, X_B, Z_A, Z_A, 40004, 80)  # allowed: z is open
        _put(ct, Z_A, Y_A, Y_A, 40005, 80)  # allowed: from z
        for i in range(NOISE):
            _put(ct, "198.18.0.50", NODE, NODE, 20000 + i, 9402)
        yield ct


IR = compile_node(
    state_of(
        [
            *model_cluster(),
            policy(
                "y",
                "from-z",
                {
                    "podSelector": {},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}],
                },
            ),
        ]
    ),
    "node-1",
)
NODE_ADDRESSES = frozenset({ip_address(NODE)})


def test_the_entries_of_the_touched_server_are_judged_and_the_denied_removed(table):
    assert remove_denied(IR, NODE_ADDRESSES, touching=frozenset({ip_address(Y_A)})) == 2
    assert _left(table) == {(Y_A, X_A, 80), (X_B, Z_A, 80), (Z_A, Y_A, 80)}
    assert len(list(table.dump_entries())) == 3 + NOISE


def test_the_touched_client_finds_its_connections_and_others_are_not_read(table):
    # x/b is the client of both denied connections; z/a's only one is allowed.
    assert remove_denied(IR, NODE_ADDRESSES, touching=frozenset({ip_address(Z_A)})) == 0
    assert remove_denied(IR, NODE_ADDRESSES, touching=frozenset({ip_address(X_B)})) == 2
    assert _left(table) == {(Y_A, X_A, 80), (X_B, Z_A, 80), (Z_A, Y_A, 80)}


def test_without_touching_the_whole_table_is_judged_and_gone_reaches_the_sent_to_address(
    table,
):
    gone = frozenset({ip_address(X_A)})  # y/a's allowed connection to x/a goes with x/a
    assert remove_denied(IR, NODE_ADDRESSES, gone, touching=frozenset()) == 1
    assert remove_denied(IR, NODE_ADDRESSES) == 2
    assert _left(table) == {(X_B, Z_A, 80), (Z_A, Y_A, 80)}
