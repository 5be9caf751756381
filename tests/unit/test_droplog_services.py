"""The drop log names the Service a DNATed connection went through: the NFLOG packet and
its conntrack attributes parsed from bytes the kernel sent, the eBPF event's decoded
service address, the frontend lookup (ClusterIP, node port, externalIP), the record's
fields and message, and `picket drops` showing and filtering it."""

from __future__ import annotations

import argparse
import ctypes
import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.commands.agent_cmd import capture_source
from agent.compiler.compile import compile_node
from agent.dataplane import ebpf_layout
from agent.droplog.capture import open_capture
from agent.droplog.ct_attrs import original_destination
from agent.droplog.ct_support import refusal_reason
from agent.droplog.enrich import describe, record_fields
from agent.droplog.events import DROP, PacketEvent, sent_to
from agent.droplog.frontends import Via, via
from agent.droplog.nflog_wire import NFULA_CT, parse_packet_message
from agent.droplog.table import DropFilter, journal_matches, row
from agent.model.live import LiveState
from tests.support.builders import model_cluster, policy, service, state_of
from tests.support.drops import drop

# From scripts/capture-nflog-ct.py on Linux 6.18 (a netns; 198.18.250.3:5000 sends UDP to
# 198.18.250.1:53, DNATed to 198.18.250.2:5353): the NFLOG message of that packet at
# OUTPUT, and the ctnetlink dump entry of its connection. That kernel has no
# CONFIG_NETFILTER_NETLINK_GLUE_CT, so its NFLOG messages carry no NFULA_CT; what the
# glue puts in NFULA_CT is the attributes of a ctnetlink entry, past its nfgenmsg.
NFLOG_MESSAGE = bytes.fromhex(
    "780000000004000000000000000000000200004d080001000800030017000a007069636b65742064"
    "726f70206567726573730000080005000000000308000b000000000008000e000000000008000c00"
    "00000000210009004500001d47aa4000401172fac612fa03c612fa02138814e90009804671000000"
)
CTNETLINK_ENTRY = bytes.fromhex(
    "a400000000012200010000008017000002000000340001801400018008000100c612fa0308000200"
    "c612fa011c000280050001001100000006000200138800000600030000350000340002801400018008"
    "000100c612fa0208000200c612fa031c00028005000100110000000600020014e9000006000300138800"
    "0008000300000001a8080008000000000008000c00138286db08000b0000000002080007000000001d"
)
CT_ATTRIBUTES = CTNETLINK_ENTRY[20:]  # past nlmsghdr and nfgenmsg
NLA_F_NESTED = 0x8000


def with_conntrack(message: bytes, attributes: bytes) -> bytes:
    """`message` with an NFULA_CT attribute holding `attributes` appended, as
    nfulnl_log_packet puts it (nested, after the payload), the length fixed up."""
    ct = struct.pack("=HH", 4 + len(attributes), NFULA_CT | NLA_F_NESTED) + attributes
    ct += b"\0" * (-len(ct) % 4)
    body = message + ct
    return struct.pack("=I", len(body)) + body[4:]


def test_a_real_nflog_message_parses_without_conntrack():
    packet = parse_packet_message(NFLOG_MESSAGE)
    assert packet is not None
    assert packet.prefix == "picket drop egress"
    assert (packet.seq, packet.indev, packet.outdev, packet.conntrack) == (0, None, 3, None)
    assert packet.payload[12:20] == bytes([198, 18, 250, 3, 198, 18, 250, 2])


def test_the_conntrack_attribute_gives_the_original_destination():
    packet = parse_packet_message(with_conntrack(NFLOG_MESSAGE, CT_ATTRIBUTES))
    assert packet is not None and packet.conntrack == CT_ATTRIBUTES
    assert packet.payload == parse_packet_message(NFLOG_MESSAGE).payload
    original = original_destination(packet.conntrack)
    assert original == (IPv4Address("198.18.250.1"), 53)
    # the packet says 198.18.250.2:5353: the event keeps where the client sent it
    assert sent_to(17, IPv4Address("198.18.250.2"), 5353, original) == original


def test_only_the_original_tuple_counts():
    tuple_reply_only = bytearray(CT_ATTRIBUTES)
    tuple_reply_only[2:4] = struct.pack("=H", 7 | NLA_F_NESTED)  # CTA_TUPLE_ORIG renamed
    assert original_destination(bytes(tuple_reply_only)) is None
    assert original_destination(b"") is None


@pytest.mark.parametrize("cut", range(len(CT_ATTRIBUTES)))
def test_cut_attributes_read_as_no_original_destination_or_the_right_one(cut):
    found = original_destination(CT_ATTRIBUTES[:cut])
    assert found in (None, (IPv4Address("198.18.250.1"), 53), (IPv4Address("198.18.250.1"), 0))


