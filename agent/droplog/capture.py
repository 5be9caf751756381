"""Where denied packets come from: the iptables backend's NFLOG group, or the eBPF
backend's ring buffer. Both hand over PacketEvents in batches and count what they lost
(the capture never slows the datapath: a reader that falls behind loses events)."""

from __future__ import annotations

import ctypes
import socket
from ipaddress import IPv4Address
from typing import Any, Protocol

from agent.dataplane.ebpf_layout import (
    DIR_EGRESS,
    REASON_AUDIT_POLICY,
    REASON_DROP_POLICY,
    DropEvent,
)
from agent.dataplane.iptables_render import nflog_prefix
from agent.droplog.events import DROP, WOULD_DROP, PacketEvent, parse_ipv4
from agent.droplog.nflog import NflogReader


class Capture(Protocol):
    def read(self, timeout: float) -> list[PacketEvent]:
        """Waits up to `timeout` seconds for events, then returns what is there."""
        ...

    def lost(self) -> int:
        """Events lost so far (kernel rate guard, full buffers)."""
        ...

    def close(self) -> None: ...


# The iptables renderer's NFLOG prefixes -> (direction, verdict).
_PREFIXES = {
    nflog_prefix(direction, audit): (direction.lower(), WOULD_DROP if audit else DROP)
    for audit in (False, True)
    for direction in ("Ingress", "Egress")
}


class NflogCapture:
    def __init__(self, group: int) -> None:
        self._reader = NflogReader(group)

    def read(self, timeout: float) -> list[PacketEvent]:
        events = []
        for packet in self._reader.read(timeout):
            kind = _PREFIXES.get(packet.prefix)
            parsed = parse_ipv4(packet.payload)
            if kind is None or parsed is None:
                continue  # another NFLOG user of the group, or not IPv4
            protocol, src, sport, dst, dport = parsed
            events.append(PacketEvent(kind[0], kind[1], protocol, src, sport, dst, dport))
        return events

    def lost(self) -> int:
        return self._reader.lost

    def close(self) -> None:
        self._reader.close()


class EbpfCapture:
    """Reads the backend's `picket_drops` ring buffer; what the kernel's token bucket or
    a full ring held back is the `event_suppressed` counter, which is pinned and so
    counts from the maps' creation: losses are counted from this reader's start."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._batch: list[PacketEvent] = []
        self._lost_before = self._suppressed()
        backend.bpf["picket_drops"].open_ring_buffer(self._on_event)

    def _on_event(self, _ctx: Any, data: Any, _size: int) -> None:
        raw = ctypes.cast(data, ctypes.POINTER(DropEvent)).contents
        if raw.reason not in (REASON_DROP_POLICY, REASON_AUDIT_POLICY):
            return
        self._batch.append(
            PacketEvent(
                "egress" if raw.direction == DIR_EGRESS else "ingress",
                WOULD_DROP if raw.reason == REASON_AUDIT_POLICY else DROP,
                raw.protocol,
                IPv4Address(socket.ntohl(raw.saddr)),
                raw.sport,
                IPv4Address(socket.ntohl(raw.daddr)),
                raw.dport,
            )
        )

    def read(self, timeout: float) -> list[PacketEvent]:
        self._backend.bpf.ring_buffer_poll(max(0, int(timeout * 1000)))
        batch, self._batch = self._batch, []
        return batch

    def _suppressed(self) -> int:
        return self._backend.counters().get("event_suppressed", 0)

    def lost(self) -> int:
        return self._suppressed() - self._lost_before

    def close(self) -> None:
        pass
