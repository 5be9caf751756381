"""A small SCTP packet codec (RFC 9260) for the lab's raw-socket responder and probe.

The lab kernel is built without SCTP sockets (CONFIG_IP_SCTP off), yet iptables and conntrack
still classify SCTP. So lab pods speak just enough SCTP over raw IPv4 sockets (protocol 132): a
probe sends INIT, a responder answers INIT-ACK (its State Cookie carries the pod's identity) or
ABORT. Only the first half of the four-way handshake is ever needed, so this module knows only
INIT, INIT-ACK and ABORT. It does no I/O: callers own the sockets.

Checksum byte order, derived rather than guessed:

- RFC 9260 Appendix A (from RFC 3309) defines CRC32c as a bit-reflected CRC: the table-driven
  loop below, started at 0xFFFFFFFF and inverted at the end. Its sample code then byte-swaps that
  value and stores it with htonl; the swap and the network order cancel, so the value's *least*
  significant byte goes on the wire first.
- Linux agrees: net/sctp/output.c sets ``sh->checksum = sctp_compute_cksum(skb, 0)``, and
  include/net/sctp/checksum.h returns ``cpu_to_le32(~crc32c(~0, ...))`` (the reflected CRC with
  the checksum field zeroed), i.e. the same integer written little-endian. Its receive path
  (``sctp_rcv_checksum``) compares that against the header as-is.
- scapy's SCTP layer (an independent implementation) byte-swaps its CRC and packs it big-endian:
  again little-endian bytes. The unit tests pin packets scapy built, byte for byte.
- A Linux 6.18 kernel agreed in practice: across a veth pair with nf_conntrack_checksum=1,
  conntrack took an INIT built here as NEW and marked the same INIT with the four checksum bytes
  reversed INVALID (it also accepted the INIT-ACK and ABORT built here as replies).

So: ``checksum bytes = crc32c(packet with checksum zeroed).to_bytes(4, "little")``.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

# Chunk types (RFC 9260 section 3.2) and the one parameter type we read or write.
INIT = 1
INIT_ACK = 2
ABORT = 6
STATE_COOKIE = 7

# ABORT's T bit: set when the verification tag is the receiver's own tag reflected back.
ABORT_T_BIT = 0x01

# Sane defaults for the handshake: nothing ever flows after it, but peers and conntrack check
# that the stream counts are nonzero, and a full-size window is the least surprising value.
DEFAULT_A_RWND = 65535
DEFAULT_STREAMS = 10

_HEADER = struct.Struct("!HHII")  # source port, destination port, verification tag, checksum
_CHUNK_HEADER = struct.Struct("!BBH")  # type, flags, length (header included, padding not)
_PARAM_HEADER = struct.Struct("!HH")  # type, length (header included, padding not)
_INIT_FIXED = struct.Struct("!IIHHI")  # initiate tag, a_rwnd, outbound, inbound, initial TSN
_CHECKSUM_AT = slice(8, 12)
_MAX_TLV_LENGTH = 0xFFFF


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32c (Castagnoli, reflected polynomial 0x82F63B78) as used by SCTP.

    Pure Python on purpose: the lab checksums a few packets of under 100 bytes per probe, so a
    compiled crc32c package would add a native dependency for no measurable gain, and the
    standard library's zlib/binascii only offer the IEEE CRC-32 polynomial.
    """
    crc = 0xFFFFFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC32C_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFFFFFF


@dataclass(frozen=True)
class Chunk:
    """One SCTP chunk; ``value`` excludes the 4-byte chunk header and any padding."""

    type: int
    flags: int
    value: bytes


@dataclass(frozen=True)
class Packet:
    """An SCTP packet: the common header (checksum implied) and its chunks."""

    src_port: int
    dst_port: int
    verification_tag: int
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class Init:
    """The value of an INIT or INIT-ACK chunk; ``params`` is the raw variable-length part."""

    initiate_tag: int
    a_rwnd: int
    outbound_streams: int
    inbound_streams: int
    initial_tsn: int
    params: bytes


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _padded_length(length: int) -> int:
    return length + (-length % 4)


def _check_range(name: str, value: int, bits: int) -> None:
    # struct.error says "argument out of range" without naming the field; say which one.
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name} {value} does not fit in {bits} bits")


