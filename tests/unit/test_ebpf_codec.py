"""The byte codecs against the ctypes layouts they are derived from: what `codec`
packs is, byte for byte, the structure ctypes builds (which test_ebpf_layout holds to
bpf/picket.h)."""

from __future__ import annotations

import ctypes
from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st

from agent.dataplane import ebpf_layout as layout
from agent.dataplane.ebpf import codec
from agent.dataplane.ebpf.entries import PolicyEntry

u8, u16, u32 = (st.integers(0, 2**bits - 1) for bits in (8, 16, 32))
addresses = st.integers(0, 2**32 - 1).map(lambda n: str(IPv4Address(n)))


def be(value: int, width: int) -> ctypes.Array:
    return (ctypes.c_uint8 * width)(*value.to_bytes(width, "big"))


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


@given(addresses, st.integers(0, 32))
def test_addr_key_round_trip(address, bits):
    raw = codec.addr_key((address, bits))
    want = layout.AddrKey(prefixlen=bits, addr=be(int(IPv4Address(address)), 4))
    assert raw == bytes(want)
    assert codec.addr_key_from_bytes(raw) == (address, bits)


@given(u32, addresses, u8, u16)
def test_named_key(endpoint, address, protocol, port):
    # daddr is a __u32 in network byte order: the address's bytes as they are.
    daddr = int.from_bytes(IPv4Address(address).packed, "little")
    want = layout.NamedKey(endpoint=endpoint, daddr=daddr, port=port, protocol=protocol)
    assert codec.named_key((endpoint, address, protocol, port)) == bytes(want)


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
