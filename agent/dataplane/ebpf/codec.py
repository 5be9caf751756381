"""Map keys and values as bytes, with formats derived from the ctypes mirror of
bpf/picket.h (ebpf_layout, which a test holds to the header): field order, offsets,
widths and padding all come from the layout, so there is no second copy of it here.

Byte order follows the header's types: `__u8 x[N]` arrays are big-endian (network
order, so an LPM key's bits run from the most significant), scalars are host order, and
a scalar the header marks "network byte order" is handed over as its bytes.

Packing with `struct` rather than building ctypes structures per entry: a full sync
writes hundreds of thousands of entries, and a structure costs more than the system
call."""

from __future__ import annotations

import ctypes
import struct
import sys
from ipaddress import IPv4Address

from agent.dataplane.ebpf.entries import AddrKey, HomeEntry, NamedEntry, PolicyEntry
from agent.dataplane.ebpf_layout import AddrKey as AddrKeyLayout
from agent.dataplane.ebpf_layout import (
    AddrValue,
    EndpointValue,
    NamedKey,
    PolicyKey,
    SourceKey,
    TransitHomeKey,
)

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
U32 = scalar(ctypes.c_uint32)
U64 = scalar(ctypes.c_uint64)
PRESENT = b"\x01"  # the value of a set-like map (policy, named)


def addr_key(key: AddrKey) -> bytes:
    return ADDR_KEY.encode(prefixlen=key[1], addr=IPv4Address(key[0]).packed)


def addr_key_from_bytes(raw: bytes) -> AddrKey:
    fields = ADDR_KEY.decode(raw)
    return str(IPv4Address(fields["addr"])), fields["prefixlen"]


def addr_value(pod_identity: int, cidr_identity: int) -> bytes:
    return ADDR_VALUE.encode(pod_identity=pod_identity, cidr_identity=cidr_identity)


def endpoint_key(ifindex: int) -> bytes:
    return U32.pack(ifindex)


def endpoint_value(number: int, flags: int) -> bytes:
    return ENDPOINT_VALUE.encode(id=number, flags=flags)


def source_key(ifindex: int, ip: str) -> bytes:
    """A local pod's own source address on its host-side interface."""
    return SOURCE_KEY.encode(ifindex=ifindex, addr=IPv4Address(ip).packed)


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
    return NAMED_KEY.encode(
        endpoint=endpoint, daddr=IPv4Address(ip).packed, port=port, protocol=protocol
    )


def transit_key(ip: str) -> bytes:
    """A transit endpoint's address: a network-order __u32, so its bytes."""
    return IPv4Address(ip).packed


def transit_home_key(entry: HomeEntry) -> bytes:
    endpoint, ip = entry
    return TRANSIT_HOME_KEY.encode(endpoint=endpoint, addr=IPv4Address(ip).packed)


def config_entry(slot: int, value: int) -> tuple[bytes, bytes]:
    return U32.pack(slot), U64.pack(value)
