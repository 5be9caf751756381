"""bpf/picket.h and its Python mirror agree: every #define, every struct field (name,
order, width), every struct size."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from agent.dataplane import ebpf_layout

BPF_DIR = Path(__file__).parents[2] / "bpf"
HEADER = (BPF_DIR / "picket.h").read_text()
C_TYPES = {
    "__u8": ctypes.c_uint8,
    "__u16": ctypes.c_uint16,
    "__u32": ctypes.c_uint32,
    "__u64": ctypes.c_uint64,
}


def header_defines() -> dict[str, int]:
    return {
        name: int(value)
        for name, value in re.findall(r"^#define (\w+) (\d+)", HEADER, re.MULTILINE)
    }


def header_structs() -> dict[str, list[tuple[str, str, int]]]:
    out = {}
    for name, body in re.findall(r"struct (\w+) \{(.*?)\};", HEADER, re.DOTALL):
        fields = []
        for ctype, field, count in re.findall(r"(__u\d+) (\w+)(?:\[(\d+)\])?;", body):
            fields.append((field, ctype, int(count or 1)))
        out[name] = fields
    return out


def test_every_define_is_mirrored():
    defines = header_defines()
    assert len(defines) > 20
    for name, value in defines.items():
        assert getattr(ebpf_layout, name) == value, name


@pytest.mark.parametrize("name", sorted(ebpf_layout.STRUCTS))
def test_struct_layouts_match(name):
    mirror = ebpf_layout.STRUCTS[name]
    fields = header_structs()[name]
    assert [f for f, _, _ in fields] == [f[0] for f in mirror._fields_]
    for (field, ctype, count), (_, pytype) in zip(fields, mirror._fields_, strict=True):
        expected = C_TYPES[ctype] * count if count > 1 else C_TYPES[ctype]
        assert ctypes.sizeof(pytype) == ctypes.sizeof(expected), field
    size = sum(ctypes.sizeof(C_TYPES[c]) * n for _, c, n in fields)
    assert ctypes.sizeof(mirror) >= size


def test_every_struct_is_mirrored():
    assert set(header_structs()) == set(ebpf_layout.STRUCTS)


def test_policy_key_bits():
    # endpoint(4) + direction(1) + pad(3) + identity(4) = 96 bits, then protocol and port.
    assert ebpf_layout.POLICY_EXACT_BITS == 8 * (4 + 1 + 3 + 4)
    assert ebpf_layout.POLICY_FULL_BITS == ebpf_layout.POLICY_EXACT_BITS + 8 + 16


def test_the_drop_event_has_no_hidden_padding_and_keeps_8_byte_alignment():
    # The ring buffer hands records over as they are: every byte is a declared field
    # (the program writes each), and the size is a multiple of the u64's alignment.
    fields = header_structs()["drop_event"]
    declared = sum(ctypes.sizeof(C_TYPES[c]) * n for _, c, n in fields)
    assert declared == ctypes.sizeof(ebpf_layout.DropEvent) == 80
    assert ctypes.sizeof(ebpf_layout.DropEvent) % 8 == 0


@pytest.mark.parametrize("name", ["addr_key", "transit_key", "transit_home_key", "source_key"])
def test_every_address_in_a_map_key_is_16_bytes(name):
    fields = {field: (ctype, count) for field, ctype, count in header_structs()[name]}
    assert fields["addr"] == ("__u8", ebpf_layout.ADDR_BYTES)


def test_program_source_inlines_local_headers():
    from agent.dataplane.ebpf.loader import program_source

    source = program_source()
    assert '#include "' not in source  # BCC rewrites map calls only in the main text
    for needed in (
        "int picket_forward4(",
        "int picket_forward6(",
        "struct policy_key {",
        "static __always_inline int picket_verdict(",
    ):
        assert needed in source


def test_the_agent_reads_the_verdict_slots_the_program_counts_in():
    # count_packet's slot expression is C and Python alike: evaluated with the header's
    # defines, it is verdict_slot's, and every slot it makes is one of the map's.
    events = (BPF_DIR / "lib" / "events.h").read_text()
    (expression,) = re.findall(r"__u32 slot = (.+);", events)
    forward = (BPF_DIR / "picket_forward.c").read_text()
    (size,) = re.findall(r"picket_verdicts,\s*([A-Z_ *]+?),", forward)
    defines = header_defines()
    slots = set()
    for family in (ebpf_layout.FAMILY_IPV4, ebpf_layout.FAMILY_IPV6):
        for direction in (ebpf_layout.DIR_INGRESS, ebpf_layout.DIR_EGRESS):
            for reason in range(ebpf_layout.REASON_SLOTS):
                where = {**defines, "family": family, "direction": direction, "reason": reason}
                slot = eval(expression, {}, where)
                assert slot == ebpf_layout.verdict_slot(family, direction, reason)
                slots.add(slot)
    assert slots == set(range(eval(size, {}, defines)))
