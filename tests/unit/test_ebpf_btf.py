"""The BTF reader on hand-built BTF: member offsets through typedefs, anonymous unions
and nested structs, bitfield offsets, sizes, and clear errors."""

from __future__ import annotations

import struct

import pytest

from agent.dataplane.ebpf.btf import Btf, BtfError

INT, PTR, STRUCT, UNION, TYPEDEF = 1, 2, 4, 5, 8


class _Builder:
    """Encodes types the way the kernel lays BTF out (linux/btf.h)."""

    def __init__(self) -> None:
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def name(self, text: str) -> int:
        if not text:
            return 0
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(
        self,
        kind: int,
        name: str,
        size_or_type: int,
        extra: bytes = b"",
        vlen: int = 0,
        kind_flag: int = 0,
    ) -> int:
        info = (kind_flag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.name(name), info, size_or_type) + extra
        self.count += 1
        return self.count

    def integer(self, name: str, size: int) -> int:
        return self.add(INT, name, size, struct.pack("<I", size * 8))

    def composite(self, kind: int, name: str, size: int, members, kind_flag: int = 0) -> int:
        extra = b"".join(
            struct.pack("<III", self.name(m_name), m_type, bits) for m_name, m_type, bits in members
        )
        return self.add(kind, name, size, extra, len(members), kind_flag)

    def blob(self) -> bytes:
        header = struct.pack(
            "<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings)
        )
        return header + self.types + self.strings


def _sample() -> bytes:
    b = _Builder()
    u32 = b.integer("unsigned int", 4)
    u16 = b.integer("unsigned short", 2)
    alias = b.add(TYPEDEF, "__u32", u32)
    inner = b.composite(STRUCT, "", 8, [("lo", u32, 0), ("hi", alias, 32)])
    anon = b.composite(UNION, "", 8, [("whole", u32, 0), ("", inner, 0)])
    b.composite(STRUCT, "outer", 24, [("first", u16, 0), ("", anon, 64), ("last", u32, 128)])
    b.composite(STRUCT, "bits", 4, [("a", u32, (3 << 24) | 0), ("b", u32, (5 << 24) | 3)], 1)
    b.add(PTR, "", u32)
    return b.blob()


@pytest.mark.parametrize(
    ("struct_name", "path", "offset"),
    [
        ("outer", "first", 0),
        ("outer", "whole", 8),  # through an anonymous union
        ("outer", "lo", 8),  # through an anonymous struct inside it
        ("outer", "hi", 12),  # a typedef'd member
        ("outer", "last", 16),
        ("bits", "a", 0),
    ],
)
def test_member_offsets(struct_name, path, offset):
    assert Btf(_sample()).offset(struct_name, path) == offset


def test_struct_size():
    assert Btf(_sample()).size("outer") == 24


@pytest.mark.parametrize(
    ("struct_name", "path", "message"),
    [
        ("outer", "missing", "struct outer has no member missing"),
        ("nowhere", "x", "the kernel's BTF has no struct nowhere"),
        ("bits", "b", "bits.b is a bitfield"),
    ],
)
def test_clear_errors(struct_name, path, message):
    with pytest.raises(BtfError, match=message):
        Btf(_sample()).offset(struct_name, path)


def test_not_btf():
    with pytest.raises(BtfError, match="bad magic"):
        Btf(b"\0" * 32)