@given(st.binary(max_size=256))
def test_any_bytes_parse_without_raising(data):
    original_destination(data)
    parse_packet_message(NFLOG_MESSAGE[:20] + data)


@pytest.mark.parametrize(
    ("protocol", "dst", "dport", "original", "expected"),
    [
        (6, "198.18.1.12", 80, ("198.19.0.10", 8080), ("198.19.0.10", 8080)),
        (6, "198.18.1.12", 80, ("198.18.1.12", 80), None),  # direct
        (6, "198.18.1.12", 80, ("198.18.1.12", 8080), ("198.18.1.12", 8080)),  # port DNAT
        (6, "198.18.1.12", 80, ("0.0.0.0", 0), None),  # eBPF: DNAT left it alone
        (1, "198.18.1.12", 0, ("198.18.1.12", 2048), None),  # ICMP id/type are no ports
        (1, "198.18.1.12", 0, ("198.19.0.10", 2048), ("198.19.0.10", 0)),
        (17, "198.18.1.12", 53, None, None),  # no conntrack entry
    ],
)
def test_sent_to_is_the_original_destination_only_where_dnat_changed_it(
    protocol, dst, dport, original, expected
):
    original = None if original is None else (IPv4Address(original[0]), original[1])
    got = sent_to(protocol, IPv4Address(dst), dport, original)
    assert got == (None if expected is None else (IPv4Address(expected[0]), expected[1]))


def test_a_refusal_names_the_missing_kernel_option_or_the_module():
    built_without = "CONFIG_NF_CT_NETLINK=y\n# CONFIG_NETFILTER_NETLINK_GLUE_CT is not set\n"
    assert "built without CONFIG_NETFILTER_NETLINK_GLUE_CT" in refusal_reason(built_without, False)
    with_glue = "CONFIG_NF_CT_NETLINK=m\nCONFIG_NETFILTER_NETLINK_GLUE_CT=y\n"
    assert "modprobe nf_conntrack_netlink" in refusal_reason(with_glue, False)
    assert "nf_conntrack_netlink is not loaded" in refusal_reason(with_glue, False)
    assert "unreadable" in refusal_reason(None, True)


def test_the_ring_source_decodes_the_service_address():
    class Ring:
        bpf = None

        def __getitem__(self, _name):
            return self

        def open_ring_buffer(self, callback):
            self.callback = callback

        def ring_buffer_poll(self, _ms):
            for e in self.events:
                self.callback(None, ctypes.addressof(e), ctypes.sizeof(e))

        def counters(self):
            return {}

    ring = Ring()
    ring.bpf = ring
    capture = open_capture(capture_source(argparse.Namespace(backend="ebpf"), ring))
    # 16-byte addresses, IPv4 mapped (bpf/picket.h), the family the IP version.
    addr = lambda ip: ebpf_layout.Addr(*bytes(10), 0xFF, 0xFF, *IPv4Address(ip).packed)  # noqa: E731
    v4 = ebpf_layout.FAMILY_IPV4
    ring.events = [
        ebpf_layout.DropEvent(
            saddr=addr("198.18.1.1"), daddr=addr("198.18.1.12"), sport=5, dport=80,
            service_addr=addr("198.19.0.10"), service_port=8080, protocol=6,
            direction=ebpf_layout.DIR_EGRESS, reason=ebpf_layout.REASON_DROP_POLICY, family=v4,
        ),
        ebpf_layout.DropEvent(
            saddr=addr("198.18.1.1"), daddr=addr("198.18.1.12"), sport=6, dport=80,
            protocol=6, direction=ebpf_layout.DIR_EGRESS, reason=ebpf_layout.REASON_DROP_POLICY,
            family=v4,
        ),
    ]  # fmt: skip
    via_service, direct = capture.read(0)
    assert via_service.sent_to == (IPv4Address("198.19.0.10"), 8080)
    assert direct.sent_to is None


WEB = service("y", "web", selector={"pod": "b"}, external_ips=["198.19.9.9"])
DNS = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"namespace": "kube-system", "name": "kube-dns"},
    "spec": {
        "clusterIP": "198.19.0.53",
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}],
    },
}
HEADLESS = service("y", "web-headless", service_type="ClusterIP") | {
    "spec": {"clusterIP": "None", "ports": [{"port": 80, "protocol": "TCP"}]}
}


def live() -> LiveState:
    return LiveState.from_state(state_of([*model_cluster(), WEB, DNS, HEADLESS]))


