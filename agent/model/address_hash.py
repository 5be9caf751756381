"""A hash for IPv6 addresses that does not collide on a cluster's address plan.

CPython's `IPv6Address.__hash__` is `hash((self._ip, self._scope_id))`, and Python
hashes an integer modulo 2**61 - 1: the bits above 61 fold back onto the low ones, so
addresses that differ in their prefix and in their host part in step collide. A
cluster's pod addresses are exactly that (a /64 per node, hosts numbered from 1):
10,000 of the lab's pod addresses share 560 hashes, and every dict and set keyed by
them (the IR's address table, peer sets, the eBPF plans) degrades to chains of
collisions; a dual-stack sync at 10,000 pods spent most of its time in them
(docs/benchmarks.md). The replacement hashes the address's 16 bytes (SipHash, as for
any bytes), so equal addresses still hash equal and distinct ones spread.

It replaces the method on the class, so it must be installed before any IPv6 address
is hashed into a container that outlives the switch: `agent/__init__.py` installs it
when the package is first imported, before any of its modules run. IPv4Address
(`hash(hex(int))`, a string hash) does not fold and is left alone."""

from __future__ import annotations

from ipaddress import IPv6Address

_STDLIB_HASH = IPv6Address.__hash__


def _hash(self: IPv6Address) -> int:
    return hash((self._ip.to_bytes(16, "big"), self._scope_id))  # type: ignore[attr-defined]


def install() -> None:
    """Replace IPv6Address's hash (idempotent)."""
    IPv6Address.__hash__ = _hash  # type: ignore[method-assign]


def installed() -> bool:
    return IPv6Address.__hash__ is _hash
