"""The drop log's pure parts: folding packets into connection records within a budget,
naming the parties and policies, and the service's records and summaries (fed with
packet events as the captures produce them; the captures are tested in the lab)."""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import io
import json
import re
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path

from agent.commands.agent_cmd import capture_source
from agent.compiler.compile import compile_node
from agent.dataplane import ebpf_layout
from agent.dataplane.iptables_render import render_chains
from agent.droplog.capture import open_capture
from agent.droplog.enrich import describe, describe_spoofed, record_fields
from agent.droplog.events import (
    DROP,
    INVALID,
    SPOOFED,
    UNPARSED,
    UNPROGRAMMED,
    WOULD_DROP,
    PacketEvent,
    parse_ipv4,
)
from agent.droplog.folding import Folder, Share
from agent.droplog.journal import RecordWriter
from agent.droplog.service import DropLog, DropLogSettings
from agent.loop.agent import Agent
from agent.model.live import LiveState
from tests.support.builders import model_cluster, policy, state_of
from tests.support.transit import ISOLATE_Y, web

DENY_Y = policy("y", "default-deny", {"podSelector": {}})
ALLOW_B = policy(
    "y",
    "allow-b",
    {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {}}]}]},
)


def syn(sport: int, src: str = "198.18.1.1", dst: str = "198.18.1.11", dport: int = 80):
    return PacketEvent("ingress", DROP, 6, IPv4Address(src), sport, IPv4Address(dst), dport)


def test_parse_ipv4_reads_protocol_addresses_and_ports():
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        40,
        1,
        0,
        64,
        6,
        0,
        bytes([198, 18, 1, 1]),
        bytes([198, 18, 1, 11]),
    )
    assert parse_ipv4(header + struct.pack("!HH", 41234, 5432)) == (
        6,
        IPv4Address("198.18.1.1"),
        41234,
        IPv4Address("198.18.1.11"),
        5432,
    )
    fragment = bytearray(header)
    fragment[6:8] = struct.pack("!H", 100)  # a non-first fragment has no ports
    assert parse_ipv4(bytes(fragment) + b"\0" * 8)[2::2] == (0, 0)
    assert parse_ipv4(b"\x60" + b"\0" * 39) is None  # IPv6


def test_repeats_fold_into_one_record_written_when_the_window_closes():
    folder = Folder(window=5, rate=10, burst=10)
    assert folder.open(syn(1000), now=0.0)
    assert folder.fold(syn(1000)) and folder.fold(syn(1000))
    assert not folder.fold(syn(1001))  # another connection
    assert folder.due(4.9) == []
    (record,) = folder.due(5.0)
    assert record.repeats == 3 and record.event == syn(1000)
    assert not folder.fold(syn(1000))  # a new attempt after the window


def test_a_flood_of_distinct_connections_is_held_to_the_budget():
    folder = Folder(window=5, rate=100, burst=200)
    opened, most_open = 0, 0
    for i in range(100_000):
        now = i / 10_000
        opened += folder.open(syn(1024 + i % 60000), now)
        if i % 100 == 0:
            folder.due(now)
            most_open = max(most_open, len(folder))
    # 10 s at 10,000 packets/s: the burst plus 100 per second, the rest counted.
    assert opened == 200 + 100 * 10 - 1 or opened == 200 + 100 * 10
    assert folder.suppressed == 100_000 - opened
    assert 200 <= most_open <= 200 + 100 * 5 + 1  # what is open at once stays bounded


def live_and_ir(objs):
    live = LiveState.from_state(state_of(objs))
    return live, compile_node(state_of(objs), "node-1")


def test_describe_names_pods_nodes_externals_and_isolating_policies():
    live, ir = live_and_ir([*model_cluster(), DENY_Y, ALLOW_B])
    d = describe(syn(41234, dst="198.18.1.12"), live, ir)  # x/a -> y/b
    assert (d.src.kind, d.src.namespace, d.src.pod) == ("pod", "x", "a")
    assert (d.dst.namespace, d.dst.pod, d.dst.port) == ("y", "b", 80)
    assert d.policies == ("y/default-deny",) and d.logged
    d = describe(syn(41234, dst="198.18.1.11"), live, ir)  # y/a: two policies
    assert d.policies == ("y/allow-b", "y/default-deny")
    d = describe(syn(5, src="198.18.0.2", dst="198.18.1.12"), live, ir)
    assert d.src.kind == "node" and d.src.name == "node 198.18.0.2"
    d = describe(syn(5, src="198.19.200.9", dst="198.18.1.12"), live, ir)
    assert (d.src.kind, d.src.namespace, d.src.pod) == ("external", "", "")


