"""NodeIR -> ipsets and every `ipset restore` script the iptables backend runs (pure;
the I/O is in iptables.py).

Peers are sets: `hash:ip` for selector sets, `hash:net` with `nomatch` entries for
ipBlock excepts, `hash:ip,port` for egress named ports. Every set exists once per
address family (an ipset holds one family): `family inet` named `picket-<id>`, the
names of agents before IPv6, and `family inet6` named `picket6-<id>`, each holding only
its family's members. A CIDR set exists only in its prefix's family: an IPv4 ipBlock
never matches an IPv6 address, and the reverse. Scripts:

- full sync: each set created if missing, built aside in a temporary set, swapped in and
  the temporary destroyed, so rules never see a set half-filled;
- incremental: new sets built the same way, existing ones changed by member (add/del
  with -exist, one batch: a relabel costs set updates, not a chain rewrite);
- destroy: sets no rule uses any more, after the rules that used them are gone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from agent.compiler.diff import IRDiff
from agent.compiler.ir import CIDRSet, NamedPortSet, NodeIR, PeerSet

SET_PREFIX = "picket-"
SET_PREFIX6 = "picket6-"  # the IPv6 twin of every set: ip6tables rules name these
PREFIXES = {4: SET_PREFIX, 6: SET_PREFIX6}
FAMILIES = (4, 6)
SET_NAME_MAX = 31  # ipset's limit: "picket6-t-" and a 12-character id leave room
DEFAULT_MAXELEM = 65536  # ipset's own default, what sets of earlier agents hold
DEFAULT_MAX_SET_ELEMENTS = 1 << 20  # --ipset-max-elements: the most members a set gets


def maxelem_for(members: int) -> int:
    """A set's size from its content: room for twice its members, a power of two, at
    least ipset's default (so that sets of earlier agents keep their size)."""
    size = DEFAULT_MAXELEM
    while size < 2 * members:
        size *= 2
    return size


@dataclass(frozen=True)
class IpSet:
    name: str
    kind: str  # hash:ip | hash:net | hash:ip,port
    members: frozenset[str] = field(default_factory=frozenset)  # `ipset add` syntax
    family: int = 4  # 4: family inet, 6: family inet6

    @property
    def maxelem(self) -> int:
        return maxelem_for(len(self.members))


def set_name(set_id: str, family: int = 4) -> str:
    """A set's name in `family` (a fixed set's too: `family_name`)."""
    return PREFIXES[family] + set_id


def family_name(name: str, family: int) -> str:
    """`picket-<rest>` (an IPv4 set's name) as the set of `family` holding the same."""
    return set_name(name.removeprefix(SET_PREFIX), family)


def ours(name: str) -> bool:
    """A set of ours, of either family (temporaries included)."""
    return name.startswith((SET_PREFIX, SET_PREFIX6))


# hash:net cannot hold a /0: two /1s cover the same addresses.
HALVES = {
    4: ("0.0.0.0/1", "128.0.0.0/1"),
    6: ("::/1", "8000::/1"),
}


def in_family(peer_set: PeerSet, family: int) -> bool:
    """Whether the set exists in `family`: a CIDR set only in its prefix's."""
    return not isinstance(peer_set, CIDRSet) or peer_set.cidr.version == family


def _cidr_members(peer: CIDRSet, family: int) -> frozenset[str]:
    if peer.cidr.version != family:
        return frozenset()
    nets = HALVES[family] if peer.cidr.prefixlen == 0 else (str(peer.cidr),)
    return frozenset([*nets, *(f"{e} nomatch" for e in peer.excepts if e.version == family)])


def _version(member: object) -> int | None:
    ip = member[0] if isinstance(member, tuple) else member
    return ip.version if isinstance(ip, IPv4Address | IPv6Address) else None


def family_count(members: Iterable[object], family: int) -> int:
    """How many of a set's members (addresses, or named-port triples) are of `family`."""
    return sum(1 for m in members if _version(m) == family)


def member_text(peer_set: PeerSet, member: object, family: int = 4) -> str | None:
    """One member in `ipset add` syntax; None for a member of the other family."""
    if _version(member) != family:
        return None
    if isinstance(peer_set, NamedPortSet):
        ip, proto, port = member  # type: ignore[misc]
        return f"{ip},{proto.lower()}:{port}"
    return str(member)


