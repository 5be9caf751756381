"""NodeIR -> ipsets and every `ipset restore` script the iptables backend runs (pure;
the I/O is in iptables.py).

Peers are sets: `hash:ip` for selector sets, `hash:net` with `nomatch` entries for
ipBlock excepts, `hash:ip,port` for egress named ports (IPv4; IPv6 comes with
ip6tables). Scripts:

- full sync: each set created if missing, built aside in a temporary set, swapped in and
  the temporary destroyed, so rules never see a set half-filled;
- incremental: new sets built the same way, existing ones changed by member (add/del
  with -exist, one batch: a relabel costs set updates, not a chain rewrite);
- destroy: sets no rule uses any more, after the rules that used them are gone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_network

from agent.compiler.diff import IRDiff
from agent.compiler.ir import CIDRSet, NamedPortSet, NodeIR, PeerSet

SET_PREFIX = "picket-"
SET_NAME_MAX = 31  # ipset's limit
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

    @property
    def maxelem(self) -> int:
        return maxelem_for(len(self.members))


def set_name(set_id: str) -> str:
    return SET_PREFIX + set_id


def _cidr_members(peer: CIDRSet) -> frozenset[str]:
    # hash:net cannot hold a /0: two /1s cover the same addresses.
    if not isinstance(peer.cidr, IPv4Network):
        return frozenset()
    nets = (
        [ip_network("0.0.0.0/1"), ip_network("128.0.0.0/1")]
        if peer.cidr.prefixlen == 0
        else [peer.cidr]
    )
    return frozenset(
        [str(n) for n in nets]
        + [f"{e} nomatch" for e in peer.excepts if isinstance(e, IPv4Network)]
    )


def member_text(peer_set: PeerSet, member: object) -> str | None:
    """One member in `ipset add` syntax; None for what the set cannot hold (IPv6)."""
    if isinstance(peer_set, NamedPortSet):
        ip, proto, port = member  # type: ignore[misc]
        return f"{ip},{proto.lower()}:{port}" if isinstance(ip, IPv4Address) else None
    return str(member) if isinstance(member, IPv4Address) else None


def set_kind(peer_set: PeerSet) -> str:
    if isinstance(peer_set, CIDRSet):
        return "hash:net"
    return "hash:ip,port" if isinstance(peer_set, NamedPortSet) else "hash:ip"


def render_set(ir: NodeIR, sid: str) -> IpSet:
    peer_set = ir.sets[sid]
    if isinstance(peer_set, CIDRSet):
        members = _cidr_members(peer_set)
    else:
        texts = (member_text(peer_set, m) for m in ir.members.get(sid, frozenset()))
        members = frozenset(t for t in texts if t is not None)
    return IpSet(set_name(sid), set_kind(peer_set), members)


def render_sets(ir: NodeIR) -> dict[str, IpSet]:
    """Every peer set the IR names, with its members (IPv4; IPv6 comes with ip6tables)."""
    return {set_name(sid): render_set(ir, sid) for sid in ir.sets}


def ipset_create(ipset: IpSet, name: str | None = None) -> str:
    """Created if missing (-exist: a set of the same type and size is left as it is)."""
    size = "" if ipset.maxelem == DEFAULT_MAXELEM else f" maxelem {ipset.maxelem}"
    return f"create {name or ipset.name} {ipset.kind} family inet{size} -exist"


def ipset_fill(ipset: IpSet, name: str | None = None) -> list[str]:
    return [f"add {name or ipset.name} {member} -exist" for member in sorted(ipset.members)]


def _temporary(ipset: IpSet) -> str:
    return f"{SET_PREFIX}t-{ipset.name.removeprefix(SET_PREFIX)}"[:SET_NAME_MAX]


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
    ir: NodeIR, change: IRDiff, rebuilt: Collection[str] = (), existing: Collection[str] = ()
) -> list[str]:
    """`change` (the diff to `ir`) as set updates: new sets, and those in `rebuilt`
    (grown past their size), built whole; the others changed by member. `existing`: the
    sets known to exist."""
    whole = [*change.sets_added, *(sid for sid in rebuilt if sid not in change.sets_added)]
    lines = swap_script((render_set(ir, sid) for sid in whole), existing)
    for sid, members in change.members.items():
        if sid in whole or sid not in ir.sets:
            continue
        name, peer_set = set_name(sid), ir.sets[sid]
        for verb, found in (("add", members.added), ("del", members.removed)):
            texts = (member_text(peer_set, m) for m in found)
            lines += [f"{verb} {name} {t} -exist" for t in sorted(filter(None, texts))]
    return lines


def destroy_script(names: Iterable[str]) -> list[str]:
    return [f"destroy {name}" for name in names]


def script_text(lines: list[str]) -> str:
    """`ipset restore` input ("" when there is nothing to do)."""
    return "\n".join(lines) + "\n" if lines else ""