def _encode_chunk(chunk: Chunk) -> bytes:
    _check_range("chunk type", chunk.type, 8)
    _check_range("chunk flags", chunk.flags, 8)
    length = _CHUNK_HEADER.size + len(chunk.value)
    if length > _MAX_TLV_LENGTH:
        raise ValueError(f"chunk value of {len(chunk.value)} bytes is too long")
    return _pad4(_CHUNK_HEADER.pack(chunk.type, chunk.flags, length) + chunk.value)


def _with_checksum(packet: bytes) -> bytes:
    zeroed = packet[:8] + b"\x00\x00\x00\x00" + packet[12:]
    return packet[:8] + crc32c(zeroed).to_bytes(4, "little") + packet[12:]


def encode_packet(packet: Packet) -> bytes:
    """Serialise ``packet`` with every chunk padded to 4 bytes and the CRC32c filled in."""
    _check_range("source port", packet.src_port, 16)
    _check_range("destination port", packet.dst_port, 16)
    _check_range("verification tag", packet.verification_tag, 32)
    if not packet.chunks:
        raise ValueError("an SCTP packet needs at least one chunk")
    header = _HEADER.pack(packet.src_port, packet.dst_port, packet.verification_tag, 0)
    body = b"".join(_encode_chunk(chunk) for chunk in packet.chunks)
    return _with_checksum(header + body)


def _decode_chunks(body: bytes) -> tuple[Chunk, ...]:
    chunks = []
    offset = 0
    while offset < len(body):
        if len(body) - offset < _CHUNK_HEADER.size:
            raise ValueError(f"truncated chunk header at offset {12 + offset}")
        kind, flags, length = _CHUNK_HEADER.unpack_from(body, offset)
        if length < _CHUNK_HEADER.size or offset + length > len(body):
            raise ValueError(f"bad chunk length {length} at offset {12 + offset}")
        chunks.append(Chunk(kind, flags, body[offset + _CHUNK_HEADER.size : offset + length]))
        # Padding may be missing after the last chunk; the loop simply ends there.
        offset += _padded_length(length)
    return tuple(chunks)


def decode_packet(data: bytes) -> Packet:
    """Parse and verify an SCTP packet (starting at the common header).

    Raises ValueError if it is shorter than the header, carries no chunk, has a chunk length
    that is too small or runs past the end, or fails the CRC32c check.
    """
    if len(data) < _HEADER.size:
        raise ValueError(f"SCTP packet of {len(data)} bytes is shorter than its 12-byte header")
    src_port, dst_port, tag, _ = _HEADER.unpack_from(data)
    if _with_checksum(data)[_CHECKSUM_AT] != data[_CHECKSUM_AT]:
        raise ValueError("bad SCTP checksum")
    chunks = _decode_chunks(data[_HEADER.size :])
    if not chunks:
        raise ValueError("SCTP packet carries no chunks")
    return Packet(src_port, dst_port, tag, chunks)


def _encode_param(kind: int, value: bytes) -> bytes:
    length = _PARAM_HEADER.size + len(value)
    if length > _MAX_TLV_LENGTH:
        raise ValueError(f"parameter value of {len(value)} bytes is too long")
    return _PARAM_HEADER.pack(kind, length) + value


def _init_value(initiate_tag: int, initial_tsn: int, params: bytes = b"") -> bytes:
    # RFC 9260 section 5.1: a zero Initiate Tag is forbidden (the receiver must abort), so
    # refuse to build one rather than send a packet that can only fail.
    if initiate_tag == 0:
        raise ValueError("the initiate tag must not be 0")
    _check_range("initiate tag", initiate_tag, 32)
    _check_range("initial TSN", initial_tsn, 32)
    fixed = _INIT_FIXED.pack(
        initiate_tag, DEFAULT_A_RWND, DEFAULT_STREAMS, DEFAULT_STREAMS, initial_tsn
    )
    return fixed + params


def init_packet(src_port: int, dst_port: int, initiate_tag: int, initial_tsn: int) -> bytes:
    """An INIT: verification tag 0 in the header, as RFC 9260 section 8.5.1 requires."""
    chunk = Chunk(INIT, 0, _init_value(initiate_tag, initial_tsn))
    return encode_packet(Packet(src_port, dst_port, 0, (chunk,)))


