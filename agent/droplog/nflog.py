"""Reading the packets the iptables NFLOG target hands to userspace (nfnetlink_log).

One `NflogReader` owns one NFLOG group in the network namespace it was created in (a
netlink socket keeps the namespace of the thread that made it) and turns the kernel's
batches into `NflogPacket`s.

Why not pyroute2: pyroute2 (0.9) speaks rtnetlink, generic netlink, ipset and
nf_tables, but has no nfnetlink_log support, and its generic message classes decode
every attribute into dicts, which is far too slow for the floods this reads (10,000+
packets per second while an attack or a misconfigured client is being denied). So this
is a raw `AF_NETLINK`/`NETLINK_NETFILTER` socket and `struct`: one preallocated receive
buffer, headers walked with `unpack_from`, only the attributes we use copied out.

The protocol (include/uapi/linux/netfilter/nfnetlink_log.h, net/netfilter/
nfnetlink_log.c):

* Configuration is an `NFULNL_MSG_CONFIG` message (subsystem `NFNL_SUBSYS_ULOG`) with an
  nfgenmsg whose `res_id` is the group (big-endian) and `NFULA_CFG_*` attributes. We ask
  for an ack for each and raise on a negative one. The bind and all its settings go in
  one message: the kernel creates the instance and applies mode, timeout, threshold and
  flags under one lock, so no packet is ever logged without a sequence number.
* The kernel answers with batches: up to `qthresh` `NFULNL_MSG_PACKET` messages in one
  datagram (followed by an `NLMSG_DONE` when there is more than one), sent when the
  threshold is reached, the next packet would not fit the batch buffer, or the flush
  timer (centiseconds) fires. A rule's own `--nflog-threshold` lowers the instance's
  (the smaller wins); iptables 1.8 (legacy and nft) leaves it unset, so `qthresh`
  applies: 20,000 logged packets arrive in ~630 datagrams with the defaults here.
* Attribute values are big-endian (`nla_put_be32`) even though netlink headers and
  attribute headers are host order; `NFULA_PREFIX` carries the trailing NUL.

Loss accounting (`lost`): when our receive buffer is full the kernel drops the whole
batch, bumps the socket's drop counter, and sets ENOBUFS on the socket once (further
drops stay silent until we have emptied the queue). The instance's sequence number
(`NFULNL_CFG_F_SEQ`, starting at 0 when we bind) is consumed when a packet is put in a
batch, before sending, so every dropped packet leaves a gap that the next delivered
packet reveals. `lost` is therefore

    (sum of sequence gaps seen) + (1 per ENOBUFS not yet followed by a gap)

An ENOBUFS is reported before the packets still queued ahead of the drop, so it stays
pending through gap-free packets and is replaced by the gap when one shows up (by
max(gap, pending overruns), so `lost` never goes down). Between an overrun and the
next delivered packet, `lost` is a lower bound (each drop lost at least one packet);
once any later packet arrives it is exact. What no reader can see: packets the kernel
failed to allocate a batch for (no sequence number consumed, no ENOBUFS).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import time
from types import TracebackType

from agent.droplog.ct_support import conntrack_refusal
from agent.droplog.nflog_wire import (
    BE32,
    NFNL_SUBSYS_ULOG,
    NFULNL_MSG_PACKET,
    NLA,
    NLMSGHDR,
    NflogPacket,
    decode_prefix,
    packet_from,
)

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
SO_RCVBUFFORCE = 33

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
NLMSG_DONE = 3

NFULNL_MSG_CONFIG = (NFNL_SUBSYS_ULOG << 8) | 1

NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_NLBUFSIZ = 1, 2, 3
NFULA_CFG_TIMEOUT, NFULA_CFG_QTHRESH, NFULA_CFG_FLAGS = 4, 5, 6
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND = 1, 2
NFULNL_COPY_PACKET = 0x02
NFULNL_CFG_F_SEQ = 0x0001
NFULNL_CFG_F_CONNTRACK = 0x0004
NFULNL_COPY_RANGE_MAX = 0xFFFF - 4  # the payload must fit one attribute

# The kernel's batch buffer is max(nlbufsiz, one packet's message), nlbufsiz <= 128 KiB
# and a packet's message < 64 KiB + headers, so no datagram outgrows this.
RECV_BUFFER = 256 * 1024
# At most this many datagrams per read(): a flood that never lets the queue empty must
# not keep the caller inside read() forever.
MAX_DATAGRAMS_PER_READ = 4096
ACK_TIMEOUT = 5.0

_NFGENMSG = struct.Struct("!BBH")  # family, version, res_id (the group, big-endian)
_ERRNO = struct.Struct("=i")


class ConntrackUnavailable(OSError):
    """The kernel will not attach conntrack entries to this group's packets."""