def test_describe_names_the_policies_of_a_transit_pod():
    # y/c runs on node-2; node-1 judged its ingress for a NodePort connection it DNATed.
    live, ir = live_and_ir(web(ISOLATE_Y))
    assert "y/c" in ir.transit
    d = describe(syn(5, src="198.19.200.9", dst="198.18.2.13"), live, ir)
    assert (d.dst.namespace, d.dst.pod) == ("y", "c") and d.policies == ("y/isolate",)


def test_record_fields_and_message():
    live, ir = live_and_ir([*model_cluster(), DENY_Y])
    event = syn(41234, dst="198.18.1.12")
    fields = record_fields(event, describe(event, live, ir), 2, "node-1")
    assert fields["MESSAGE"] == (
        "DROP ingress TCP x/a:41234 -> y/b:80; y/b is isolated by y/default-deny; "
        "no rule admits x/a on 80/TCP"
    )
    assert fields | {"MESSAGE": ""} == {
        "MESSAGE": "",
        "PICKET_VERDICT": "drop",
        "PICKET_REASON": "policy",
        "PICKET_DIRECTION": "ingress",
        "PICKET_PROTOCOL": "TCP",
        "PICKET_POLICIES": "y/default-deny",
        "PICKET_NODE": "node-1",
        "PICKET_REPEATS": "2",
        "PICKET_SRC_KIND": "pod",
        "PICKET_SRC_NAMESPACE": "x",
        "PICKET_SRC_POD": "a",
        "PICKET_SRC_IP": "198.18.1.1",
        "PICKET_SRC_PORT": "41234",
        "PICKET_DST_KIND": "pod",
        "PICKET_DST_NAMESPACE": "y",
        "PICKET_DST_POD": "b",
        "PICKET_DST_IP": "198.18.1.12",
        "PICKET_DST_PORT": "80",
    }
    audit = PacketEvent("ingress", WOULD_DROP, 17, event.src_ip, 5, event.dst_ip, 53)
    text = record_fields(audit, describe(audit, live, ir), 1, "node-1")["MESSAGE"]
    assert text.startswith("WOULD-DROP ingress UDP x/a:5 -> y/b:53;")
    assert text.endswith("(audit mode: let through)")


def test_opted_out_namespaces_are_not_logged():
    objs = [*model_cluster(), DENY_Y]
    for obj in objs:
        if obj["kind"] == "Namespace" and obj["metadata"]["name"] == "y":
            obj["metadata"]["annotations"] = {"picket.io/drop-log": "off"}
    live, ir = live_and_ir(objs)
    assert not describe(syn(1, dst="198.18.1.12"), live, ir).logged
    egress = PacketEvent(
        "egress", DROP, 6, IPv4Address("198.18.1.1"), 1, IPv4Address("198.18.1.12"), 80
    )
    assert describe(egress, live, ir).logged  # x/a's namespace logs


class FixedCache:
    """A CacheReader over a fixed (live state, IR), as the agent's is between syncs."""

    def __init__(self, live, ir) -> None:
        self.live, self.ir = live, ir

    def read_cache(self, read):
        return read(self.live, self.ir)


class ListCapture:
    def __init__(self) -> None:
        self.lost_events = 0

    def read(self, timeout):
        return []

    def lost(self):
        return self.lost_events

    def close(self):
        pass


def test_one_namespace_flooding_uses_only_its_share():
    folder = Folder(window=5, rate=100, burst=200, share=Share(rate=20, burst=50))
    # 5,000 per second for a second (the last at 1.0 s)
    noisy = sum(folder.open(syn(1024 + i), i / 5000, namespace="z") for i in range(5001))
    quiet = sum(folder.open(syn(30000 + i), i / 10, namespace="x") for i in range(10))
    assert 50 + 19 <= noisy <= 50 + 20  # its burst, then its rate over the second
    assert quiet == 10  # every one of them
    assert folder.suppressed_by == {"z": 5001 - noisy}


