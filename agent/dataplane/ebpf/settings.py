"""The eBPF backend's map sizes and timeouts (pure: `picket agent` builds its flags from
these fields without loading anything)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EbpfSettings:
    """Map sizes and timeouts (flags of `picket agent`; defaults documented there)."""

    addr_entries: int = 65536
    endpoint_entries: int = 4096
    policy_entries: int = 524288
    named_entries: int = 65536
    ct_entries: int = 262144
    ring_pages: int = 64
    tcp_timeout: int = 3600
    udp_timeout: int = 60
    other_timeout: int = 60
    fin_timeout: int = 10
    events_per_second: int = 1000
    events_burst: int = 1000
