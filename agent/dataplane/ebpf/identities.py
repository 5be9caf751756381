"""Identity allocation (pure): stable small numbers for label sets, ipBlock prefixes and
endpoints, kept across restarts (the backend persists `Allocations.to_json`) so that a
restarted agent computes the very same maps; and which identities a peer set selects."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from ipaddress import ip_network
from typing import Any

from agent.compiler.ir import CIDRSet, IdentityKey, SelectorSet, selects_identity
from agent.dataplane.ebpf_layout import IDENTITY_CIDR_FIRST, IDENTITY_POD_FIRST
from agent.model.objects import IPNetwork


class Numbering:
    """Stable small numbers for things, reusing freed ones; `changed` says whether any
    was given or freed since the flag was last cleared (what is worth persisting)."""

    def __init__(self, first: int, known: dict[Any, int] | None = None) -> None:
        self.first = first
        self.by_thing: dict[Any, int] = dict(known or {})
        self._free: list[int] = []
        self._next = max(self.by_thing.values(), default=first - 1) + 1
        self.changed = False

    def get(self, thing: Hashable) -> int:
        if thing not in self.by_thing:
            if self._free:
                number = self._free.pop()
            else:
                number, self._next = self._next, self._next + 1
            self.by_thing[thing] = number
            self.changed = True
        return self.by_thing[thing]

    def release(self, thing: Hashable) -> None:
        if thing in self.by_thing:
            self._free.append(self.by_thing.pop(thing))
            self.changed = True

    def keep_only(self, things: Iterable[Hashable]) -> None:
        """Free the numbers of everything not in `things`."""
        wanted = set(things)
        for thing in [t for t in self.by_thing if t not in wanted]:
            self.release(thing)


class Allocations:
    """Pod identities (by (namespace labels, pod labels)), prefix identities and
    endpoint numbers."""

    def __init__(self, saved: dict[str, Any] | None = None) -> None:
        saved = saved or {}
        self.identities = Numbering(
            IDENTITY_POD_FIRST, {_key_from_json(k): v for k, v in saved.get("identities", [])}
        )
        self.prefixes = Numbering(
            IDENTITY_CIDR_FIRST, {ip_network(k): v for k, v in saved.get("prefixes", [])}
        )
        self.endpoints = Numbering(1, dict(saved.get("endpoints", [])))

    def to_json(self) -> dict[str, Any]:
        return {
            "identities": [[_key_to_json(k), v] for k, v in self.identities.by_thing.items()],
            "prefixes": [[str(k), v] for k, v in self.prefixes.by_thing.items()],
            "endpoints": [[k, v] for k, v in self.endpoints.by_thing.items()],
        }

    def take_changed(self) -> bool:
        """Whether any number was given or freed since the last call."""
        numberings = (self.identities, self.prefixes, self.endpoints)
        changed = any(n.changed for n in numberings)
        for numbering in numberings:
            numbering.changed = False
        return changed

    def selected(
        self,
        peer_set: SelectorSet | CIDRSet,
        keys: Iterable[IdentityKey],
        prefixes: Iterable[IPNetwork],
    ) -> frozenset[int]:
        """The identities `peer_set` selects: for a selector, those of the label sets it
        matches; for an ipBlock, the prefixes of its family inside it and not inside an
        except (the longest prefix holding an address then decides exactly). An IPv4
        ipBlock never matches an IPv6 address, nor the reverse."""
        if isinstance(peer_set, SelectorSet):
            return frozenset(self.identities.get(k) for k in keys if selects_identity(peer_set, k))
        cidr = peer_set.cidr
        excepts = [e for e in peer_set.excepts if e.version == cidr.version]
        return frozenset(
            self.prefixes.get(p)
            for p in prefixes
            if p.version == cidr.version
            and p.subnet_of(cidr)  # type: ignore[arg-type]
            and not any(p.subnet_of(e) for e in excepts)  # type: ignore[arg-type]
        )


def _key_to_json(key: IdentityKey) -> list:
    return [[list(kv) for kv in key[0]], [list(kv) for kv in key[1]]]


def _key_from_json(raw: list) -> IdentityKey:
    return tuple(tuple(kv) for kv in raw[0]), tuple(tuple(kv) for kv in raw[1])