def test_the_node_budget_caps_all_namespaces_together():
    folder = Folder(window=5, rate=1, burst=3, share=Share(rate=10, burst=10))
    opened = [folder.open(syn(1024 + i), 0.0, namespace=f"ns{i}") for i in range(5)]
    assert opened == [True, True, True, False, False]
    assert folder.suppressed_by == {"ns3": 1, "ns4": 1}


def test_a_record_costs_the_senders_share():
    """z/a (198.18.1.21) floods y/b: z's share, not y's; x/a's attempt still opens."""
    settings = DropLogSettings(rate=100, burst=200, namespace_rate=1, namespace_burst=2)
    droplog, out = writing_droplog(settings)
    flood = [syn(1024 + i, src="198.18.1.21", dst="198.18.1.12") for i in range(10)]
    droplog.handle([*flood, syn(5000, dst="198.18.1.12")], now=0.0)
    droplog.flush(now=10.0)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    written = [r for r in records if r["PICKET_VERDICT"] == "drop"]
    assert sorted((r["PICKET_SRC_NAMESPACE"], r["PICKET_SRC_POD"]) for r in written) == [
        ("x", "a"), ("z", "a"), ("z", "a"),
    ]  # fmt: skip
    (summary,) = [r for r in records if r["PICKET_VERDICT"] == "suppressed"]
    assert summary["PICKET_SUPPRESSED_NAMESPACES"] == "z=8"
    assert ": z 8;" in summary["MESSAGE"] and "1/s, burst 2 per namespace" in summary["MESSAGE"]


def test_service_writes_one_record_per_connection_and_summaries():
    live, ir = live_and_ir([*model_cluster(), DENY_Y])
    out = io.StringIO()
    writer = RecordWriter(Path("/nonexistent/journal.socket"), out)
    capture = ListCapture()
    settings = DropLogSettings(rate=1, burst=2, window=5, summary_period=10)
    droplog = DropLog("node-1", capture, FixedCache(live, ir), writer, settings, clock=lambda: 0.0)
    droplog.handle([syn(1, dst="198.18.1.12")] * 3 + [syn(2, dst="198.18.1.12")], now=0.0)
    droplog.handle([syn(p, dst="198.18.1.12") for p in range(3, 13)], now=1.0)
    capture.lost_events = 4
    droplog.flush(now=10.0)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["PICKET_REPEATS"] for r in records[:-1]] == ["3", "1", "1"]
    assert records[-1]["PICKET_VERDICT"] == "suppressed"
    assert (records[-1]["PICKET_SUPPRESSED"], records[-1]["PICKET_LOST"]) == ("9", "4")
    assert all(r["SYSLOG_IDENTIFIER"] == "picket" for r in records)
    droplog.flush(now=30.0)
    assert len(out.getvalue().splitlines()) == 4  # nothing new: no second summary


