"""The eBPF datapath's policy decision, in Python, over planned map contents: the same
lookups bpf/lib/verdict.h makes (without connection tracking). Tests hold it to the
oracle; `picket compile --backend ebpf` users can read the maps it reads."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_network

from agent.dataplane.ebpf.entries import MapState
from agent.dataplane.ebpf_layout import (
    DIR_EGRESS,
    EP_EGRESS_ISOLATED,
    EP_INGRESS_ISOLATED,
    EP_NAMED_EGRESS,
    IDENTITY_ANY,
    IDENTITY_HOST,
    IDENTITY_WORLD,
    PROTOCOL_NUMBERS,
)


def peer_identity(state: MapState, ip: IPv4Address) -> tuple[int, int]:
    """The longest prefix in the address map that holds `ip` (LPM)."""
    best, found = -1, (IDENTITY_WORLD, 0)
    for (address, bits), value in state.addresses.items():
        if bits > best and ip in ip_network(f"{address}/{bits}"):
            best, found = bits, value
    return found


def _policy_match(
    state: MapState, endpoint: int, direction: int, identity: int, protocol: int, port: int
) -> bool:
    for entry in state.policy:
        if (entry.endpoint, entry.direction, entry.identity) != (endpoint, direction, identity):
            continue
        if entry.protocol is None:
            return True
        shift = 16 - entry.bits
        if entry.protocol == protocol and port >> shift == entry.port >> shift:
            return True
    return False


def endpoint_admits(
    state: MapState,
    ref: str,
    direction: int,
    peer: IPv4Address,
    destination: IPv4Address,
    protocol: str,
    port: int,
) -> bool:
    """Whether local endpoint `ref`'s check for `direction` lets a new connection pass."""
    endpoint, flags = state.endpoints[ref]
    pod_identity, cidr_identity = peer_identity(state, peer)
    if pod_identity == IDENTITY_HOST:
        return True
    if not flags & (EP_EGRESS_ISOLATED if direction == DIR_EGRESS else EP_INGRESS_ISOLATED):
        return True
    number = PROTOCOL_NUMBERS[protocol]
    # As verdict.h: the pod identity, the prefix identity (0: none), then any peer.
    for identity in {pod_identity, cidr_identity or IDENTITY_ANY, IDENTITY_ANY}:
        if _policy_match(state, endpoint, direction, identity, number, port):
            return True
    if direction == DIR_EGRESS and flags & EP_NAMED_EGRESS:
        return (endpoint, str(destination), number, port) in state.named
    return False
