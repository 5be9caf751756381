"""Which connections a change can forbid: whether it narrows at all, and the addresses
whose connections must be judged again (agent/dataplane/conntrack.py then asks the
kernel for those entries only, not the whole table)."""

from __future__ import annotations

from agent.compiler.diff import IRDiff
from agent.compiler.ir import NodeIR
from agent.model.objects import IPAddress


def narrows(change: IRDiff) -> bool:
    """Whether a change can forbid a connection that was allowed (then conntrack entries
    are judged again); adding members or pods only widens. A new transit endpoint
    narrows: connections this node DNATs to it are now judged here, on the client's
    address, which its own node (seeing this node's address) could not judge; one
    removed is judged here no more, which only widens."""
    return bool(
        change.endpoints_changed
        or change.endpoints_removed
        or change.transit_added
        or change.transit_changed
        or change.sets_removed
        or change.node_ips is not None
        or any(m.removed for m in change.members.values())
    )


def narrowed_addresses(old: NodeIR, change: IRDiff) -> frozenset[IPAddress] | None:
    """The addresses at least one end of every connection `change` can forbid has; None
    when that is any connection (the node's own addresses changed).

    A connection's verdict depends on its server's ingress rules, its client's egress
    rules, and which sets each end is a member of. So it can turn to denied only if an
    end's endpoint changed or went (its rules), an end left a set (a member removed:
    an address, or the address of a named-port member), or it is DNATed to a transit
    endpoint now judged here or judged differently. A removed set needs nothing of its
    own: only a rule referencing it kept it, and that rule's endpoint changed."""
    if change.node_ips is not None:
        return None
    addresses: set[IPAddress] = set()
    for name, endpoint in change.endpoints_changed.items():
        addresses.update(endpoint.ips)
        if name in old.endpoints:  # its address may be what changed
            addresses.update(old.endpoints[name].ips)
    for name in change.endpoints_removed:
        if name in old.endpoints:
            addresses.update(old.endpoints[name].ips)
    for endpoint in (*change.transit_added.values(), *change.transit_changed.values()):
        addresses.update(endpoint.ips)
    for member_change in change.members.values():
        for member in member_change.removed:
            # selector sets hold addresses; named-port sets (address, protocol, port)
            addresses.add(member[0] if isinstance(member, tuple) else member)
    return frozenset(addresses)
