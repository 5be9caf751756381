"""A map delta as the ordered list of kernel writes (pure): the backend performs them
one by one, and golden files show them.

The order never admits what the new state denies, nor denies what it admits: every
delete first (what goes is not in the new state, and a map near its capacity needs the
room), flags off before entries go (endpoints and transit endpoints, then homes,
addresses, policy, named); then entries before the flags that make them count (policy,
named, addresses, transit homes, then endpoints and transit endpoints)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.dataplane.ebpf import codec
from agent.dataplane.ebpf.entries import MapDelta

# (map, key, value); value None deletes the key.
Write = tuple[str, bytes, bytes | None]


@dataclass
class EndpointWrites:
    """The endpoint map is keyed by interface index, which only the node knows."""

    put: dict[int, tuple[int, int]] = field(default_factory=dict)  # ifindex -> number, flags
    delete: list[int] = field(default_factory=list)
    # The pods' own source addresses (codec.source_key): written before the endpoint
    # that would drop its traffic without them, deleted after it.
    sources_put: list[bytes] = field(default_factory=list)
    sources_delete: list[bytes] = field(default_factory=list)


def ordered_writes(
    delta: MapDelta,
    endpoints: EndpointWrites,
    stale: Mapping[str, Iterable[bytes]] | None = None,
    stable: bool = False,
) -> list[Write]:
    """`stale`: raw keys per map found in the kernel and in no plan (a full sync's
    repair). `stable` sorts within each step, for text that compares (a full sync's
    hundreds of thousands of entries are not worth sorting)."""
    order = sorted if stable else list
    stale = stale or {}
    out: list[Write] = []
    # Deletes first: what goes is no longer admitted, and a full map must have room for
    # what comes (capacity.py keeps the plan within it).
    out += [("picket_endpoints", codec.endpoint_key(i), None) for i in endpoints.delete]
    out += [("picket_transit", codec.transit_key(ip), None) for ip in order(delta.transit_del)]
    for name in ("picket_endpoints", "picket_transit"):
        out += [(name, raw, None) for raw in stale.get(name, ())]
    out += [("picket_sources", k, None) for k in order(endpoints.sources_delete)]
    out += [("picket_sources", raw, None) for raw in stale.get("picket_sources", ())]
    out += [("picket_transit_home", codec.transit_home_key(e), None) for e in order(delta.home_del)]
    out += [("picket_transit_home", raw, None) for raw in stale.get("picket_transit_home", ())]
    out += [("picket_addr", codec.addr_key(k), None) for k in order(delta.addr_del)]
    out += [("picket_policy", codec.policy_key(e), None) for e in order(delta.policy_del)]
    out += [("picket_named", codec.named_key(e), None) for e in order(delta.named_del)]
    for name in ("picket_policy", "picket_named"):
        out += [(name, raw, None) for raw in stale.get(name, ())]
    out += [("picket_policy", codec.policy_key(e), codec.PRESENT) for e in order(delta.policy_add)]
    out += [("picket_named", codec.named_key(e), codec.PRESENT) for e in order(delta.named_add)]
    out += [
        ("picket_addr", codec.addr_key(k), codec.addr_value(*v))
        for k, v in order(delta.addr_set.items())
    ]
    out += [
        ("picket_transit_home", codec.transit_home_key(e), codec.PRESENT)
        for e in order(delta.home_add)
    ]
    out += [("picket_sources", k, codec.PRESENT) for k in order(endpoints.sources_put)]
    out += [
        ("picket_endpoints", codec.endpoint_key(i), codec.endpoint_value(*v))
        for i, v in order(endpoints.put.items())
    ]
    out += [
        ("picket_transit", codec.transit_key(ip), codec.endpoint_value(*v))
        for ip, v in order(delta.transit_set.items())
    ]
    return out


def writes_text(writes: Iterable[Write]) -> str:
    """One line per write: map, key and value in hex (what golden files hold)."""
    lines = []
    for name, key, value in writes:
        verb = "delete" if value is None else "update"
        tail = "" if value is None else f" = {value.hex()}"
        lines.append(f"{verb} {name.removeprefix('picket_')} {key.hex()}{tail}")
    return "\n".join(lines) + "\n"