def set_kind(peer_set: PeerSet) -> str:
    if isinstance(peer_set, CIDRSet):
        return "hash:net"
    return "hash:ip,port" if isinstance(peer_set, NamedPortSet) else "hash:ip"


def render_set(ir: NodeIR, sid: str, family: int = 4) -> IpSet:
    peer_set = ir.sets[sid]
    if isinstance(peer_set, CIDRSet):
        members = _cidr_members(peer_set, family)
    else:
        texts = (member_text(peer_set, m, family) for m in ir.members.get(sid, frozenset()))
        members = frozenset(t for t in texts if t is not None)
    return IpSet(set_name(sid, family), set_kind(peer_set), members, family)


def family_sets(ir: NodeIR, family: int) -> list[str]:
    """The ids of the peer sets that exist in `family`."""
    return [sid for sid, peer_set in ir.sets.items() if in_family(peer_set, family)]


def render_sets(ir: NodeIR, family: int = 4) -> dict[str, IpSet]:
    """Every peer set the IR names that exists in `family`, with that family's members."""
    return {set_name(sid, family): render_set(ir, sid, family) for sid in family_sets(ir, family)}


def ipset_create(ipset: IpSet, name: str | None = None) -> str:
    """Created if missing (-exist: a set of the same type and size is left as it is)."""
    size = "" if ipset.maxelem == DEFAULT_MAXELEM else f" maxelem {ipset.maxelem}"
    family = "inet6" if ipset.family == 6 else "inet"
    return f"create {name or ipset.name} {ipset.kind} family {family}{size} -exist"


def ipset_fill(ipset: IpSet, name: str | None = None) -> list[str]:
    return [f"add {name or ipset.name} {member} -exist" for member in sorted(ipset.members)]


def _temporary(ipset: IpSet) -> str:
    prefix = PREFIXES[ipset.family]
    return f"{prefix}t-{ipset.name.removeprefix(prefix)}"[:SET_NAME_MAX]


def swap_script(sets: Iterable[IpSet], existing: Collection[str] | None = None) -> list[str]:
    """Each set (created if missing) refilled whole through a temporary set and `swap`,
    which also gives it the temporary's size. `existing`: the sets known to exist, not
    created again (`create -exist` fails on a set of another size); None: any may."""
    lines: list[str] = []
    for ipset in sets:
        temp = _temporary(ipset)
        if existing is None or ipset.name not in existing:
            lines.append(ipset_create(ipset))
        lines += [
            ipset_create(ipset, temp),
            f"flush {temp}",
            *ipset_fill(ipset, temp),
            f"swap {temp} {ipset.name}",
            f"destroy {temp}",
        ]
    return lines


def update_script(
    ir: NodeIR,
    change: IRDiff,
    rebuilt: Collection[str] = (),
    existing: Collection[str] = (),
    family: int = 4,
) -> list[str]:
    """`change` (the diff to `ir`) as updates of `family`'s sets: new sets, and those
    in `rebuilt` (grown past their size), built whole; the others changed by member.
    `existing`: the sets known to exist."""
    added = [sid for sid in change.sets_added if in_family(ir.sets[sid], family)]
    whole = [*added, *(sid for sid in rebuilt if sid not in added)]
    lines = swap_script((render_set(ir, sid, family) for sid in whole), existing)
    for sid, members in change.members.items():
        if sid in whole or sid not in ir.sets or not in_family(ir.sets[sid], family):
            continue
        name, peer_set = set_name(sid, family), ir.sets[sid]
        for verb, found in (("add", members.added), ("del", members.removed)):
            texts = (member_text(peer_set, m, family) for m in found)
            lines += [f"{verb} {name} {t} -exist" for t in sorted(filter(None, texts))]
    return lines


def destroy_script(names: Iterable[str]) -> list[str]:
    return [f"destroy {name}" for name in names]


def script_text(lines: list[str]) -> str:
    """`ipset restore` input ("" when there is nothing to do)."""
    return "\n".join(lines) + "\n" if lines else ""
