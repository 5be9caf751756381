"""The eBPF datapath's policy decision, in Python, over planned map contents: the same
lookups bpf/lib/verdict.h makes (without connection tracking). Tests hold it to the
oracle; `picket compile --backend ebpf` users can read the maps it reads."""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv6Network, ip_address

from agent.dataplane.ebpf.codec import addr_bytes
from agent.dataplane.ebpf.entries import AddrKey, MapState
from agent.dataplane.ebpf_layout import (
    DIR_EGRESS,
    EP_EGRESS_ISOLATED,
    EP_INGRESS_ISOLATED,
    EP_NAMED_EGRESS,
    IDENTITY_ANY,
    IDENTITY_HOST,
    IDENTITY_WORLD,
    IPV4_MAPPED_BITS,
    PROTOCOL_NUMBERS,
)
from agent.model.objects import IPAddress


@lru_cache(maxsize=65536)
def _as_mapped(key: AddrKey) -> IPv6Network:
    """A key as the kernel's trie holds it: 128 bits, IPv4 mapped (codec.py), so that an
    IPv6 prefix over ::ffff:0:0/96 holds IPv4 addresses here as it does there."""
    address, bits = key
    if ip_address(address).version == 4:
        bits += IPV4_MAPPED_BITS
    return IPv6Network((addr_bytes(address), bits))


def peer_identity(state: MapState, ip: IPAddress) -> tuple[int, int]:
    """The longest prefix in the address map that holds `ip` (LPM, over 16 bytes); an
    IPv6 address ::ffff:a.b.c.d is no peer's (policy.h)."""
    best, found = -1, (IDENTITY_WORLD, 0)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return found
    mapped = _as_mapped((str(ip), ip.max_prefixlen)).network_address
    for key, value in state.addresses.items():
        prefix = _as_mapped(key)
        if prefix.prefixlen > best and mapped in prefix:
            best, found = prefix.prefixlen, value
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
    peer: IPAddress,
    destination: IPAddress,
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
