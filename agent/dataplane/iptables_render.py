"""NodeIR -> iptables chains and ipsets, as text (pure; the I/O is in iptables.py).

Layout, in the mangle table (one jump from FORWARD; nothing else is touched):

    PICKET-FORWARD   from a pod's interface, not its address -> PICKET-SPOOFED
                     (source_check.py: NFLOG, DROP)
                     from or to the node's pod CIDR, not a programmed pod on its
                     own interface -> PICKET-UNPROG-EG/-IN (unprogrammed.py: NFLOG, DROP)
                     ESTABLISHED,RELATED -> RETURN (replies are not new connections)
                     NEW TCP without SYN -> PICKET-NO-SYN (no mid-stream pickup)
                     -> PICKET-TRANSIT (the transit mark: sets and reads, transit_mark.py)
                     connection marked judged upstream -> RETURN
                     -i <pod veth> -o <same> -> RETURN (a pod to itself via a Service)
                     -i <pod veth> -> PICKET-EG-<h>   (traffic leaving a pod: its egress)
                     -s <its node> -d <transit pod> DNAT -> RETURN
                     -d <transit pod> DNAT -> PICKET-IN-<h> (its ingress, judged here)
                     -o <pod veth> -> PICKET-IN-<h>   (traffic entering a pod: its ingress)
    PICKET-NO-SYN    -i/-o <veth of a pod isolated in either direction> -> DROP;
                     -d <transit pod> DNAT -> DROP
    PICKET-EG-<h>    INVALID,UNTRACKED -> NFLOG "picket invalid egress" (the drop log), DROP;
                     then one rule per (peer set, protocol) of each
                     clause -> RETURN (admitted)
    PICKET-IN-<h>    ... ; then NFLOG (the drop log) and DROP (in audit mode: NFLOG only)

Picket's chains touch only policed directions, as the eBPF datapath does: a packet
conntrack has no entry for (INVALID, UNTRACKED) is dropped in an isolated direction, a
TCP packet that is NEW without a SYN where a pod it leaves or enters is isolated in
either direction, and traffic between pods no policy selects passes as if Picket were not
there (a flow whose conntrack entry was flushed is picked up and goes on).

A transit pod is a pod of another node that this node may DNAT outside clients to (a
NodePort backend, docs/agent.md): its ingress is judged here, on the client's own
address, for the connections this node DNATed, before kube-proxy masquerades them.

Why mangle, not filter: FORWARD's mangle chain runs after kube-proxy's DNAT and before
its masquerade, as filter's does, but before any filter rule, so no one else's ACCEPT
can skip ours: kube-proxy's KUBE-FORWARD accepts NodePort traffic by its masquerade mark
(0x4000), and whichever of two jumps was inserted last comes first in filter. An
ACCEPT would end the mangle chain for rules after ours (MSS clamping, say), so our
chains only RETURN or DROP.

A direction chain is named by a hash of its rules, so pods selected by the same
policies share one. Peers are ipsets (ipset_render.py). The rule count depends on local
pods and policy rules, never on how many pods a peer set holds.
Traffic between a pod and its own node never passes FORWARD, so it is always allowed.

Both address families get this layout from the same IR: IPv4 as iptables-restore
text, IPv6 as ip6tables-restore text (`family`=6), with the same chain names (each
family has its own tables) and each family's own sets (`picket6-...`, ipset_render.py).
What differs: the sets and addresses named are the family's (a clause whose peers are
only CIDR sets of the other family writes no rule there: an IPv4 ipBlock admits
nothing over IPv6), and the pod CIDRs, transit pods and node addresses are the
family's. The rest holds as is: a pod's direction chains are reached by its interface,
so an isolated pod's IPv6 traffic is judged even when the API lists no IPv6 address
for it; ICMPv6 (`ipv6-icmp`, 58) is policed like ICMP, its echo a NEW connection that
only a rule without ports admits, its errors passing only as RELATED to a connection
policy admitted, its neighbour discovery and MLD types UNTRACKED by conntrack (so
dropped in an isolated direction when a pod sends them through the node); ip6tables'
`-p` finds the transport header past extension headers; fragments are reassembled by
conntrack's defragmentation before FORWARD (a fragment that never completes never gets
here); and neighbour discovery between a pod and its node is link-local, so it never
passes FORWARD.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.compiler.ir import (
    ALL_PORTS,
    Clause,
    DirectionRules,
    NamedPortClause,
    NodeIR,
    PeerPortClause,
    PortRange,
)
from agent.dataplane import source_check, transit_mark, unprogrammed
from agent.dataplane.counters import AUDIT_REASON
from agent.dataplane.ipset_render import FAMILIES, IpSet, family_sets, render_sets, set_name

TABLE = "mangle"
FORWARD_CHAIN = "PICKET-FORWARD"
NO_SYN_CHAIN = "PICKET-NO-SYN"
ESTABLISHED_RULE = "-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN"
# No conntrack entry: conntrack refused the packet (INVALID) or declined to track it
# (UNTRACKED: what ICMPv6 neighbour discovery and MLD get, wherever they are sent, and
# what a raw-table NOTRACK makes). INVALID alone let those reach the rules, where a
# rule without ports admitted them: the eBPF datapath drops both.
INVALID_MATCH = "-m conntrack --ctstate INVALID,UNTRACKED"
INVALID_RULE = f'{INVALID_MATCH} -m comment --comment "no conntrack entry" -j DROP'
CHAIN_PREFIX = "PICKET-"
DEFAULT_NFLOG_GROUP = 100
MULTIPORT_LIMIT = 15  # xt_multiport: 15 ports, a range counting as two
# The one rule outside our chains: FORWARD's jump to them (-I to insert, -C, -D).
JUMP_RULE = ("FORWARD", "-m", "comment", "--comment", "picket: NetworkPolicy", "-j", FORWARD_CHAIN)


@dataclass(frozen=True)
class Ruleset:
    chains: dict[str, list[str]]  # chain -> rule arguments (after `-A CHAIN`)
    sets: dict[str, IpSet]

    def rule_count(self) -> int:
        return sum(len(rules) for rules in self.chains.values())


def _chain_name(direction: str, rules: DirectionRules, peer_side: str, audit: bool) -> str:
    key = (peer_side, rules.policies, rules.clauses, audit)
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:12].upper()
    return f"{CHAIN_PREFIX}{'IN' if direction == 'Ingress' else 'EG'}-{digest}"


def _port_matches(ports: tuple[PortRange, ...] | None) -> list[tuple[str, str]]:
    """(protocol argument, port match) alternatives, ORed by being separate rules."""
    if ports is None:
        return [("", "")]
    out = []
    by_protocol: dict[str, list[PortRange]] = {}
    for r in ports:
        by_protocol.setdefault(r.protocol, []).append(r)
    for protocol, ranges in sorted(by_protocol.items()):
        proto = f"-p {protocol.lower()}"
        if any((r.first, r.last) == ALL_PORTS for r in ranges):
            out.append((proto, ""))
            continue
        out += [(proto, f"-m multiport --dports {chunk}") for chunk in _multiport_chunks(ranges)]
    return out


def _multiport_chunks(ranges: list[PortRange]) -> Iterable[str]:
    chunk: list[str] = []
    weight = 0
    for r in sorted(ranges):
        item, cost = (str(r.first), 1) if r.first == r.last else (f"{r.first}:{r.last}", 2)
        if weight + cost > MULTIPORT_LIMIT:
            yield ",".join(chunk)
            chunk, weight = [], 0
        chunk.append(item)
        weight += cost
    if chunk:
        yield ",".join(chunk)


def _comment(clause: Clause) -> str:
    return f'-m comment --comment "{clause.origin}"'


@dataclass(frozen=True)
class Family:
    """What one address family's rules name: its number and the peer sets that exist
    in it (ipset_render.family_sets)."""

    version: int
    sets: frozenset[str]

    @classmethod
    def of(cls, ir: NodeIR, version: int) -> Family:
        return cls(version, frozenset(family_sets(ir, version)))


def _clause_rules(clause: Clause, peer_side: str, family: Family) -> list[str]:
    """`peer_side` is src for ingress (the peer sends), dst for egress."""
    if isinstance(clause, NamedPortClause):
        return [
            f"-m set --match-set {set_name(clause.members, family.version)} "
            f"{peer_side},{peer_side} {_comment(clause)} -j RETURN"
        ]
    assert isinstance(clause, PeerPortClause)
    # A CIDR set of the other family does not exist here: it admits no one.
    peers = (
        [""]
        if clause.peers is None
        else [
            f"-m set --match-set {set_name(sid, family.version)} {peer_side}"
            for sid in clause.peers
            if sid in family.sets
        ]
    )
    rules = []
    for proto, port_match in _port_matches(clause.ports):
        for peer in peers:
            # -p comes first: a protocol's match modules need it.
            parts = (proto, peer, port_match, _comment(clause), "-j RETURN")
            rules.append(" ".join(p for p in parts if p))
    return rules


def invalid_prefix(direction: str) -> str:
    """The drop log's prefix of an isolated direction's INVALID drop."""
    return f"picket invalid {'ingress' if direction == 'Ingress' else 'egress'}"


def _invalid_log_rule(direction: str, nflog_group: int) -> str:
    return (
        f"{INVALID_MATCH} -j NFLOG --nflog-group {nflog_group} "
        f'--nflog-prefix "{invalid_prefix(direction)}"'
    )


def nflog_prefix(direction: str, audit: bool) -> str:
    """What the drop log reads back to know the direction and whether it dropped."""
    word = "ingress" if direction == "Ingress" else "egress"
    return f"picket {'audit' if audit else 'drop'} {word}"


def _direction_chain(
    direction: str, rules: DirectionRules, nflog_group: int, family: Family, audit: bool = False
) -> tuple[str, list[str]]:
    peer_side = "src" if direction == "Ingress" else "dst"
    # No conntrack entry (conntrack refused the packet, or it is untracked): nothing
    # to judge it as, so an isolated direction drops it, and the drop log says so once
    # per pod, direction and window.
    body: list[str] = [_invalid_log_rule(direction, nflog_group), INVALID_RULE]
    for clause in rules.clauses:
        body += _clause_rules(clause, peer_side, family)
    body.append(
        f'-m comment --comment "isolated by {", ".join(rules.policies)}" '
        f'-j NFLOG --nflog-group {nflog_group} --nflog-prefix "{nflog_prefix(direction, audit)}"'
    )
    # Audit mode logs and lets the packet fall off the end of the chain (admitted); the
    # connection it opens is then ESTABLISHED, so it is logged once.
    if not audit:
        body.append("-j DROP")
    return _chain_name(direction, rules, peer_side, audit), body


def render_chains(
    ir: NodeIR,
    interfaces: Mapping[str, str],
    nflog_group: int = DEFAULT_NFLOG_GROUP,
    uplinks: Iterable[str] = (),
    transit_dscp: int = transit_mark.DEFAULT_DSCP,
    family: int = 4,
) -> dict[str, list[str]]:
    """`interfaces` maps a local endpoint (namespace/name) to its host-side interface;
    endpoints without one (not wired yet) get no rules until they have one. `uplinks`
    are the interfaces holding the node's addresses (where the transit mark is read).
    `family`: 4 for iptables, 6 for ip6tables (the module docstring says what differs)."""
    fam = Family.of(ir, family)
    chains: dict[str, list[str]] = {}
    forward = [ESTABLISHED_RULE]
    if source_check.applies(ir, interfaces):
        # Before everything: a forged source could ride another pod's connection.
        forward.insert(0, source_check.forward_rule(family))
        chains[source_check.CHAIN] = source_check.chain_rules(nflog_group)
    closed = unprogrammed.forward_rules(ir, family)
    if closed:
        # Next: a pod's traffic before its rules are in place (unprogrammed.py).
        at = forward.index(ESTABLISHED_RULE)
        forward[at:at] = closed
        chains.update(unprogrammed.chains(nflog_group))
    # A TCP packet that opens nothing yet has no conntrack entry belongs to a
    # connection whose entry we removed because policy now forbids it: conntrack's
    # loose pickup would otherwise adopt it, possibly reversed (from the server) and so
    # allowed, and the connection would live on. Which end is the client is unknown, so
    # it is dropped where a pod it leaves or enters is isolated in either direction.
    no_syn: list[str] = []
    transit_rules = transit_mark.chain_rules(ir, uplinks, transit_dscp, family)
    if transit_rules:
        chains[transit_mark.CHAIN] = transit_rules
        forward += [
            f"-j {transit_mark.CHAIN}",
            f"-m connmark --mark {transit_mark.TRUSTED_CTMARK:#x}/{transit_mark.TRUSTED_CTMARK:#x}"
            ' -m comment --comment "judged by the node that DNATed it" -j RETURN',
        ]
    dispatch_in: list[str] = []
    for ref, endpoint in ir.endpoints.items():
        ifname = interfaces.get(ref)
        if ifname is None:
            continue
        if endpoint.egress is not None or endpoint.ingress is not None:
            no_syn += [
                f'-i {ifname} -o {ifname} -m comment --comment "{ref}: itself" -j RETURN',
                *(f'{flag} {ifname} -m comment --comment "{ref}" -j DROP' for flag in ("-i", "-o")),
            ]
            # In and out of the same pod's interface: the pod reaching itself through a
            # Service that chose it (hairpin), which is always allowed.
            forward.append(
                f'-i {ifname} -o {ifname} -m comment --comment "{ref}: itself" -j RETURN'
            )
        for direction, rules, flag, target in (
            ("Egress", endpoint.egress, "-i", forward),
            ("Ingress", endpoint.ingress, "-o", dispatch_in),
        ):
            if rules is None:
                continue  # not isolated: nothing to check
            name, body = _direction_chain(direction, rules, nflog_group, fam, endpoint.audit)
            chains[name] = body
            target.append(f'{flag} {ifname} -m comment --comment "{ref}" -j {name}')
    for ref, endpoint in ir.transit.items():
        assert endpoint.ingress is not None  # transit endpoints are ingress-isolated
        name, body = _direction_chain("Ingress", endpoint.ingress, nflog_group, fam, endpoint.audit)
        chains[name] = body
        dnat = "-m conntrack --ctstate DNAT"
        for ip in endpoint.ips:
            if ip.version != family:
                continue
            forward += [
                f'-s {node_ip} -d {ip} {dnat} -m comment --comment "{ref}: its node" -j RETURN'
                for node_ip in endpoint.node_ips
                if node_ip.version == family
            ]
            forward.append(f'-d {ip} {dnat} -m comment --comment "{ref}: transit" -j {name}')
            no_syn.append(f'-d {ip} {dnat} -m comment --comment "{ref}: transit" -j DROP')
    if no_syn:
        chains[NO_SYN_CHAIN] = no_syn
        at = forward.index(ESTABLISHED_RULE) + 1
        forward.insert(at, f"-p tcp ! --syn -m conntrack --ctstate NEW -j {NO_SYN_CHAIN}")
    chains[FORWARD_CHAIN] = forward + dispatch_in
    return dict(sorted(chains.items()))


def render(
    ir: NodeIR,
    interfaces: Mapping[str, str],
    nflog_group: int = DEFAULT_NFLOG_GROUP,
    uplinks: Iterable[str] = (),
    transit_dscp: int = transit_mark.DEFAULT_DSCP,
    family: int = 4,
) -> Ruleset:
    """The chains of `family` and every set they name."""
    sets = render_sets(ir, family)
    sets.update({s.name: s for s in source_check.render_sets(ir, interfaces, family)})
    if transit_dscp:
        peers, transit = transit_mark.render_sets(ir, family)
        sets.update({s.name: s for s in (*peers, *transit)})
    chains = render_chains(ir, interfaces, nflog_group, uplinks, transit_dscp, family)
    return Ruleset(chains, sets)


def render_families(
    ir: NodeIR,
    interfaces: Mapping[str, str],
    nflog_group: int = DEFAULT_NFLOG_GROUP,
    uplinks: Iterable[str] = (),
    transit_dscp: int = transit_mark.DEFAULT_DSCP,
) -> dict[int, Ruleset]:
    """Both families' rulesets: 4 for iptables-restore, 6 for ip6tables-restore."""
    return {
        family: render(ir, interfaces, nflog_group, uplinks, transit_dscp, family)
        for family in FAMILIES
    }


