"""The Python mirror of bpf/picket.h: identities, flags, reason codes, config slots and
struct layouts. tests/unit/test_ebpf_layout.py parses the header and checks this file
against it, so the two cannot drift apart."""

from __future__ import annotations

import ctypes

from agent.model.objects import IP_PROTOCOL_NUMBERS

DIR_INGRESS, DIR_EGRESS = 0, 1

IDENTITY_ANY = 0
IDENTITY_HOST = 1
IDENTITY_WORLD = 2
IDENTITY_POD_FIRST = 256
IDENTITY_CIDR_FIRST = 16777216

EP_INGRESS_ISOLATED = 1
EP_EGRESS_ISOLATED = 2
EP_NAMED_EGRESS = 4
EP_AUDIT = 8

REASON_ALLOWED_POLICY = 0
REASON_ALLOWED_CT = 1
REASON_ALLOWED_NOT_ISOLATED = 2
REASON_ALLOWED_HOST = 3
REASON_ALLOWED_OTHER = 4
REASON_DROP_POLICY = 5
REASON_DROP_NO_SYN = 6
REASON_EVENT_SUPPRESSED = 7
REASON_AUDIT_POLICY = 8
REASON_DROP_INVALID = 9
REASON_ALLOWED_UPSTREAM = 10
REASON_DROP_SPOOFED = 11
REASON_DROP_UNPARSED = 12
REASON_DROP_FRAGMENT = 13
REASON_DROP_UNPROGRAMMED = 14
REASON_COUNT = 15
REASON_SLOTS = 16  # per direction in the pinned verdicts map: room for new reasons
DIRECTIONS = 2
FAMILIES = 2  # the verdict counters: IPv4's slots, then IPv6's
DROP_COUNTS_PER_ENDPOINT = 16  # room per endpoint: 13 keys a family, rarely 4 a family met
DROP_COUNT_REASONS = (
    REASON_DROP_POLICY,
    REASON_DROP_NO_SYN,
    REASON_AUDIT_POLICY,
    REASON_DROP_INVALID,
    REASON_DROP_SPOOFED,
    REASON_DROP_UNPARSED,
    REASON_DROP_FRAGMENT,
)
REASON_NAMES = {
    REASON_ALLOWED_POLICY: "allowed_policy",
    REASON_ALLOWED_CT: "allowed_conntrack",
    REASON_ALLOWED_NOT_ISOLATED: "allowed_not_isolated",
    REASON_ALLOWED_HOST: "allowed_host",
    REASON_ALLOWED_OTHER: "allowed_not_policed",
    REASON_DROP_POLICY: "dropped_policy",
    REASON_DROP_NO_SYN: "dropped_no_syn",
    REASON_EVENT_SUPPRESSED: "event_suppressed",
    REASON_AUDIT_POLICY: "would_drop_policy",
    REASON_DROP_INVALID: "dropped_invalid",
    REASON_ALLOWED_UPSTREAM: "allowed_upstream",
    REASON_DROP_SPOOFED: "dropped_spoofed",
    REASON_DROP_UNPARSED: "dropped_unparsed",
    REASON_DROP_FRAGMENT: "dropped_fragment",
    REASON_DROP_UNPROGRAMMED: "dropped_unprogrammed",
}

FAMILY_IPV4, FAMILY_IPV6 = 4, 6  # the drop event's and drop count's `family`: the IP version


def verdict_slot(family: int, direction: int, reason: int) -> int:
    """The verdict counter of (family, direction, reason): count_packet's slot
    (bpf/lib/events.h)."""
    return ((family == FAMILY_IPV6) * DIRECTIONS + direction) * REASON_SLOTS + reason


# Every map address is 16 bytes: IPv6 as it is, IPv4 mapped (::ffff:a.b.c.d), an IPv4
# prefix /n as /(96 + n) in the LPM tries.
ADDR_BYTES = 16
IPV4_MAPPED_BITS = 96

PICKET_POD_CIDR_ENTRIES = 16  # the node's pod CIDRs (lpm_trie picket_pod_cidrs)
UNPROGRAMMED_ENDPOINT = 0  # the drop events of pods not programmed yet
ADDRS_PER_ENDPOINT = 2  # room per endpoint in sources, transit, transit_home: a family each

TRUSTED_CTMARK = 16777216  # 0x01000000: agent/dataplane/transit_mark.py

# Slots 0-3 held the TC datapath's connection timeouts (kept free: see picket.h).
CONFIG_ENDPOINT_EVENTS_PER_SECOND = 0
CONFIG_ENDPOINT_EVENTS_BURST = 1
CONFIG_EVENTS_PER_SECOND = 4
CONFIG_EVENTS_BURST = 5
CONFIG_COUNT = 6

PROTOCOL_NUMBERS = IP_PROTOCOL_NUMBERS

# Bits of the policy LPM key before protocol and port: endpoint, direction, pad, identity.
POLICY_EXACT_BITS = 96
POLICY_PROTOCOL_BITS = 104
POLICY_FULL_BITS = 120


Addr = ctypes.c_uint8 * ADDR_BYTES


class AddrKey(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("addr", Addr)]


class AddrValue(ctypes.Structure):
    _fields_ = [("pod_identity", ctypes.c_uint32), ("cidr_identity", ctypes.c_uint32)]


class EndpointValue(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class TransitKey(ctypes.Structure):
    _fields_ = [("addr", Addr)]


class TransitHomeKey(ctypes.Structure):
    _fields_ = [("endpoint", ctypes.c_uint32), ("addr", Addr)]


class SourceKey(ctypes.Structure):
    _fields_ = [("ifindex", ctypes.c_uint32), ("addr", Addr)]


class PolicyKey(ctypes.Structure):
    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("endpoint", ctypes.c_uint8 * 4),
        ("direction", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
        ("identity", ctypes.c_uint8 * 4),
        ("protocol", ctypes.c_uint8),
        ("port", ctypes.c_uint8 * 2),
    ]


class NamedKey(ctypes.Structure):
    _fields_ = [
        ("endpoint", ctypes.c_uint32),
        ("daddr", Addr),
        ("port", ctypes.c_uint16),
        ("protocol", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class DropEvent(ctypes.Structure):
    _fields_ = [
        ("timestamp_ns", ctypes.c_uint64),
        ("saddr", Addr),
        ("daddr", Addr),
        ("service_addr", Addr),
        ("endpoint", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("service_port", ctypes.c_uint16),
        ("protocol", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("reason", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 6),
    ]


class DropCountKey(ctypes.Structure):
    _fields_ = [
        ("endpoint", ctypes.c_uint32),
        ("direction", ctypes.c_uint8),
        ("reason", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class RateState(ctypes.Structure):
    _fields_ = [("tokens_milli", ctypes.c_uint64), ("last_ns", ctypes.c_uint64)]


STRUCTS = {
    "addr_key": AddrKey,
    "addr_value": AddrValue,
    "endpoint_value": EndpointValue,
    "transit_key": TransitKey,
    "transit_home_key": TransitHomeKey,
    "source_key": SourceKey,
    "policy_key": PolicyKey,
    "named_key": NamedKey,
    "drop_event": DropEvent,
    "drop_count_key": DropCountKey,
    "rate_state": RateState,
}
