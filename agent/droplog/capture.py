"""Where denied packets come from: the iptables backend's NFLOG group, or the eBPF
backend's ring buffer. Both hand over PacketEvents in batches and count what they lost
(the capture never slows the datapath: a reader that falls behind loses events).

The drop log knows neither backend: it is handed its source (`NflogSource`,
`RingSource`), which `agent/commands/agent_cmd.py` builds from what the backend exposes
(the iptables renderer's NFLOG prefixes; the eBPF ring buffer and its event layout)."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Protocol

from agent.droplog.ct_attrs import original_destination
from agent.droplog.events import DROP, PacketEvent, sent_to
from agent.droplog.nflog import ConntrackUnavailable, NflogReader
from agent.droplog.nflog_wire import parse_payload

log = logging.getLogger("picket.droplog")
# What of each logged packet the drop log reads: an IPv6 header (40 bytes), a few
# extension headers and the transport header's ports (nflog_wire.parse_ipv6).
COPY_RANGE = 256


class Capture(Protocol):
    def read(self, timeout: float) -> list[PacketEvent]:
        """Waits up to `timeout` seconds for events, then returns what is there."""
        ...

    def lost(self) -> int:
        """Events lost so far (kernel rate guard, full buffers)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class NflogSource:
    """What the iptables rules send to userspace: the NFLOG `group`, and for the prefix
    each denying rule logs with, (direction, verdict): ("ingress", "drop"), ...;
    `others`, for the prefix of each drop that is no policy's, (direction, reason):
    ("egress", "spoofed"), ("ingress", "invalid"), ... (events.py's reasons)."""

    group: int
    prefixes: Mapping[str, tuple[str, str]]
    others: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class RingEventLayout:
    """How to read one ring-buffer record: `record` is its ctypes structure (fields
    direction, reason, protocol, family; saddr, daddr and service_addr, 16 bytes each in
    network order, an IPv4 address IPv4-mapped (::ffff:a.b.c.d); sport, dport and
    service_port; service_addr zeroes when DNAT left the destination); `verdicts` maps
    the reasons that are policy denials to a verdict ("drop", "would-drop"), other
    reasons are not the drop log's; `egress` is the direction value of egress; `ipv4`
    the family value of an IPv4 record (any other is IPv6's); `others` maps the reasons
    of drops that are no policy's to events.py's reason names (a forged source, an
    untracked packet)."""

    record: type[ctypes.Structure]
    verdicts: Mapping[int, str]
    egress: int
    ipv4: int
    others: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RingSource:
    """The eBPF datapath's drop events: `open(callback)` subscribes to its ring buffer,
    `poll(milliseconds)` runs the callbacks of what arrived, `suppressed()` is the
    kernel's count of events its token bucket or a full ring held back."""

    open: Callable[[Callable[[Any, Any, int], None]], None]
    poll: Callable[[int], None]
    suppressed: Callable[[], int]
    layout: RingEventLayout


def open_capture(source: NflogSource | RingSource) -> Capture:
    """The reader for `source` (OSError when it cannot be had, e.g. the group is taken)."""
    if isinstance(source, RingSource):
        return EbpfCapture(source)
    return NflogCapture(source)


class NflogCapture:
    """Asks the kernel for each packet's conntrack entry, whose original tuple says
    where the client sent it before kube-proxy's DNAT; a kernel that cannot give it
    still gets a drop log, whose records then name no Service (said once, here)."""

    def __init__(self, source: NflogSource) -> None:
        self._prefixes = dict(source.prefixes)
        self._others = dict(source.others)
        try:
            self._reader = NflogReader(source.group, COPY_RANGE, conntrack=True)
        except ConntrackUnavailable as exc:
            log.warning("%s; drop records will not name the Service a connection went to", exc)
            self._reader = NflogReader(source.group, COPY_RANGE)

    def read(self, timeout: float) -> list[PacketEvent]:
        events = []
        for packet in self._reader.read(timeout):
            parsed = parse_payload(packet.payload)  # IPv4 or IPv6 (ip6tables' rules)
            other = self._others.get(packet.prefix)
            if other is not None and parsed is not None:
                direction, reason = other
                protocol, src, sport, dst, dport = parsed
                event = PacketEvent(direction, DROP, protocol, src, sport, dst, dport)
                events.append(replace(event, reason=reason, interface=packet.indev or 0))
                continue
            kind = self._prefixes.get(packet.prefix)
            if kind is None or parsed is None:
                continue  # another NFLOG user of the group, or not IP
            protocol, src, sport, dst, dport = parsed
            original = original_destination(packet.conntrack) if packet.conntrack else None
            events.append(
                PacketEvent(
                    *kind, protocol, src, sport, dst, dport, sent_to(protocol, dst, dport, original)
                )
            )
        return events

    def lost(self) -> int:
        return self._reader.lost

    def close(self) -> None:
        self._reader.close()


class EbpfCapture:
    """Reads the backend's ring buffer; what the kernel's token bucket or a full ring
    held back is the `event_suppressed` counter, which is pinned and so counts from the
    maps' creation: losses are counted from this reader's start."""

    def __init__(self, source: RingSource) -> None:
        self._source = source
        self._record = ctypes.POINTER(source.layout.record)
        self._batch: list[PacketEvent] = []
        self._lost_before = source.suppressed()
        source.open(self._on_event)

    def _on_event(self, _ctx: Any, data: Any, _size: int) -> None:
        raw = ctypes.cast(data, self._record).contents
        layout = self._source.layout
        direction = "egress" if raw.direction == layout.egress else "ingress"
        ipv4 = raw.family == layout.ipv4
        src, dst = _address(raw.saddr, ipv4), _address(raw.daddr, ipv4)
        other = layout.others.get(raw.reason)
        if other is not None:
            self._batch.append(
                PacketEvent(
                    direction,
                    DROP,
                    raw.protocol,
                    src,
                    raw.sport,
                    dst,
                    raw.dport,
                    None,
                    other,
                    raw.ifindex,
                )
            )
            return
        verdict = layout.verdicts.get(raw.reason)
        if verdict is None:
            return
        original = (_address(raw.service_addr, ipv4), raw.service_port)
        self._batch.append(
            PacketEvent(
                direction,
                verdict,
                raw.protocol,
                src,
                raw.sport,
                dst,
                raw.dport,
                sent_to(raw.protocol, dst, raw.dport, original),
            )
        )

    def read(self, timeout: float) -> list[PacketEvent]:
        self._source.poll(max(0, int(timeout * 1000)))
        batch, self._batch = self._batch, []
        return batch

    def lost(self) -> int:
        return self._source.suppressed() - self._lost_before

    def close(self) -> None:
        pass


def _address(raw: ctypes.Array, ipv4: bool) -> IPv4Address | IPv6Address:
    """A record's 16 address bytes in its family: an IPv4 record's are ::ffff:a.b.c.d
    (zeroes, for no address, are 0.0.0.0). By the record's family, not by the bytes: an
    IPv6 packet may carry ::ffff:a.b.c.d itself (a forged source), which is shown as
    it was sent."""
    packed = bytes(raw)
    return IPv4Address(packed[12:]) if ipv4 else IPv6Address(packed)