def restore_text(ruleset: Ruleset, stale_chains: Iterable[str] = (), table: str = TABLE) -> str:
    """Input for `iptables-restore --noflush`: declaring a chain flushes it, so our chains
    are replaced whole in one transaction; stale ones are flushed, then deleted."""
    stale = sorted(set(stale_chains) - set(ruleset.chains))
    lines = [f"*{table}"]
    lines += [f":{name} - [0:0]" for name in [*ruleset.chains, *stale]]
    for name, rules in ruleset.chains.items():
        lines += [f"-A {name} {rule}" for rule in rules]
    lines += [f"-X {name}" for name in stale]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def cleanup_text(chains: Iterable[str], table: str = TABLE) -> str:
    """Input for `iptables-restore --noflush` that flushes and deletes `chains` (ours,
    once the jump to them is gone)."""
    return restore_text(Ruleset({}, {}), chains, table)


# (chain, what the rule counts) -> ((direction, reason, namespace), packets)
CountedRule = tuple[tuple[str, str], tuple[str, str, str], int]


def counted_rules(save_text: str) -> list[CountedRule]:
    """The drop counters in `iptables-save -c` output: each direction chain's INVALID
    drop (reason "invalid") and final DROP ("policy") or, in audit mode, its NFLOG
    ("would_drop_policy"), with the namespace of the policies named in its comment (a
    pod's isolating policies share its namespace); and PICKET-NO-SYN's drops ("no_syn"),
    by the pod (or transit pod) whose interface or address the rule names."""
    out: list[CountedRule] = []
    namespace: dict[str, str] = {}
    pending: list[tuple[str, str, int]] = []  # (chain, direction, packets) of INVALID drops
    for line in save_text.splitlines():
        if not line.startswith("[") or f"-A {CHAIN_PREFIX}" not in line:
            continue
        counts, _, rule = line.partition(" -A ")
        chain, _, rest = rule.partition(" ")
        packets = int(counts.strip("[]").split(":")[0])
        if chain == NO_SYN_CHAIN:
            if rest.endswith("-j DROP"):
                ref = rest.partition('--comment "')[2].partition('"')[0].partition(":")[0]
                direction = "egress" if rest.startswith("-i ") else "ingress"
                key = (chain, f"no_syn {direction} {ref}")
                out.append((key, (direction, "no_syn", ref.partition("/")[0]), packets))
            continue
        if chain in (source_check.CHAIN, *unprogrammed.CHAINS):
            continue  # counted by the jump to it
        if chain == FORWARD_CHAIN:
            # By its target: iptables-save escapes the comment's quote ("pod\'s").
            if rest.endswith(f"-j {source_check.CHAIN}"):
                out.append(((chain, "spoofed"), ("egress", "spoofed", ""), packets))
            for direction, target in (
                ("egress", unprogrammed.EGRESS_CHAIN),
                ("ingress", unprogrammed.INGRESS_CHAIN),
            ):
                if rest.endswith(f"-j {target}"):
                    cidr = rest.split()[1]  # one rule per pod CIDR and direction
                    key = (chain, f"unprogrammed {direction} {cidr}")
                    out.append((key, (direction, "unprogrammed", ""), packets))
            continue
        direction = "ingress" if chain.startswith(f"{CHAIN_PREFIX}IN-") else "egress"
        if rest == INVALID_RULE:
            pending.append((chain, direction, packets))
        elif rest.startswith(f"{INVALID_MATCH} -j NFLOG"):
            continue  # the drop log's copy of the INVALID drop after it
        elif "-j NFLOG" in rest:
            policies = rest.partition('--comment "isolated by ')[2].partition('"')[0]
            namespace[chain] = policies.partition("/")[0]
            if "picket audit" in rest:
                out.append(((chain, "audit"), (direction, AUDIT_REASON, namespace[chain]), packets))
        elif rest == "-j DROP":
            out.append(
                ((chain, "policy"), (direction, "policy", namespace.get(chain, "")), packets)
            )
    for chain, direction, packets in pending:  # the namespace comes from a later rule
        out.append(((chain, "invalid"), (direction, "invalid", namespace.get(chain, "")), packets))
    return out
