"""The byte codecs against the ctypes layouts they are derived from: what `codec`
packs is, byte for byte, the structure ctypes builds (which test_ebpf_layout holds to
bpf/picket.h)."""

from __future__ import annotations

import ctypes
from ipaddress import IPv4Address, IPv6Address, ip_address

from hypothesis import given
from hypothesis import strategies as st

from agent.dataplane import ebpf_layout as layout
from agent.dataplane.ebpf import codec
from agent.dataplane.ebpf.entries import PolicyEntry

u8, u16, u32 = (st.integers(0, 2**bits - 1) for bits in (8, 16, 32))
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(IPv4Address(n)))
# Native IPv6, outside ::ffff:0:0/96 (where the maps keep IPv4: no pod's address).
ipv6 = st.integers(0, 2**128 - 1).map(IPv6Address).filter(lambda a: a.ipv4_mapped is None).map(str)
addresses = ipv4 | ipv6


def be(value: int, width: int) -> ctypes.Array:
    return (ctypes.c_uint8 * width)(*value.to_bytes(width, "big"))


def mapped(address: str) -> ctypes.Array:
    """An address as bpf/picket.h keeps it: 16 bytes, IPv4 as ::ffff:a.b.c.d."""
    ip = ip_address(address)
    as_v6 = IPv6Address(f"::ffff:{ip}") if ip.version == 4 else ip
    return be(int(as_v6), 16)


@given(u32, u8, u32, st.none() | u8, u16, st.integers(0, 16))
def test_policy_key(endpoint, direction, identity, protocol, port, bits):
    entry = PolicyEntry(endpoint, direction, identity, protocol, port, bits)
    want = layout.PolicyKey(
        prefixlen=entry.prefixlen,
        endpoint=be(endpoint, 4),
        direction=direction,
        identity=be(identity, 4),
        protocol=protocol or 0,
        port=be(port, 2),
    )
    assert codec.policy_key(entry) == bytes(want)


@given(ipv4, st.integers(0, 32))
def test_an_ipv4_addr_key_is_mapped_and_round_trips(address, bits):
    raw = codec.addr_key((address, bits))
    want = layout.AddrKey(prefixlen=96 + bits, addr=mapped(address))
    assert raw == bytes(want)
    assert codec.addr_key_from_bytes(raw) == (address, bits)


@given(ipv6, st.integers(0, 128))
def test_an_ipv6_addr_key_round_trips(address, bits):
    raw = codec.addr_key((address, bits))
    assert raw == bytes(layout.AddrKey(prefixlen=bits, addr=mapped(address)))
    assert codec.addr_key_from_bytes(raw) == (address, bits)


def test_ipv4_sits_inside_ipv4_mapped_space_in_the_trie():
    # 0.0.0.0/0 is ::ffff:0:0/96: an IPv4 ipBlock holds no native IPv6 address.
    assert codec.addr_key(("0.0.0.0", 0)) == codec.addr_key(("::ffff:0:0", 96))
    assert codec.addr_key_from_bytes(codec.addr_key(("::ffff:0:0", 96))) == ("0.0.0.0", 0)
    assert codec.addr_key_from_bytes(codec.addr_key(("::", 0))) == ("::", 0)
    assert codec.addr_bytes("198.18.1.1") == bytes(10) + b"\xff\xff" + bytes([198, 18, 1, 1])
    assert codec.addr_from_bytes(codec.addr_bytes("198.18.1.1")) == IPv4Address("198.18.1.1")
    assert codec.addr_from_bytes(codec.addr_bytes("2001:2::1")) == IPv6Address("2001:2::1")


@given(u32, addresses, u8, u16)
def test_named_key(endpoint, address, protocol, port):
    want = layout.NamedKey(endpoint=endpoint, daddr=mapped(address), port=port, protocol=protocol)
    assert codec.named_key((endpoint, address, protocol, port)) == bytes(want)


@given(u32, addresses)
def test_address_keys_of_both_families(number, address):
    assert codec.source_key(number, address) == bytes(layout.SourceKey(number, mapped(address)))
    assert codec.transit_key(address) == bytes(layout.TransitKey(mapped(address)))
    want = layout.TransitHomeKey(number, mapped(address))
    assert codec.transit_home_key((number, address)) == bytes(want)


@given(u32, u32)
def test_values(first, second):
    assert codec.addr_value(first, second) == bytes(layout.AddrValue(first, second))
    assert codec.endpoint_value(first, second) == bytes(layout.EndpointValue(first, second))
    assert codec.endpoint_key(first) == bytes(ctypes.c_uint32(first))
    slot, value = codec.config_entry(first, second)
    assert (slot, value) == (bytes(ctypes.c_uint32(first)), bytes(ctypes.c_uint64(second)))


def test_every_codec_has_its_layouts_size():
    for name, struct in layout.STRUCTS.items():
        assert codec.Codec(struct).size == ctypes.sizeof(struct), name