def _nla(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return NLA.pack(length, kind) + value + b"\0" * (-length % 4)


class NflogReader:
    """The packets NFLOG rules send to `group`, in this thread's network namespace.

    `copy_range` bytes of each packet are copied (enough for IPv4 + TCP/UDP headers
    with options); `rcvbuf` is the socket receive buffer (forced past rmem_max when we
    have CAP_NET_ADMIN), which is what absorbs a burst between two reads; `qthresh` and
    `flush_timeout_cs` batch packets into fewer datagrams (see the module docstring for
    the rule-level threshold that can lower it); `conntrack` asks for each packet's
    conntrack entry (ConntrackUnavailable when the kernel cannot give it). Not
    thread-safe: one reader, one thread at a time."""

    def __init__(
        self,
        group: int,
        copy_range: int = 128,
        rcvbuf: int = 4 << 20,
        qthresh: int = 32,
        flush_timeout_cs: int = 1,
        conntrack: bool = False,
    ) -> None:
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"NFLOG group {group} is not in 0..65535")
        if not 1 <= copy_range <= NFULNL_COPY_RANGE_MAX:
            raise ValueError(f"copy_range {copy_range} is not in 1..{NFULNL_COPY_RANGE_MAX}")
        if qthresh < 1 or flush_timeout_cs < 0 or rcvbuf < 1:
            raise ValueError("qthresh and rcvbuf must be positive, flush_timeout_cs >= 0")
        self.group = group
        self._gap_lost = 0
        self._pending_overruns = 0
        self._overruns = 0
        self._next_seq = 0  # a fresh instance numbers from 0
        self._pending: list[NflogPacket] = []
        self._acks: dict[int, int] = {}
        self._msg_seq = int(time.monotonic_ns()) & 0x7FFFFFFF
        self._prefixes: dict[bytes, str] = {}
        self._buf = bytearray(RECV_BUFFER)
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._closed = False
        try:
            self._sock.setblocking(False)
            self._set_rcvbuf(rcvbuf)
            self._sock.bind((0, 0))
            self._poll = select.poll()
            self._poll.register(self._sock.fileno(), select.POLLIN)
            self._configure(copy_range, qthresh, flush_timeout_cs, conntrack)
        except BaseException:
            self._sock.close()
            self._closed = True
            raise

    def _set_rcvbuf(self, size: int) -> None:
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except PermissionError:  # without CAP_NET_ADMIN: capped at net.core.rmem_max
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def _configure(
        self, copy_range: int, qthresh: int, flush_timeout_cs: int, conntrack: bool
    ) -> None:
        # No PF_UNBIND/PF_BIND (what old kernels needed and ulogd still sends): modern
        # kernels find NFLOG's logger by type, and PF_BIND would make nfnetlink_log the
        # namespace's default IPv4 logger (net.netfilter.nf_log.2) for good, sending
        # other users' kernel log lines (conntrack's log_invalid) to NFLOG group 0.
        flags = NFULNL_CFG_F_SEQ | (NFULNL_CFG_F_CONNTRACK if conntrack else 0)
        attrs = [
            _nla(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])),
            _nla(NFULA_CFG_MODE, struct.pack("!IBB", copy_range, NFULNL_COPY_PACKET, 0)),
            _nla(NFULA_CFG_TIMEOUT, BE32.pack(flush_timeout_cs)),
            _nla(NFULA_CFG_QTHRESH, BE32.pack(qthresh)),
            _nla(NFULA_CFG_FLAGS, struct.pack("!H", flags)),
        ]
        # The default batch buffer is about a page, which holds ~12 small packets; grow
        # it so `qthresh` packets fit. Values under the default are refused (silently),
        # so only ask for more than 8 KiB (the default is at most that).
        nlbufsiz = min(qthresh * (copy_range + 256), 128 * 1024)
        if nlbufsiz > 8192:
            attrs.append(_nla(NFULA_CFG_NLBUFSIZ, BE32.pack(nlbufsiz)))
        try:
            self._command(socket.AF_UNSPEC, self.group, b"".join(attrs))
        except OSError as err:
            # Another socket's instance answers EPERM (the kernel checks the owner's
            # port id before the command); EBUSY is our own socket binding twice.
            if err.errno in (errno.EPERM, errno.EBUSY):
                raise OSError(
                    errno.EBUSY,
                    f"NFLOG group {self.group} is already bound by another netlink socket "
                    "in this network namespace (another reader: a second agent, ulogd, "
                    f"...); the kernel answered {errno.errorcode[err.errno]}",
                ) from None
            # The kernel checks the flag before binding: nothing is bound on refusal.
            if conntrack and err.errno == errno.EOPNOTSUPP:
                raise ConntrackUnavailable(err.errno, conntrack_refusal()) from None
            raise

    def _command(self, family: int, group: int, attrs: bytes) -> None:
        """Send one config message and wait for its ack; raise OSError on a nack.
        EAGAIN (the subsystem was just autoloaded) is retried."""
        for _ in range(3):
            self._msg_seq = (self._msg_seq + 1) & 0xFFFFFFFF
            seq = self._msg_seq
            body = _NFGENMSG.pack(family, 0, group) + attrs
            header = NLMSGHDR.pack(
                NLMSGHDR.size + len(body), NFULNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, 0
            )
            self._sock.sendto(header + body, (0, 0))
            error = self._await_ack(seq)
            if error == errno.EAGAIN:
                continue
            if error:
                raise OSError(error, f"nfnetlink_log config: {os.strerror(error)}")
            return
        raise OSError(errno.EAGAIN, "nfnetlink_log config: the kernel kept answering EAGAIN")

    def _await_ack(self, seq: int) -> int:
        deadline = time.monotonic() + ACK_TIMEOUT
        while seq not in self._acks:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"nfnetlink_log: no ack from the kernel in {ACK_TIMEOUT}s")
            if self._poll.poll(max(1, int(left * 1000))):
                # Packets may already flow once the group is bound; keep them for read().
                self._drain(self._pending)
        return self._acks.pop(seq)

    def fileno(self) -> int:
        """The socket, for an event loop or selector to wait on."""
        return self._sock.fileno()

    @property
    def lost(self) -> int:
        """Packets the kernel logged for us that we never received (module docstring)."""
        return self._gap_lost + self._pending_overruns

    @property
    def overruns(self) -> int:
        """ENOBUFS reports: how often the receive buffer overflowed."""
        return self._overruns

    def read(self, timeout: float | None) -> list[NflogPacket]:
        """Wait up to `timeout` seconds (None: until something arrives) for data, then
        drain what is queued without blocking. Returns [] on timeout. Waiting is poll(2)
        with millisecond resolution, rounded down, so it never blocks longer."""
        out, self._pending = self._pending, []
        if not out:
            wait = -1 if timeout is None else max(0, int(timeout * 1000))
            if not self._poll.poll(wait):
                return out
        self._drain(out)
        return out

    def _drain(self, out: list[NflogPacket]) -> None:
        recv_into, buf, size = self._sock.recv_into, self._buf, len(self._buf)
        for _ in range(MAX_DATAGRAMS_PER_READ):
            try:
                n = recv_into(buf, size, socket.MSG_TRUNC)
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
                self._overruns += 1
                self._pending_overruns += 1
                continue
            # MSG_TRUNC returns the datagram's real length; cannot exceed the buffer
            # (see RECV_BUFFER), and if it did the cut messages would show as a gap.
            self._parse(min(n, size), out)

    def _parse(self, end: int, out: list[NflogPacket]) -> None:
        buf, unpack_hdr = self._buf, NLMSGHDR.unpack_from
        offset = 0
        while offset + 16 <= end:
            length, kind, _flags, msg_seq, _portid = unpack_hdr(buf, offset)
            if length < 16 or offset + length > end:
                return  # malformed or cut short: nothing more to trust in this datagram
            if kind == NFULNL_MSG_PACKET:
                packet = packet_from(buf, offset + 20, offset + length, self._prefix)
                if packet.seq is not None:
                    self._account(packet.seq)
                out.append(packet)
            elif kind == NLMSG_ERROR and length >= 20:
                self._acks[msg_seq] = -_ERRNO.unpack_from(buf, offset + 16)[0]
            # NLMSG_DONE closes a batch; anything else is not ours to read.
            offset += (length + 3) & ~3

    def _prefix(self, raw: bytes) -> str:
        prefix = self._prefixes.get(raw)
        if prefix is None:
            if len(self._prefixes) >= 1024:  # rules come and go; keep the cache bounded
                self._prefixes.clear()
            prefix = decode_prefix(raw)
            self._prefixes[raw] = prefix
        return prefix

    def _account(self, seq: int) -> None:
        expected = self._next_seq
        if seq != expected:
            gap = (seq - expected) & 0xFFFFFFFF
            if gap < 0x80000000:  # a backwards step cannot happen on one socket: resync
                self._gap_lost += max(gap, self._pending_overruns)
                self._pending_overruns = 0
        self._next_seq = (seq + 1) & 0xFFFFFFFF

    def close(self) -> None:
        """Unbind the group (best effort, no ack awaited: the socket may be flooded) and
        close. Closing alone would also free the group; unbinding says so explicitly."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._msg_seq = (self._msg_seq + 1) & 0xFFFFFFFF
            body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, self.group) + _nla(
                NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_UNBIND])
            )
            header = NLMSGHDR.pack(
                NLMSGHDR.size + len(body), NFULNL_MSG_CONFIG, NLM_F_REQUEST, self._msg_seq, 0
            )
            self._sock.sendto(header + body, (0, 0))
        self._sock.close()

    def __enter__(self) -> NflogReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
