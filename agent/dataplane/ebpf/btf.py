"""Member offsets of kernel structs, from the kernel's BTF (pure: parses bytes).

The BPF netfilter program reads `sk_buff`, `nf_hook_state`, `net_device` and `nf_conn`
fields. BCC compiles against the distribution's headers, not the running kernel's, and
has no CO-RE relocation, so the loader reads the offsets here from
/sys/kernel/btf/vmlinux and passes them to the compiler; the verifier checks every load
against the same BTF. Why not a library: bpftool's JSON dump of vmlinux is tens of
megabytes to parse for a dozen numbers, and no maintained Python BTF reader exists;
the format (linux/btf.h) is a header, a type section and a string section.
"""

from __future__ import annotations

import struct

MAGIC = 0xEB9F
KIND_STRUCT, KIND_UNION = 4, 5
# Kinds that only qualify another type (typedef, volatile, const, restrict, type tag).
KIND_ALIASES = (8, 9, 10, 11, 18)
# Bytes that follow `struct btf_type` for each kind, given vlen (linux/btf.h).
EXTRA_BYTES = {1: 4, 3: 12, 14: 4, 17: 4}
EXTRA_PER_ITEM = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}


class BtfError(ValueError):
    pass


class Btf:
    """The types of one BTF blob: structs by name, with their members."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24 or struct.unpack_from("<H", data)[0] != MAGIC:
            raise BtfError("not BTF data (bad magic)")
        hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<IIIII", data, 4)
        self._strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        section = data[hdr_len + type_off : hdr_len + type_off + type_len]
        # id -> (kind, name, size or referenced type, members: (name, type, bit offset))
        self._types: list[tuple[int, str, int, list[tuple[str, int, int]]]] = [(0, "", 0, [])]
        self._structs: dict[str, int] = {}
        pos = 0
        while pos < len(section):
            pos = self._read_type(section, pos)

    def _read_type(self, section: bytes, pos: int) -> int:
        name_off, info, size = struct.unpack_from("<III", section, pos)
        kind, vlen, kind_flag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        pos += 12
        members = []
        if kind in (KIND_STRUCT, KIND_UNION):
            for i in range(vlen):
                m_name, m_type, m_off = struct.unpack_from("<III", section, pos + 12 * i)
                # With kind_flag set, the offset word also carries a bitfield size.
                members.append(
                    (self._name(m_name), m_type, m_off & 0xFFFFFF if kind_flag else m_off)
                )
        name = self._name(name_off)
        self._types.append((kind, name, size, members))
        if kind == KIND_STRUCT and name and members:
            self._structs.setdefault(name, len(self._types) - 1)
        return pos + EXTRA_BYTES.get(kind, 0) + EXTRA_PER_ITEM.get(kind, 0) * vlen

    def _name(self, offset: int) -> str:
        return self._strings[offset : self._strings.index(b"\0", offset)].decode()

    def _resolve(self, type_id: int) -> int:
        while self._types[type_id][0] in KIND_ALIASES:
            type_id = self._types[type_id][2]
        return type_id

    def size(self, struct_name: str) -> int:
        return self._types[self._struct(struct_name)][2]

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of `path` (dotted members, anonymous unions looked through)."""
        type_id, bits = self._struct(struct_name), 0
        for part in path.split("."):
            found = self._member(type_id, part)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path}")
            bits += found[0]
            type_id = self._resolve(found[1])
        if bits % 8:
            raise BtfError(f"{struct_name}.{path} is a bitfield")
        return bits // 8

    def _struct(self, name: str) -> int:
        try:
            return self._structs[name]
        except KeyError:
            raise BtfError(f"the kernel's BTF has no struct {name}") from None

    def _member(self, type_id: int, name: str) -> tuple[int, int] | None:
        for m_name, m_type, bits in self._types[self._resolve(type_id)][3]:
            if m_name == name:
                return bits, m_type
            if not m_name:  # an anonymous struct or union: its members are ours
                inner = self._member(m_type, name)
                if inner is not None:
                    return bits + inner[0], inner[1]
        return None


# (define, struct, member path) the program needs; sizes separately.
OFFSETS = (
    ("PICKET_OFF_DEV_IFINDEX", "net_device", "ifindex"),
    ("PICKET_OFF_STATE_IN", "nf_hook_state", "in"),
    ("PICKET_OFF_STATE_OUT", "nf_hook_state", "out"),
    ("PICKET_OFF_SKB_NFCT", "sk_buff", "_nfct"),
    ("PICKET_OFF_SKB_HEAD", "sk_buff", "head"),
    ("PICKET_OFF_SKB_NETWORK_HEADER", "sk_buff", "network_header"),
    ("PICKET_OFF_SKB_TAIL", "sk_buff", "tail"),
    ("PICKET_OFF_SKB_LEN", "sk_buff", "len"),
    ("PICKET_OFF_CT_TUPLEHASH", "nf_conn", "tuplehash"),
    ("PICKET_OFF_CT_TCP_STATE", "nf_conn", "proto.tcp.state"),
    ("PICKET_OFF_CT_MARK", "nf_conn", "mark"),
    ("PICKET_OFF_TH_TUPLE", "nf_conntrack_tuple_hash", "tuple"),
    ("PICKET_OFF_TUPLE_SRC_ADDR", "nf_conntrack_tuple", "src.u3"),
    ("PICKET_OFF_TUPLE_SRC_PORT", "nf_conntrack_tuple", "src.u"),
    ("PICKET_OFF_TUPLE_DST_ADDR", "nf_conntrack_tuple", "dst.u3"),
    ("PICKET_OFF_TUPLE_DST_PORT", "nf_conntrack_tuple", "dst.u"),
    ("PICKET_OFF_TUPLE_PROTONUM", "nf_conntrack_tuple", "dst.protonum"),
)
SIZES = (("PICKET_SIZE_TUPLEHASH", "nf_conntrack_tuple_hash"),)


def program_offsets(btf: Btf) -> dict[str, int]:
    """Every PICKET_OFF_* / PICKET_SIZE_* define bpf/lib/kernel.h uses."""
    out = {define: btf.offset(name, path) for define, name, path in OFFSETS}
    out |= {define: btf.size(name) for define, name in SIZES}
    return out