def test_the_agent_is_the_drop_logs_cache_reader_and_holds_its_lock():
    agent = Agent("node-1", backend=None, kinds=[])
    agent.live, agent.ir = live_and_ir([*model_cluster(), DENY_Y])
    assert agent.read_cache(lambda live, ir: agent.lock.locked())
    out = io.StringIO()
    droplog = DropLog(
        "node-1", ListCapture(), agent, RecordWriter(Path("/nonexistent/j.socket"), out)
    )
    droplog.handle([syn(1, dst="198.18.1.12")], now=0.0)
    droplog.flush(now=0.0, final=True)
    (record,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (record["PICKET_DST_POD"], record["PICKET_POLICIES"]) == ("b", "y/default-deny")


def test_the_nflog_source_reads_the_prefixes_the_iptables_renderer_writes():
    source = capture_source(argparse.Namespace(backend="iptables", nflog_group=7), None)
    assert source.group == 7
    assert source.others == {
        "picket spoofed": ("egress", SPOOFED),
        "picket invalid ingress": ("ingress", INVALID),
        "picket invalid egress": ("egress", INVALID),
        "picket unprogrammed ingress": ("ingress", UNPROGRAMMED),
        "picket unprogrammed egress": ("egress", UNPROGRAMMED),
    }
    assert source.prefixes == {
        "picket drop ingress": ("ingress", DROP),
        "picket drop egress": ("egress", DROP),
        "picket audit ingress": ("ingress", WOULD_DROP),
        "picket audit egress": ("egress", WOULD_DROP),
    }
    deny_both = policy("y", "deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    ir = compile_node(state_of([*model_cluster(), deny_both]), "node-1")
    ir = dataclasses.replace(ir, pod_cidrs=(ip_network("198.18.1.0/24"),))
    chains = render_chains(ir, {ref: f"veth{i}" for i, ref in enumerate(ir.endpoints)}, 7)
    written = {
        m for rules in chains.values() for r in rules for m in re.findall(r'prefix "([^"]+)"', r)
    }
    assert written == {"picket drop ingress", "picket drop egress", *source.others}


class FakeRing:
    """The BCC calls the eBPF source is built on: a ring buffer and a counter."""

    def __init__(self) -> None:
        self.bpf, self.events, self.suppressed = self, [], 3

    def __getitem__(self, name):
        assert name == "picket_drops"
        return self

    def open_ring_buffer(self, callback):
        self.callback = callback

    def ring_buffer_poll(self, _milliseconds):
        for event in self.events:
            self.callback(None, ctypes.addressof(event), ctypes.sizeof(event))
        self.events = []

    def counters(self):
        return {"event_suppressed": self.suppressed}


def test_the_ring_source_decodes_policy_denials_with_the_ebpf_layout():
    ring = FakeRing()
    capture = open_capture(capture_source(argparse.Namespace(backend="ebpf"), ring))

    def event(direction, reason, sport):
        return ring_event("198.18.1.1", "198.18.1.12", direction, reason, sport)

    ring.events = [
        event(ebpf_layout.DIR_INGRESS, ebpf_layout.REASON_DROP_POLICY, 1),
        event(ebpf_layout.DIR_EGRESS, ebpf_layout.REASON_AUDIT_POLICY, 2),
        event(ebpf_layout.DIR_INGRESS, ebpf_layout.REASON_DROP_NO_SYN, 3),  # not a policy's
        event(ebpf_layout.DIR_EGRESS, ebpf_layout.REASON_DROP_SPOOFED, 0),
        event(ebpf_layout.DIR_INGRESS, ebpf_layout.REASON_DROP_UNPARSED, 0),
    ]
    ring.events[-2].ifindex = 42
    ring.events[-2].dport = ring.events[-1].dport = 0
    ring.suppressed = 7
    assert capture.read(0.2) == [
        syn(1, dst="198.18.1.12"),
        PacketEvent(
            "egress", WOULD_DROP, 6, IPv4Address("198.18.1.1"), 2, IPv4Address("198.18.1.12"), 80
        ),
        spoofed(42, src="198.18.1.1", dst="198.18.1.12", protocol=6),
        untracked(UNPARSED, "198.18.1.1", "198.18.1.12", protocol=6),
    ]
    assert capture.lost() == 4  # counted from the reader's start


def ring_event(src, dst, direction, reason, sport, service=None, protocol=6, dport=80):
    """A record as bpf/lib/events.h writes it: 16-byte addresses, IPv4 mapped."""
    family = ip_address(src).version  # FAMILY_IPV4 and FAMILY_IPV6 are the IP versions

    def packed(ip):
        address = ip_address(ip)
        return (bytes(10) + b"\xff\xff" if address.version == 4 else b"") + address.packed

    def addr(raw):
        return (ctypes.c_uint8 * 16)(*raw)

    return ebpf_layout.DropEvent(
        saddr=addr(packed(src)),
        daddr=addr(packed(dst)),
        service_addr=addr(packed(service[0]) if service else bytes(16)),
        service_port=service[1] if service else 0,
        sport=sport,
        dport=dport,
        protocol=protocol,
        direction=direction,
        reason=reason,
        family=family,
    )


def test_the_ring_source_decodes_ipv6_records():
    ring = FakeRing()
    capture = open_capture(capture_source(argparse.Namespace(backend="ebpf"), ring))
    ingress, egress = ebpf_layout.DIR_INGRESS, ebpf_layout.DIR_EGRESS
    ring.events = [
        ring_event("2001:2:0:1::1", "2001:2:0:1::c", ingress, ebpf_layout.REASON_DROP_POLICY, 5),
        # Sent to a Service's IPv6 ClusterIP, DNATed to the pod.
        ring_event(
            "2001:2:0:1::1",
            "2001:2:0:2::17",
            egress,
            ebpf_layout.REASON_DROP_POLICY,
            6,
            service=("fd00:10:96::a", 8080),
        ),
        # ICMPv6 echo: no ports. A forged IPv4-mapped source stays the IPv6 it was.
        ring_event(
            "::ffff:198.18.1.12",
            "2001:2:0:1::2",
            egress,
            ebpf_layout.REASON_DROP_SPOOFED,
            0,
            protocol=58,
            dport=0,
        ),
    ]
    ring.events[-1].ifindex = 9
    v6 = IPv6Address
    first, second, third = capture.read(0.2)
    assert first == PacketEvent("ingress", DROP, 6, v6("2001:2:0:1::1"), 5, v6("2001:2:0:1::c"), 80)
    assert (second.dst_ip, second.sent_to) == (v6("2001:2:0:2::17"), (v6("fd00:10:96::a"), 8080))
    assert third == spoofed(9, src="::ffff:198.18.1.12", dst="2001:2:0:1::2", protocol=58)
    assert third.src_ip.version == 6


def untracked(reason: str, src: str, dst: str, protocol: int = 17, direction: str = "ingress"):
    event = PacketEvent(direction, DROP, protocol, IPv4Address(src), 0, IPv4Address(dst), 0)
    return dataclasses.replace(event, reason=reason)


def test_untracked_packets_fold_per_pod_direction_and_reason_whatever_the_peer():
    folder = Folder(window=5, rate=10, burst=10)
    assert folder.open(untracked(INVALID, "198.18.1.1", "198.18.1.12"), now=0.0)
    assert folder.fold(untracked(INVALID, "198.18.9.9", "198.18.1.12", protocol=6))
    assert not folder.fold(untracked(UNPARSED, "198.18.1.1", "198.18.1.12"))  # another reason
    assert not folder.fold(untracked(INVALID, "198.18.1.1", "198.18.1.13"))  # another pod
    egress = untracked(INVALID, "198.18.1.12", "198.18.1.1", direction="egress")
    assert not folder.fold(egress)  # y/b's egress, not its ingress


def test_an_untracked_packet_says_why_and_names_the_isolated_pod():
    live, ir = live_and_ir([*model_cluster(), DENY_Y])
    event = untracked(UNPARSED, "198.18.1.1", "198.18.1.12", protocol=6)
    d = describe(event, live, ir)
    fields = record_fields(event, d, 3, "node-1")
    assert fields["MESSAGE"] == (
        "DROP ingress unparsed TCP x/a -> y/b; y/b is isolated by y/default-deny; its "
        "headers do not parse (truncated or malformed), so no rule can judge it"
    )
    assert (fields["PICKET_REASON"], fields["PICKET_POLICIES"]) == ("unparsed", "y/default-deny")
    assert "PICKET_SENDER_POD" not in fields


def test_a_pod_not_programmed_yet_folds_per_address_and_direction_and_says_so():
    live, ir = live_and_ir([*model_cluster(), DENY_Y])
    folder = Folder(window=5, rate=10, burst=10)
    first = untracked(UNPROGRAMMED, "198.18.1.1", "198.18.1.99", protocol=6)
    assert folder.open(first, now=0.0)
    assert folder.fold(untracked(UNPROGRAMMED, "198.18.1.2", "198.18.1.99"))  # any peer
    assert not folder.fold(untracked(UNPROGRAMMED, "198.18.1.1", "198.18.1.98"))
    fields = record_fields(first, describe(first, live, ir), 2, "node-1")
    assert fields["MESSAGE"] == (
        "DROP ingress unprogrammed TCP x/a -> external 198.18.1.99; the pod at 198.18.1.99 "
        "is not programmed yet (a new pod, or one started while the agent was down): its "
        "traffic is dropped until its policy is in place"
    )
    assert fields["PICKET_REASON"] == "unprogrammed"


def writing_droplog(settings: DropLogSettings, **kwargs) -> tuple[DropLog, io.StringIO]:
    """A drop log over the model with y isolated, writing JSON lines into the buffer."""
    live, ir = live_and_ir([*model_cluster(), DENY_Y])
    out = io.StringIO()
    writer = RecordWriter(Path("/nonexistent/journal.socket"), out)
    cache = FixedCache(live, ir)
    return DropLog("node-1", ListCapture(), cache, writer, settings, lambda: 0.0, **kwargs), out


def test_untracked_packets_are_recorded_but_not_counted_as_denied_connections():
    droplog, out = writing_droplog(DropLogSettings(window=5))
    droplog.handle([untracked(INVALID, f"198.18.1.{i}", "198.18.1.12") for i in (1, 2)], 0.0)
    droplog.flush(now=5.0)
    (record,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (record["PICKET_REASON"], record["PICKET_REPEATS"]) == ("invalid", "2")
    assert droplog.connections == {}


def spoofed(interface: int, src: str, dst: str = "198.18.1.12", protocol: int = 17):
    return PacketEvent(
        "egress", DROP, protocol, ip_address(src), 0, ip_address(dst), 0, None, SPOOFED, interface
    )


def test_forged_sources_fold_per_interface_whatever_they_forge():
    folder = Folder(window=5, rate=10, burst=10)
    assert folder.open(spoofed(7, "198.18.1.1"), now=0.0)
    assert folder.fold(spoofed(7, "198.18.9.9", dst="198.18.1.11"))  # same pod
    assert not folder.fold(spoofed(8, "198.18.1.1"))  # another pod's interface
    (record,) = folder.due(5.0)
    assert record.repeats == 2


def test_a_forged_source_names_the_pod_behind_the_interface_and_whom_it_posed_as():
    live, _ir = live_and_ir([*model_cluster(), DENY_Y])
    # x/b (198.18.1.2) posing as x/a (198.18.1.1) towards y/b
    event = spoofed(7, "198.18.1.1")
    d = describe_spoofed(event, live, "veth-xb", (IPv4Address("198.18.1.2"),))
    assert (d.sender.namespace, d.sender.pod) == ("x", "b") and d.logged
    fields = record_fields(event, d, 3, "node-1")
    assert fields["MESSAGE"] == (
        "DROP spoofed UDP from x/b (interface veth-xb) with source 198.18.1.1 (x/a) -> y/b; "
        "the source is not one of x/b's addresses"
    )
    assert fields["PICKET_REASON"] == "spoofed"
    assert (fields["PICKET_SENDER_NAMESPACE"], fields["PICKET_SENDER_POD"]) == ("x", "b")
    assert fields["PICKET_SENDER_INTERFACE"] == "veth-xb"
    assert (fields["PICKET_SRC_POD"], fields["PICKET_REPEATS"]) == ("a", "3")
    gone = describe_spoofed(spoofed(9, "198.19.0.1"), live, "", ())
    assert (
        "from an unknown pod (interface 9) with source 198.19.0.1 ->"
        in record_fields(spoofed(9, "198.19.0.1"), gone, 1, "node-1")["MESSAGE"]
    )


def test_the_service_asks_for_the_interfaces_owner_once_per_record():
    asked = []

    def owner(ifindex):
        asked.append(ifindex)
        return "veth-xb", (IPv4Address("198.18.1.2"),)

    droplog, out = writing_droplog(DropLogSettings(window=5), interface_owner=owner)
    droplog.handle([spoofed(7, f"198.18.1.{i}") for i in range(1, 40)], now=0.0)
    droplog.flush(now=5.0)
    (record,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert asked == [7] and record["PICKET_REPEATS"] == "39"
    assert record["PICKET_SENDER_POD"] == "b"
    assert droplog.connections == {}  # not a denied connection: counted as packets
