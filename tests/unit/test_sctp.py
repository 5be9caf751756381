"""The SCTP codec: CRC32c vectors, golden packets, round trips and rejections."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.sctp import (
    ABORT,
    DEFAULT_A_RWND,
    DEFAULT_STREAMS,
    INIT,
    INIT_ACK,
    STATE_COOKIE,
    Chunk,
    Init,
    Packet,
    abort_packet,
    crc32c,
    decode_packet,
    encode_packet,
    init_ack_packet,
    init_packet,
    parse_init,
    split_ipv4,
    state_cookie,
)

U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
NONZERO_U32 = st.integers(1, 0xFFFFFFFF)


def bitwise_crc32c(data: bytes) -> int:
    """A second, table-free CRC32c straight from the definition, to check the table against."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return crc ^ 0xFFFFFFFF


def seal(raw: bytes) -> bytes:
    """Give hand-made bytes a valid checksum, so decoding gets past it to what is being tested."""
    zeroed = raw[:8] + bytes(4) + raw[12:]
    return raw[:8] + bitwise_crc32c(zeroed).to_bytes(4, "little") + raw[12:]


def header(tag: int = 0) -> bytes:
    return struct.pack("!HHII", 5000, 5001, tag, 0)


# --- CRC32c -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"", 0x00000000, id="empty"),
        pytest.param(b"123456789", 0xE3069283, id="check-value"),
        pytest.param(bytes(32), 0x8A9136AA, id="rfc3720-b4-zeros"),
        pytest.param(b"\xff" * 32, 0x62A8AB43, id="rfc3720-b4-ones"),
        pytest.param(bytes(range(32)), 0x46DD794E, id="rfc3720-b4-ascending"),
        pytest.param(bytes(range(31, -1, -1)), 0x113FDB5C, id="rfc3720-b4-descending"),
    ],
)
def test_crc32c_vectors(data, expected):
    assert crc32c(data) == expected
    assert bitwise_crc32c(data) == expected


@given(st.binary(max_size=200))
def test_crc32c_table_matches_bitwise_definition(data):
    assert crc32c(data) == bitwise_crc32c(data)


# --- golden packets -----------------------------------------------------------------------------

# Built by scapy 2.8.0's SCTP layer (an independent implementation) in a throwaway venv; scapy is
# not a project dependency. The INIT-ACK cookie is 8 bytes so no padding question arises.
SCAPY_INIT = "13881389000000003503e51f010000140a1b2c3d0000ffff000a000a11223344"
SCAPY_INIT_ACK = (
    "138913880a1b2c3d1f036d1102000020556677880000ffff000a000a99aabbcc0007000c6e732f706f642d61"
)
SCAPY_ABORT = "138913880a1b2c3de7f5a4d906000004"


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        pytest.param(init_packet(5000, 5001, 0x0A1B2C3D, 0x11223344), SCAPY_INIT, id="init"),
        pytest.param(
            init_ack_packet(5001, 5000, 0x0A1B2C3D, 0x55667788, 0x99AABBCC, b"ns/pod-a"),
            SCAPY_INIT_ACK,
            id="init-ack",
        ),
        pytest.param(abort_packet(5001, 5000, 0x0A1B2C3D), SCAPY_ABORT, id="abort"),
    ],
)
def test_builders_match_scapy_byte_for_byte(built, expected):
    assert built.hex() == expected


def test_odd_cookie_chunk_length_leaves_out_final_padding():
    # RFC 9260 3.2 and Linux's sctp_addto_chunk: the chunk length counts the last parameter
    # unpadded (7 + 16 + 4 = 27), and the packet still carries the pad byte.
    raw = init_ack_packet(5001, 5000, 0x0A1B2C3D, 0x55667788, 0x99AABBCC, b"x/a")
    assert struct.unpack_from("!H", raw, 14)[0] == 27
    assert len(raw) == 12 + 28
    assert raw.hex().endswith("00070007782f6100")


# --- checksum byte order ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(init_packet(40000, 5000, 0x01020304, 7), id="init"),
        pytest.param(init_ack_packet(5000, 40000, 0x01020304, 0x0A0B0C0D, 99, b"x/a"), id="ack"),
        pytest.param(abort_packet(5000, 40000, 0x01020304), id="abort"),
    ],
)
def test_checksum_is_crc_of_zeroed_packet_stored_little_endian(raw):
    # What Linux's sctp_compute_cksum produces: cpu_to_le32 of the CRC over the packet with
    # its checksum field zeroed (see the module docstring for the derivation).
    crc = bitwise_crc32c(raw[:8] + bytes(4) + raw[12:])
    assert raw[8:12] == crc.to_bytes(4, "little")
    assert raw[8:12] != crc.to_bytes(4, "big")  # none of these CRCs is a byte palindrome


def test_big_endian_checksum_is_rejected():
    raw = init_packet(40000, 5000, 0x01020304, 7)
    swapped = raw[:8] + raw[8:12][::-1] + raw[12:]
    with pytest.raises(ValueError, match="checksum"):
        decode_packet(swapped)


