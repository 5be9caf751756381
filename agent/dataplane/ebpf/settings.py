"""The eBPF backend's map sizes and drop-event rate (pure: `picket agent` builds its flags from
these fields without loading anything)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EbpfSettings:
    """Map sizes and the drop-event rate (flags of `picket agent`; defaults documented
    there). Connection timeouts are the kernel's conntrack ones (net.netfilter.*)."""

    addr_entries: int = 65536
    endpoint_entries: int = 4096
    policy_entries: int = 524288
    named_entries: int = 65536
    ring_pages: int = 64
    events_per_second: int = 1000
    events_burst: int = 1000
    # Each local pod's share of the events (per CPU), before the node's: one flooded pod
    # cannot use up the others'.
    endpoint_events_per_second: int = 100
    endpoint_events_burst: int = 100
