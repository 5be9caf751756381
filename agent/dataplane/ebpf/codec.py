"""Map keys and values as bytes, with formats derived from the ctypes mirror of
bpf/picket.h (ebpf_layout, which a test holds to the header): field order, offsets,
widths and padding all come from the layout, so there is no second copy of it here.

Byte order follows the header's types: `__u8 x[N]` arrays are big-endian (network
order, so an LPM key's bits run from the most significant), scalars are host order, and
a scalar the header marks "network byte order" is handed over as its bytes.

Addresses are 16 bytes in every map (bpf/picket.h): an IPv6 address as it is, an IPv4
address IPv4-mapped (::ffff:a.b.c.d), and an IPv4 prefix /n is /(96 + n) in the LPM
tries. The plans keep addresses in their own family's notation; only here do they meet.

Packing with `struct` rather than building ctypes structures per entry: a full sync
writes hundreds of thousands of entries, and a structure costs more than the system
call."""

from __future__ import annotations

import ctypes
import struct
import sys
from ipaddress import IPv6Address, ip_address

from agent.dataplane.ebpf.entries import AddrKey, HomeEntry, NamedEntry, PolicyEntry
from agent.dataplane.ebpf_layout import (
    IPV4_MAPPED_BITS,
    AddrValue,
    EndpointValue,
    NamedKey,
    PolicyKey,
    SourceKey,
    TransitHomeKey,
    TransitKey,
)
from agent.dataplane.ebpf_layout import AddrKey as AddrKeyLayout
from agent.model.objects import IPAddress

_SCALARS = {1: "B", 2: "H", 4: "I", 8: "Q"}


class Codec:
    """Encodes and decodes one struct of the layout."""

    def __init__(self, layout: type[ctypes.Structure]) -> None:
        fmt, at = "=", 0
        self._fields: list[tuple[str, int | None]] = []  # name, array length (None: scalar)
        for name, ctype in layout._fields_:
            field = getattr(layout, name)
            fmt += "x" * (field.offset - at)
            length = getattr(ctype, "_length_", None)
            fmt += f"{length}s" if length is not None else _SCALARS[field.size]
            self._fields.append((name, length))
            at = field.offset + field.size
        fmt += "x" * (ctypes.sizeof(layout) - at)
        self._struct = struct.Struct(fmt)
        self.size = self._struct.size

    def encode(self, **values: int | bytes) -> bytes:
        """Fields not given (padding) are zero."""
        return self._struct.pack(*(_pack(values.get(n, 0), length) for n, length in self._fields))

    def decode(self, raw: bytes) -> dict[str, int]:
        out = {}
        for (name, length), value in zip(self._fields, self._struct.unpack(raw), strict=True):
            out[name] = int.from_bytes(value, "big") if length is not None else value
        return out


def _pack(value: int | bytes, length: int | None) -> int | bytes:
    if length is not None:
        return value if isinstance(value, bytes) else value.to_bytes(length, "big")
    # A network-order scalar: its bytes, as the host reads them.
    return int.from_bytes(value, sys.byteorder) if isinstance(value, bytes) else value


def scalar(ctype: type[ctypes._SimpleCData]) -> struct.Struct:
    """A map key or value that is one host-order integer (ifindex, config slot)."""
    return struct.Struct("=" + _SCALARS[ctypes.sizeof(ctype)])


ADDR_KEY = Codec(AddrKeyLayout)
ADDR_VALUE = Codec(AddrValue)
ENDPOINT_VALUE = Codec(EndpointValue)
POLICY_KEY = Codec(PolicyKey)
NAMED_KEY = Codec(NamedKey)
TRANSIT_HOME_KEY = Codec(TransitHomeKey)
SOURCE_KEY = Codec(SourceKey)
TRANSIT_KEY = Codec(TransitKey)
U32 = scalar(ctypes.c_uint32)
U64 = scalar(ctypes.c_uint64)
PRESENT = b"\x01"  # the value of a set-like map (policy, named)


IPV4_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, where IPv4 addresses sit


def addr_bytes(ip: str | IPAddress) -> bytes:
    """An address as the maps hold it: 16 bytes, IPv4 mapped."""
    address = ip_address(ip)
    return IPV4_MAPPED + address.packed if address.version == 4 else address.packed


def addr_from_bytes(raw: bytes) -> IPAddress:
    """The address 16 map bytes hold, in its own family (the inverse of addr_bytes)."""
    address = IPv6Address(raw)
    return address.ipv4_mapped or address


def addr_key(key: AddrKey) -> bytes:
    address = ip_address(key[0])
    bits = key[1] + IPV4_MAPPED_BITS if address.version == 4 else key[1]
    return ADDR_KEY.encode(prefixlen=bits, addr=addr_bytes(address))


def addr_key_from_bytes(raw: bytes) -> AddrKey:
    fields = ADDR_KEY.decode(raw)
    bits, packed = fields["prefixlen"], fields["addr"].to_bytes(16, "big")
    if bits >= IPV4_MAPPED_BITS and packed.startswith(IPV4_MAPPED):
        return str(addr_from_bytes(packed)), bits - IPV4_MAPPED_BITS
    return str(IPv6Address(packed)), bits


def addr_value(pod_identity: int, cidr_identity: int) -> bytes:
    return ADDR_VALUE.encode(pod_identity=pod_identity, cidr_identity=cidr_identity)


def endpoint_key(ifindex: int) -> bytes:
    return U32.pack(ifindex)


def endpoint_value(number: int, flags: int) -> bytes:
    return ENDPOINT_VALUE.encode(id=number, flags=flags)


def source_key(ifindex: int, ip: str) -> bytes:
    """A local pod's own source address on its host-side interface."""
    return SOURCE_KEY.encode(ifindex=ifindex, addr=addr_bytes(ip))


def policy_key(entry: PolicyEntry) -> bytes:
    return POLICY_KEY.encode(
        prefixlen=entry.prefixlen,
        endpoint=entry.endpoint,
        direction=entry.direction,
        identity=entry.identity,
        protocol=entry.protocol or 0,
        port=entry.port,
    )


def named_key(entry: NamedEntry) -> bytes:
    endpoint, ip, protocol, port = entry
    return NAMED_KEY.encode(endpoint=endpoint, daddr=addr_bytes(ip), port=port, protocol=protocol)


def transit_key(ip: str) -> bytes:
    return TRANSIT_KEY.encode(addr=addr_bytes(ip))


def transit_home_key(entry: HomeEntry) -> bytes:
    endpoint, ip = entry
    return TRANSIT_HOME_KEY.encode(endpoint=endpoint, addr=addr_bytes(ip))


def config_entry(slot: int, value: int) -> tuple[bytes, bytes]:
    return U32.pack(slot), U64.pack(value)
