"""The conntrack cleanup's requests per address family (pure parts; the kernel's
answers are tested in tests/lab/test_iptables_families_kernel.py): which dumps find
an address's entries, which entries an IPv6 table read whole keeps, the tuple a delete
names (family, ports or ICMP id/type/code), and an IPv6 entry's real ends."""

from __future__ import annotations

import socket
from ipaddress import ip_address

import pytest
from pyroute2.conntrack import NFCTAttrTuple

from agent.dataplane.conntrack import delete_tuple, dump_filters, real_ends, touches

A4, A6, B6 = ip_address("198.18.1.11"), ip_address("2001:2:0:1::11"), ip_address("2001:2:0:1::12")
V4, V6 = socket.AF_INET, socket.AF_INET6


def _where(filters):
    return [(key, t.family, t.saddr, t.daddr) for f in filters for key, t in sorted(f.items())]


@pytest.mark.parametrize(
    ("af", "addresses", "expected"),
    [
        (
            V4,
            {A4, A6},
            [
                ("tuple_orig", V4, "198.18.1.11", None),
                ("tuple_orig", V4, None, "198.18.1.11"),
                ("tuple_reply", V4, "198.18.1.11", None),
            ],
        ),
        (
            V6,
            {A4, A6},
            [
                ("tuple_orig", V6, "2001:2:0:1::11", None),
                ("tuple_orig", V6, None, "2001:2:0:1::11"),
                ("tuple_reply", V6, "2001:2:0:1::11", None),
            ],
        ),
        (V6, {A4}, []),  # nothing of the family: no dump at all
    ],
)
def test_each_family_asks_for_its_own_addresses(af, addresses, expected):
    assert _where(dump_filters(af, addresses)) == expected


def _tcp6(client, server, sport=40001, port=80, sent_to=None):
    orig = NFCTAttrTuple(
        family=V6, saddr=str(client), daddr=str(sent_to or server), proto=6, sport=sport, dport=port
    )
    reply = NFCTAttrTuple(
        family=V6, saddr=str(server), daddr=str(client), proto=6, sport=port, dport=sport
    )
    return orig, reply


@pytest.mark.parametrize(
    ("client", "server", "sent_to", "wanted", "found"),
    [
        (A6, B6, None, {A6}, True),  # the client
        (B6, A6, None, {A6}, True),  # the server
        (B6, A6, "2001:2:0:ff00::10", {ip_address("2001:2:0:ff00::10")}, True),  # sent to
        (B6, ip_address("2001:2:0:1::21"), None, {A6}, False),  # neither end
    ],
)
def test_an_ipv6_table_read_whole_keeps_the_entries_of_the_addresses(
    client, server, sent_to, wanted, found
):
    orig, reply = _tcp6(client, server, sent_to=sent_to)
    assert touches(orig, reply, frozenset(wanted)) is found


def test_a_delete_names_the_entry_in_its_family_with_its_ports():
    orig, _ = _tcp6(A6, B6)
    named = delete_tuple(orig)
    assert (named.family, named.saddr, named.daddr, named.proto) == (V6, str(A6), str(B6), 6)
    assert (named.sport, named.dport, named.icmp_id) == (40001, 80, None)


@pytest.mark.parametrize(("af", "proto"), [(V4, 1), (V6, 58)])
def test_a_delete_of_an_icmp_entry_names_its_id_type_and_code(af, proto):
    src, dst = ("198.18.1.1", "198.18.1.11") if af == V4 else (str(A6), str(B6))
    orig = NFCTAttrTuple(
        family=af, saddr=src, daddr=dst, proto=proto, icmp_id=7, icmp_type=8, icmp_code=0
    )
    named = delete_tuple(orig)
    assert (named.family, named.icmp_id, named.icmp_type, named.icmp_code) == (af, 7, 8, 0)
    assert named.sport is None and named.dport is None


def test_the_real_ends_of_an_ipv6_connection_through_a_cluster_ip():
    orig, reply = _tcp6(A6, B6, sent_to="2001:2:0:ff00::10")
    ends = real_ends(orig, reply)
    assert (ends.client, ends.server, ends.protocol, ends.port, ends.dnat) == (
        A6,
        B6,
        "TCP",
        80,
        True,
    )
    echo = NFCTAttrTuple(family=V6, saddr=str(A6), daddr=str(B6), proto=58, icmp_id=1)
    answer = NFCTAttrTuple(family=V6, saddr=str(B6), daddr=str(A6), proto=58, icmp_id=1)
    ends = real_ends(echo, answer)
    assert (ends.protocol, ends.port, ends.dnat) == ("58", None, False)
