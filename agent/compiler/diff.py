"""A change is a diff of IRs: what a backend must add, remove and update."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from agent.compiler.ir import IdentityKey, LocalEndpoint, NodeIR, PeerSet, TransitEndpoint
from agent.model.objects import IPAddress, IPNetwork


@dataclass(frozen=True)
class MemberChange:
    added: frozenset
    removed: frozenset


@dataclass(frozen=True)
class IRDiff:
    sets_added: dict[str, PeerSet] = field(default_factory=dict)
    sets_removed: tuple[str, ...] = ()
    members: dict[str, MemberChange] = field(default_factory=dict)
    endpoints_added: dict[str, LocalEndpoint] = field(default_factory=dict)
    endpoints_changed: dict[str, LocalEndpoint] = field(default_factory=dict)
    endpoints_removed: tuple[str, ...] = ()
    node_ips: tuple[IPAddress, ...] | None = None  # set when they changed
    # Pod addresses whose identity key changed (None: the address is gone).
    addresses: dict[IPAddress, IdentityKey | None] = field(default_factory=dict)
    # Transit endpoints (NodeIR.transit), as endpoints_* are for local ones.
    transit_added: dict[str, TransitEndpoint] = field(default_factory=dict)
    transit_changed: dict[str, TransitEndpoint] = field(default_factory=dict)
    transit_removed: tuple[str, ...] = ()
    peer_node_ips: tuple[IPAddress, ...] | None = None  # set when they changed
    pod_cidrs: tuple[IPNetwork, ...] | None = None  # set when they changed

    @property
    def empty(self) -> bool:
        return not (
            self.sets_added
            or self.sets_removed
            or self.members
            or self.endpoints_added
            or self.endpoints_changed
            or self.endpoints_removed
            or self.node_ips is not None
            or self.addresses
            or self.transit_added
            or self.transit_changed
            or self.transit_removed
            or self.peer_node_ips is not None
            or self.pod_cidrs is not None
        )


def diff_ir(old: NodeIR | None, new: NodeIR) -> IRDiff:
    """What turns `old` (None: nothing programmed) into `new`."""
    old = old or NodeIR(new.node, ())
    members = {}
    for sid in new.members:
        before, after = old.members.get(sid, frozenset()), new.members[sid]
        if before != after:
            members[sid] = MemberChange(after - before, before - after)
    added, changed, removed = _keyed_changes(old.endpoints, new.endpoints)
    transit_added, transit_changed, transit_removed = _keyed_changes(old.transit, new.transit)
    return IRDiff(
        sets_added={s: d for s, d in new.sets.items() if s not in old.sets},
        sets_removed=tuple(s for s in old.sets if s not in new.sets),
        members=members,
        endpoints_added=added,
        endpoints_changed=changed,
        endpoints_removed=removed,
        node_ips=new.node_ips if new.node_ips != old.node_ips else None,
        addresses=_address_changes(old.addresses, new.addresses),
        transit_added=transit_added,
        transit_changed=transit_changed,
        transit_removed=transit_removed,
        peer_node_ips=new.peer_node_ips if new.peer_node_ips != old.peer_node_ips else None,
        pod_cidrs=new.pod_cidrs if new.pod_cidrs != old.pod_cidrs else None,
    )


E = TypeVar("E", bound=LocalEndpoint)


def _keyed_changes(
    old: Mapping[str, E], new: Mapping[str, E]
) -> tuple[dict[str, E], dict[str, E], tuple[str, ...]]:
    """(added, changed, removed) between two maps of endpoints by ref."""
    added = {r: e for r, e in new.items() if r not in old}
    changed = {r: e for r, e in new.items() if r in old and old[r] != e}
    return added, changed, tuple(r for r in old if r not in new)


def _address_changes(
    old: Mapping[IPAddress, IdentityKey], new: Mapping[IPAddress, IdentityKey]
) -> dict[IPAddress, IdentityKey | None]:
    if old is new:
        return {}
    changes: dict[IPAddress, IdentityKey | None] = {
        ip: key for ip, key in new.items() if old.get(ip) != key
    }
    changes.update({ip: None for ip in old if ip not in new})
    return changes