# --- encode / decode ----------------------------------------------------------------------------

CHUNKS = st.builds(
    Chunk, type=st.integers(0, 255), flags=st.integers(0, 255), value=st.binary(max_size=64)
)
PACKETS = st.builds(
    Packet,
    src_port=U16,
    dst_port=U16,
    verification_tag=U32,
    chunks=st.lists(CHUNKS, min_size=1, max_size=5).map(tuple),
)


@given(PACKETS)
def test_encode_decode_round_trip(packet):
    raw = encode_packet(packet)
    assert len(raw) % 4 == 0
    assert decode_packet(raw) == packet


@pytest.mark.parametrize(
    ("value", "length_field", "encoded_size"),
    [(b"", 4, 4), (b"a", 5, 8), (b"ab", 6, 8), (b"abc", 7, 8), (b"abcd", 8, 8), (b"abcde", 9, 12)],
)
def test_chunk_padding_is_not_counted_in_its_length(value, length_field, encoded_size):
    raw = encode_packet(Packet(1, 2, 3, (Chunk(0xC0, 0, value),)))
    assert struct.unpack_from("!H", raw, 14)[0] == length_field
    assert len(raw) == 12 + encoded_size
    assert raw[12 + length_field :] == bytes(encoded_size - length_field)


def test_every_single_bit_flip_is_rejected():
    raw = init_ack_packet(5000, 40000, 0x01020304, 0x0A0B0C0D, 99, b"x/a")
    for bit in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ValueError):
            decode_packet(bytes(flipped))


def test_missing_padding_after_last_chunk_is_accepted():
    raw = seal(header() + struct.pack("!BBH", 0xC0, 0, 5) + b"z")
    assert decode_packet(raw).chunks == (Chunk(0xC0, 0, b"z"),)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"", "shorter than its 12-byte header", id="empty"),
        pytest.param(bytes(11), "shorter than its 12-byte header", id="eleven-bytes"),
        pytest.param(seal(header()), "no chunks", id="no-chunks"),
        pytest.param(seal(header() + b"\x01\x00"), "truncated chunk header", id="half-header"),
        pytest.param(seal(header() + struct.pack("!BBH", 1, 0, 3)), "bad chunk length 3", id="lt4"),
        pytest.param(
            seal(header() + struct.pack("!BBH", 1, 0, 12) + bytes(4)),
            "bad chunk length 12",
            id="past-end",
        ),
        pytest.param(
            seal(header() + struct.pack("!BBH", 6, 0, 4) + struct.pack("!BBH", 1, 0, 0)),
            "bad chunk length 0 at offset 16",
            id="second-chunk",
        ),
        pytest.param(abort_packet(1, 2, 3)[:-1] + b"\x05", "checksum", id="bad-checksum"),
    ],
)
def test_decode_rejects_with_reason(raw, reason):
    with pytest.raises(ValueError, match=reason):
        decode_packet(raw)


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        pytest.param(Packet(1, 2, 3, ()), "at least one chunk", id="no-chunks"),
        pytest.param(Packet(65536, 2, 3, (Chunk(1, 0, b""),)), "source port", id="port"),
        pytest.param(Packet(1, 2, -1, (Chunk(1, 0, b""),)), "verification tag", id="tag"),
        pytest.param(Packet(1, 2, 3, (Chunk(256, 0, b""),)), "chunk type", id="type"),
        pytest.param(Packet(1, 2, 3, (Chunk(1, 0, bytes(65532)),)), "too long", id="long"),
    ],
)
def test_encode_rejects_with_reason(packet, reason):
    with pytest.raises(ValueError, match=reason):
        encode_packet(packet)


# --- builders and parsers -----------------------------------------------------------------------


def only_chunk(raw: bytes) -> tuple[Packet, Chunk]:
    packet = decode_packet(raw)
    assert len(packet.chunks) == 1
    return packet, packet.chunks[0]


def test_init_packet_fields():
    packet, chunk = only_chunk(init_packet(40000, 5000, 0xCAFEF00D, 12345))
    assert (packet.src_port, packet.dst_port, packet.verification_tag) == (40000, 5000, 0)
    assert (chunk.type, chunk.flags) == (INIT, 0)
    assert parse_init(chunk) == Init(
        0xCAFEF00D, DEFAULT_A_RWND, DEFAULT_STREAMS, DEFAULT_STREAMS, 12345, b""
    )
    assert state_cookie(chunk) is None


def test_init_ack_packet_fields():
    packet, chunk = only_chunk(init_ack_packet(5000, 40000, 0xCAFEF00D, 0x0BADF00D, 7, b"x/a"))
    assert (packet.src_port, packet.dst_port, packet.verification_tag) == (5000, 40000, 0xCAFEF00D)
    assert (chunk.type, chunk.flags) == (INIT_ACK, 0)
    init = parse_init(chunk)
    assert (init.initiate_tag, init.a_rwnd, init.initial_tsn) == (0x0BADF00D, 65535, 7)
    assert init.outbound_streams > 0 and init.inbound_streams > 0
    assert state_cookie(chunk) == b"x/a"