@pytest.mark.parametrize(
    ("sent", "protocol", "expected"),
    [
        (("198.19.0.10", 80), "TCP", ("y/web", "ClusterIP")),
        (("198.19.0.10", 80), "UDP", ("", "")),  # the port is TCP's only
        (("198.19.0.10", 81), "TCP", ("", "")),
        (("198.19.0.53", 53), "UDP", ("kube-system/kube-dns", "ClusterIP")),
        (("198.18.0.2", 30080), "TCP", ("y/web", "NodePort")),  # any node's address
        (("198.18.1.1", 30080), "TCP", ("", "")),  # a node port on a pod's address
        (("198.19.9.9", 80), "TCP", ("y/web", "externalIP")),
        (("198.19.9.9", 30080), "TCP", ("", "")),
    ],
)
def test_via_finds_the_service_whose_frontend_the_client_sent_to(sent, protocol, expected):
    ip, port = IPv4Address(sent[0]), sent[1]
    assert via(live(), (ip, port), protocol) == Via(ip, port, *expected)


def test_via_is_none_for_a_connection_dnat_left_alone():
    assert via(live(), None, "TCP") is None


def egress(sport: int, dst: str, dport: int, sent: tuple[str, int] | None) -> PacketEvent:
    original = None if sent is None else (IPv4Address(sent[0]), sent[1])
    return PacketEvent(
        "egress", DROP, 6, IPv4Address("198.18.1.1"), sport, IPv4Address(dst), dport, original
    )


LOCK_A = policy(
    "x", "a-locked", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]}
)


def fields_of(event: PacketEvent) -> dict[str, str]:
    objs = [*model_cluster(), WEB, DNS, LOCK_A]
    state = LiveState.from_state(state_of(objs))
    return record_fields(
        event, describe(event, state, compile_node(state_of(objs), "node-1")), 1, "n"
    )


def test_a_record_through_a_cluster_ip_names_client_backend_and_service():
    fields = fields_of(egress(41234, "198.18.1.12", 80, ("198.19.0.10", 80)))
    assert fields["MESSAGE"] == (
        "DROP egress TCP x/a:41234 -> y/b:80 via Service y/web 198.19.0.10:80; "
        "x/a is isolated by x/a-locked; no rule admits y/b on 80/TCP"
    )
    assert {k: fields[k] for k in fields if k.startswith("PICKET_SERVICE")} == {
        "PICKET_SERVICE": "y/web",
        "PICKET_SERVICE_IP": "198.19.0.10",
        "PICKET_SERVICE_PORT": "80",
        "PICKET_SERVICE_FRONTEND": "ClusterIP",
    }
    assert (fields["PICKET_SRC_POD"], fields["PICKET_DST_POD"]) == ("a", "b")


def test_a_node_port_and_an_unknown_dnat_say_so():
    node_port = fields_of(egress(1, "198.18.1.12", 80, ("198.18.0.1", 30080)))
    assert " -> y/b:80 via Service y/web NodePort 198.18.0.1:30080;" in node_port["MESSAGE"]
    unknown = fields_of(egress(2, "198.18.1.12", 80, ("198.19.7.7", 80)))
    assert " -> y/b:80 via 198.19.7.7:80 (no Service known);" in unknown["MESSAGE"]
    assert (unknown["PICKET_SERVICE"], unknown["PICKET_SERVICE_IP"]) == ("", "198.19.7.7")


def test_a_direct_drop_is_unchanged():
    fields = fields_of(egress(41234, "198.18.1.12", 80, None))
    assert not [k for k in fields if k.startswith("PICKET_SERVICE")]
    assert fields["MESSAGE"].startswith("DROP egress TCP x/a:41234 -> y/b:80; x/a is isolated")


THROUGH_WEB = drop(
    PICKET_SERVICE="y/web", PICKET_SERVICE_IP="198.19.0.10", PICKET_SERVICE_PORT="80"
)


def test_the_table_shows_the_service_in_the_destination():
    assert row(THROUGH_WEB)[6] == "y/db:5432 via y/web"
    unknown = drop(PICKET_SERVICE="", PICKET_SERVICE_IP="198.19.7.7", PICKET_SERVICE_PORT="80")
    assert row(unknown)[6] == "y/db:5432 via 198.19.7.7:80"
    assert row(drop())[6] == "y/db:5432"


@pytest.mark.parametrize(
    ("wanted", "expected"), [("y/web", True), ("web", True), ("x/web", False), ("we", False)]
)
def test_the_service_filter_matches_by_name_or_namespace_and_name(wanted, expected):
    assert DropFilter(service=wanted).matches(THROUGH_WEB) is expected
    assert DropFilter(service=wanted).matches(drop()) is False


def test_the_service_filter_narrows_journalctl_when_it_is_exact():
    assert "PICKET_SERVICE=y/web" in journal_matches(DropFilter(service="y/web"))
    assert journal_matches(DropFilter(service="web")) == ["SYSLOG_IDENTIFIER=picket"]
    assert not DropFilter(service="web").matches(drop(PICKET_VERDICT="suppressed"))