def init_ack_packet(
    src_port: int,
    dst_port: int,
    peer_tag: int,
    initiate_tag: int,
    initial_tsn: int,
    cookie: bytes,
) -> bytes:
    """An INIT-ACK answering an INIT whose Initiate Tag was ``peer_tag``.

    The header carries ``peer_tag`` (the INIT's sender only accepts its own tag back), and the
    State Cookie parameter carries ``cookie`` verbatim. It is the only and so the last parameter,
    and the chunk length leaves out its padding, as RFC 9260 section 3.2 says and Linux does.
    """
    params = _encode_param(STATE_COOKIE, cookie)
    chunk = Chunk(INIT_ACK, 0, _init_value(initiate_tag, initial_tsn, params))
    return encode_packet(Packet(src_port, dst_port, peer_tag, (chunk,)))


def abort_packet(src_port: int, dst_port: int, peer_tag: int) -> bytes:
    """An ABORT (no error causes) refusing an INIT whose Initiate Tag was ``peer_tag``.

    RFC 9260 section 8.4: an ABORT answering an INIT carries the INIT's Initiate Tag with the T
    bit clear, because that tag is the peer's own, not a reflection of the tag it sent us.
    """
    return encode_packet(Packet(src_port, dst_port, peer_tag, (Chunk(ABORT, 0, b""),)))


def parse_init(chunk: Chunk) -> Init:
    """Read the fixed fields of an INIT or INIT-ACK chunk; the parameters stay raw bytes."""
    if chunk.type not in (INIT, INIT_ACK):
        raise ValueError(f"chunk type {chunk.type} is neither INIT nor INIT-ACK")
    if len(chunk.value) < _INIT_FIXED.size:
        raise ValueError(f"INIT value of {len(chunk.value)} bytes is shorter than 16")
    fields = _INIT_FIXED.unpack_from(chunk.value)
    return Init(*fields, params=chunk.value[_INIT_FIXED.size :])


def _iter_params(params: bytes) -> list[tuple[int, bytes]]:
    found = []
    offset = 0
    while offset < len(params):
        if len(params) - offset < _PARAM_HEADER.size:
            raise ValueError(f"truncated parameter header at offset {offset}")
        kind, length = _PARAM_HEADER.unpack_from(params, offset)
        if length < _PARAM_HEADER.size or offset + length > len(params):
            raise ValueError(f"bad parameter length {length} at offset {offset}")
        found.append((kind, params[offset + _PARAM_HEADER.size : offset + length]))
        # The last parameter's padding may or may not be inside the chunk (RFC 9260 3.2).
        offset += _padded_length(length)
    return found


def state_cookie(chunk: Chunk) -> bytes | None:
    """The State Cookie carried by an INIT-ACK chunk, or None if the chunk carries none.

    Any other chunk type yields None, so a probe can ask of whatever chunk arrived; malformed
    INIT-ACK parameters raise ValueError.
    """
    if chunk.type != INIT_ACK:
        return None
    for kind, value in _iter_params(parse_init(chunk).params):
        if kind == STATE_COOKIE:
            return value
    return None


def split_ipv4(datagram: bytes) -> tuple[str, str, bytes]:
    """Split what a raw IPv4 socket delivers into (source, destination, payload).

    Raw IPv4 sockets hand over the IP header too; its length comes from the IHL field, since
    options may follow the 20 fixed bytes.
    """
    if len(datagram) < 20:
        raise ValueError(f"IPv4 datagram of {len(datagram)} bytes is shorter than 20")
    version, header_words = datagram[0] >> 4, datagram[0] & 0x0F
    if version != 4:
        raise ValueError(f"IP version {version}, not 4")
    header_length = header_words * 4
    if header_length < 20 or header_length > len(datagram):
        raise ValueError(f"bad IPv4 header length {header_length}")
    source = str(ipaddress.IPv4Address(datagram[12:16]))
    destination = str(ipaddress.IPv4Address(datagram[16:20]))
    return source, destination, datagram[header_length:]