def test_abort_packet_fields():
    packet, chunk = only_chunk(abort_packet(5000, 40000, 0xCAFEF00D))
    assert (packet.src_port, packet.dst_port, packet.verification_tag) == (5000, 40000, 0xCAFEF00D)
    # T bit clear: the tag is the INIT's Initiate Tag, not a reflected one (RFC 9260 8.4).
    assert chunk == Chunk(ABORT, 0, b"")
    assert state_cookie(chunk) is None


@pytest.mark.parametrize(
    "cookie", [b"", b"a", b"ab", b"x/a", b"ns/a", b"default/web-1", b"\x00\x00\x00", bytes(300)]
)
def test_cookie_round_trips(cookie):
    _, chunk = only_chunk(init_ack_packet(1, 2, 3, 4, 5, cookie))
    assert state_cookie(chunk) == cookie


@given(src=U16, dst=U16, peer=U32, tag=NONZERO_U32, tsn=U32, cookie=st.binary(max_size=300))
def test_init_ack_round_trips(src, dst, peer, tag, tsn, cookie):
    packet, chunk = only_chunk(init_ack_packet(src, dst, peer, tag, tsn, cookie))
    assert (packet.src_port, packet.dst_port, packet.verification_tag) == (src, dst, peer)
    assert (parse_init(chunk).initiate_tag, parse_init(chunk).initial_tsn) == (tag, tsn)
    assert state_cookie(chunk) == cookie


def test_zero_initiate_tag_is_refused():
    with pytest.raises(ValueError, match="must not be 0"):
        init_packet(1, 2, 0, 5)


def init_ack_chunk(params: bytes) -> Chunk:
    return Chunk(INIT_ACK, 0, struct.pack("!IIHHI", 9, 65535, 1, 1, 0) + params)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param(b"", None, id="no-params"),
        pytest.param(struct.pack("!HH", 5, 8) + bytes(4), None, id="other-param-only"),
        pytest.param(
            struct.pack("!HH", 0x8008, 5) + b"q\x00\x00\x00" + struct.pack("!HH", 7, 6) + b"hi",
            b"hi",
            id="after-padded-param",
        ),
        pytest.param(
            struct.pack("!HH", STATE_COOKIE, 7) + b"x/a\x00", b"x/a", id="final-padding-counted"
        ),
        pytest.param(
            struct.pack("!HH", STATE_COOKIE, 4) + struct.pack("!HH", STATE_COOKIE, 5) + b"b",
            b"",
            id="first-cookie-wins",
        ),
    ],
)
def test_state_cookie_search(params, expected):
    assert state_cookie(init_ack_chunk(params)) == expected


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        pytest.param(b"\x00\x07", "truncated parameter header", id="half-header"),
        pytest.param(struct.pack("!HH", 7, 3), "bad parameter length 3", id="lt4"),
        pytest.param(struct.pack("!HH", 7, 9) + b"abc", "bad parameter length 9", id="past-end"),
    ],
)
def test_state_cookie_rejects_malformed_params(params, reason):
    with pytest.raises(ValueError, match=reason):
        state_cookie(init_ack_chunk(params))


@pytest.mark.parametrize(
    ("chunk", "reason"),
    [
        pytest.param(Chunk(ABORT, 0, bytes(16)), "neither INIT nor INIT-ACK", id="abort"),
        pytest.param(Chunk(INIT, 0, bytes(15)), "shorter than 16", id="short"),
    ],
)
def test_parse_init_rejects(chunk, reason):
    with pytest.raises(ValueError, match=reason):
        parse_init(chunk)


# --- IPv4 ---------------------------------------------------------------------------------------


def ipv4(payload: bytes, options: bytes = b"", first: int | None = None) -> bytes:
    ihl = 5 + len(options) // 4
    fixed = struct.pack(
        "!BBHHHBBH4s4s",
        (4 << 4 | ihl) if first is None else first,
        0,
        20 + len(options) + len(payload),
        0,
        0,
        64,
        132,
        0,
        bytes([10, 0, 1, 2]),
        bytes([10, 0, 2, 3]),
    )
    return fixed + options + payload


@pytest.mark.parametrize(
    "options", [pytest.param(b"", id="plain"), pytest.param(b"\x01\x01\x01\x00", id="options")]
)
def test_split_ipv4(options):
    sctp = init_packet(1, 2, 3, 4)
    assert split_ipv4(ipv4(sctp, options)) == ("10.0.1.2", "10.0.2.3", sctp)


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        pytest.param(bytes(19), "shorter than 20", id="short"),
        pytest.param(ipv4(b"", first=0x65), "version 6", id="ipv6"),
        pytest.param(ipv4(b"", first=0x44), "header length 16", id="ihl-too-small"),
        pytest.param(ipv4(b"", first=0x46), "header length 24", id="ihl-past-end"),
    ],
)
def test_split_ipv4_rejects(datagram, reason):
    with pytest.raises(ValueError, match=reason):
        split_ipv4(datagram)
