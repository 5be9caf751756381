"""Service ports and their endpoints -> kube-proxy's iptables ruleset (pure; the I/O is
in kernel.py). The layout is the iptables mode's of Kubernetes v1.32:

  nat  PREROUTING, OUTPUT -> KUBE-SERVICES
         -d <clusterIP> --dport <port>  -> KUBE-SVC-<h> (or KUBE-SVL-<h>, internal Local)
         ... last: -m addrtype --dst-type LOCAL -> KUBE-NODEPORTS
       KUBE-NODEPORTS  --dport <nodePort> -> KUBE-EXT-<h>
       KUBE-EXT-<h>    Cluster: -> KUBE-MARK-MASQ, then -> KUBE-SVC-<h>
                       Local: pod and node traffic -> KUBE-SVC-<h> (node's masqueraded);
                              the rest -> KUBE-SVL-<h> (this node's endpoints, no SNAT)
       KUBE-SVC-<h>    ! -s <node pod CIDR> -> KUBE-MARK-MASQ (traffic not from our pods)
                       -m statistic --probability 1/n -> KUBE-SEP-<h1>, 1/(n-1) -> ...,
                       the last endpoint unconditionally
       KUBE-SEP-<h>    -s <endpoint> -> KUBE-MARK-MASQ (hairpin), DNAT --to-destination
       KUBE-MARK-MASQ  MARK --or-mark 0x4000
       POSTROUTING -> KUBE-POSTROUTING: unmarked RETURN; clear the mark; MASQUERADE
  filter  FORWARD, OUTPUT (new connections) -> KUBE-SERVICES: no endpoints -> REJECT
          FORWARD, INPUT (new) -> KUBE-EXTERNAL-SERVICES: node port with no endpoints ->
                       REJECT; Local with none on this node -> DROP
          FORWARD -> KUBE-FORWARD: INVALID DROP; marked ACCEPT; RELATED,ESTABLISHED ACCEPT

Traffic is "local" when its source is in this node's pod CIDR (kube-proxy's
--detect-local-mode=NodeCIDR). NodePorts answer on the node's addresses, not on
127.0.0.0/8 (iptables.localhostNodePorts false: no route_localnet).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.kubeproxy import names
from lab.kubeproxy.objects import Endpoint, PortKey, ServicePort
from lab.kubeproxy.topology import Categorized, categorize

MASQ_MARK = "0x4000"  # kube-proxy's default --iptables-masquerade-bit 14
FILTER_CHAINS = (names.SERVICES, names.EXTERNAL_SERVICES, names.FORWARD)
NAT_CHAINS = (names.SERVICES, names.NODEPORTS, names.POSTROUTING, names.MARK_MASQ)
_NODEPORTS_COMMENT = (
    '-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule '
    'in this chain" -m addrtype --dst-type LOCAL'
)
# IPv4 keeps node ports off 127.0.0.0/8 (localhostNodePorts false); IPv6 has no
# localhost node ports at all, and kube-proxy writes the rule without the exception.
NODEPORTS_TAIL = {
    4: f"{_NODEPORTS_COMMENT} ! -d 127.0.0.0/8 -j KUBE-NODEPORTS",
    6: f"{_NODEPORTS_COMMENT} -j KUBE-NODEPORTS",
}
_NEW = ("-m", "conntrack", "--ctstate", "NEW")
_PORTALS = "kubernetes service portals"
_EXTERNAL_PORTALS = "kubernetes externally-visible service portals"


def _jump(
    table: str, chain: str, target: str, comment: str, extra: tuple[str, ...] = ()
) -> tuple[str, str, tuple[str, ...]]:
    return table, chain, (*extra, "-m", "comment", "--comment", comment, "-j", target)


# The rules outside our chains, in kube-proxy's order; each is inserted first in its
# chain when missing (iptables -I), never moved when present. (table, chain, rule)
JUMPS = (
    _jump("filter", "INPUT", names.EXTERNAL_SERVICES, _EXTERNAL_PORTALS, _NEW),
    _jump("filter", "FORWARD", names.EXTERNAL_SERVICES, _EXTERNAL_PORTALS, _NEW),
    _jump("filter", "FORWARD", names.SERVICES, _PORTALS, _NEW),
    _jump("filter", "OUTPUT", names.SERVICES, _PORTALS, _NEW),
    _jump("filter", "FORWARD", names.FORWARD, "kubernetes forwarding rules"),
    _jump("nat", "OUTPUT", names.SERVICES, _PORTALS),
    _jump("nat", "PREROUTING", names.SERVICES, _PORTALS),
    _jump("nat", "POSTROUTING", names.POSTROUTING, "kubernetes postrouting rules"),
)


@dataclass(frozen=True)
class NodeContext:
    name: str
    pod_cidr: str  # this node's pods of the proxier's family: the local-traffic detector
    tcp_be_liberal: bool = False  # nf_conntrack_tcp_be_liberal set: no INVALID drop

    @property
    def family(self) -> int:
        return 6 if ":" in self.pod_cidr else 4


@dataclass
class Ruleset:
    """Chain -> rules (the arguments after `-A CHAIN`), per table, in order."""

    filter: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in FILTER_CHAINS})
    nat: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in NAT_CHAINS})
    programmed: dict[str, Any] = field(default_factory=dict)  # the status file's services

    def add(self, table: str, chain: str, rule: str) -> None:
        getattr(self, table).setdefault(chain, []).append(rule)


def _comment(text: str) -> str:
    return f'-m comment --comment "{text}"' if " " in text else f"-m comment --comment {text}"


def _proto(port: ServicePort) -> str:
    p = port.protocol.lower()
    return f"-m {p} -p {p}"


@dataclass(frozen=True)
class _Plan:
    """One service port's chains and which of them it needs, as kube-proxy decides."""

    port: ServicePort
    cat: Categorized

    @property
    def svc(self) -> str:
        return names.cluster_policy_chain(self.port.name_string, self.port.protocol)

    @property
    def svl(self) -> str:
        return names.local_policy_chain(self.port.name_string, self.port.protocol)

    @property
    def ext(self) -> str:
        return names.external_chain(self.port.name_string, self.port.protocol)

    @property
    def internal_chain(self) -> str:
        return self.svl if self.port.internal_local else self.svc

    @property
    def has_internal(self) -> bool:
        return self.cat.has_any and (not self.port.internal_local or bool(self.cat.local))

    @property
    def has_external(self) -> bool:
        return self.cat.has_any and (not self.port.external_policy_local or bool(self.cat.local))

    def sep(self, endpoint: Endpoint) -> str:
        return names.endpoint_chain(self.port.name_string, self.port.protocol, endpoint.address)

    def filter_target(self) -> tuple[str, str]:
        """What the filter table does with traffic that has nowhere to go: REJECT when
        the Service has no endpoints at all, DROP when only none are local."""
        if not self.cat.has_any:
            return "REJECT", f"{self.port.name_string} has no endpoints"
        return "DROP", f"{self.port.name_string} has no local endpoints"


def render(
    ports: Sequence[ServicePort],
    endpoints: Mapping[PortKey, Sequence[Endpoint]],
    node: NodeContext,
) -> Ruleset:
    rules = Ruleset()
    rules.add("nat", names.POSTROUTING, f"-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN")
    # Clear the mark, so a packet that passes the stack again is not masqueraded twice.
    rules.add("nat", names.POSTROUTING, f"-j MARK --xor-mark {MASQ_MARK}")
    rules.add(
        "nat",
        names.POSTROUTING,
        '-m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
    )
    rules.add("nat", names.MARK_MASQ, f"-j MARK --or-mark {MASQ_MARK}")
    for port in ports:
        plan = _Plan(port, categorize(port, endpoints.get(port.key, ()), node.name))
        _capture(plan, rules)
        _chains(plan, node, rules)
        _record(plan, rules.programmed)
    rules.add("nat", names.SERVICES, NODEPORTS_TAIL[node.family])
    _forward(node, rules)
    return rules


def _capture(plan: _Plan, rules: Ruleset) -> None:
    """KUBE-SERVICES and KUBE-NODEPORTS: which traffic is this service port's."""
    port, name = plan.port, plan.port.name_string
    target, why = plan.filter_target()
    dest = f"{_proto(port)} -d {port.cluster_ip} --dport {port.port}"
    if plan.has_internal:
        rules.add(
            "nat",
            names.SERVICES,
            f"{_comment(name + ' cluster IP')} {dest} -j {plan.internal_chain}",
        )
    else:
        rules.add("filter", names.SERVICES, f"{_comment(why)} {dest} -j {target}")
    if port.node_port is None:
        return
    if plan.cat.has_any:
        rules.add(
            "nat",
            names.NODEPORTS,
            f"{_comment(name)} {_proto(port)} --dport {port.node_port} -j {plan.ext}",
        )
    if not plan.has_external:
        rules.add(
            "filter",
            names.EXTERNAL_SERVICES,
            f"{_comment(why)} -m addrtype --dst-type LOCAL {_proto(port)} "
            f"--dport {port.node_port} -j {target}",
        )


def _chains(plan: _Plan, node: NodeContext, rules: Ruleset) -> None:
    """The service port's own chains: masquerade decisions, then the endpoint choice."""
    port, name = plan.port, plan.port.name_string
    if plan.has_internal:
        # Traffic to the cluster IP that is not from this node's pods (the node itself,
        # or routed in from elsewhere) is masqueraded, so replies come back this way.
        rules.add(
            "nat",
            plan.internal_chain,
            f"{_comment(name + ' cluster IP')} {_proto(port)} -d {port.cluster_ip} "
            f"--dport {port.port} ! -s {node.pod_cidr} -j {names.MARK_MASQ}",
        )
    if plan.cat.has_any and port.externally_accessible:
        _external_chain(plan, node, rules)
    if plan.cat.cluster and port.uses_cluster_endpoints:
        _balance(plan, plan.svc, plan.cat.cluster, rules)
    if plan.cat.local and port.uses_local_endpoints:
        _balance(plan, plan.svl, plan.cat.local, rules)
    for endpoint in plan.cat.reachable:
        chain = plan.sep(endpoint)
        # A pod reaching itself through its Service: masquerade, or its reply would go
        # to itself directly and never be un-NATed.
        rules.add("nat", chain, f"{_comment(name)} -s {endpoint.ip} -j {names.MARK_MASQ}")
        rules.add(
            "nat",
            chain,
            f"{_comment(name)} {_proto(port)} -j DNAT --to-destination {endpoint.address}",
        )


def _external_chain(plan: _Plan, node: NodeContext, rules: Ruleset) -> None:
    """KUBE-EXT-<h>: node port traffic. Cluster policy masquerades (the endpoint may be on
    another node); Local keeps the client's address and uses this node's endpoints."""
    name, ext = plan.port.name_string, plan.ext
    rules.nat.setdefault(ext, [])
    if not plan.port.external_policy_local:
        rules.add(
            "nat",
            ext,
            f"{_comment(f'masquerade traffic for {name} external destinations')} "
            f"-j {names.MARK_MASQ}",
        )
    else:
        rules.add(
            "nat",
            ext,
            f"{_comment(f'pod traffic for {name} external destinations')} "
            f"-s {node.pod_cidr} -j {plan.svc}",
        )
        rules.add(
            "nat",
            ext,
            f"{_comment(f'masquerade LOCAL traffic for {name} external destinations')} "
            f"-m addrtype --src-type LOCAL -j {names.MARK_MASQ}",
        )
        rules.add(
            "nat",
            ext,
            f"{_comment(f'route LOCAL traffic for {name} external destinations')} "
            f"-m addrtype --src-type LOCAL -j {plan.svc}",
        )
    if plan.has_external:
        policy = plan.svl if plan.port.external_policy_local else plan.svc
        rules.add("nat", ext, f"-j {policy}")


def _balance(plan: _Plan, chain: str, endpoints: Sequence[Endpoint], rules: Ruleset) -> None:
    """Endpoint i of n is taken with probability 1/(n-i) if none before it was: an
    even choice overall, the last one unconditional."""
    rules.nat.setdefault(chain, [])
    for i, endpoint in enumerate(endpoints):
        comment = _comment(f"{plan.port.name_string} -> {endpoint.address}")
        remaining = len(endpoints) - i
        statistic = (
            f" -m statistic --mode random --probability {names.probability(remaining)}"
            if remaining > 1
            else ""
        )
        rules.add("nat", chain, f"{comment}{statistic} -j {plan.sep(endpoint)}")


def _forward(node: NodeContext, rules: Ruleset) -> None:
    if not node.tcp_be_liberal:
        # Out-of-window packets conntrack calls INVALID would otherwise reach a pod
        # un-NATed and reset the connection (kubernetes#74839).
        rules.add("filter", names.FORWARD, "-m conntrack --ctstate INVALID -j DROP")
    rules.add(
        "filter",
        names.FORWARD,
        f'-m comment --comment "kubernetes forwarding rules" '
        f"-m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
    )
    rules.add(
        "filter",
        names.FORWARD,
        '-m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    )


def _record(plan: _Plan, programmed: dict[str, Any]) -> None:
    """The status file's entry: the endpoints this node DNATs the port to."""
    port = plan.port
    service = programmed.setdefault(port.service_ref, {"clusterIP": port.cluster_ip, "ports": {}})
    service["clusterIPs"] = [port.cluster_ip]
    service["ports"][f"{port.port}/{port.protocol}"] = {
        "nodePort": port.node_port,
        "endpoints": [e.address for e in plan.cat.reachable],
    }


def merged_programmed(renders: Iterable[Ruleset]) -> dict[str, Any]:
    """The status file's services over every family's proxier: a dual-stack Service's
    ClusterIPs and, per port, the endpoints of both families (the first family first)."""
    merged: dict[str, Any] = {}
    for rules in renders:
        for ref, service in rules.programmed.items():
            if ref not in merged:
                merged[ref] = copy.deepcopy(service)
                continue
            into = merged[ref]
            into["clusterIPs"] = [*into["clusterIPs"], *service["clusterIPs"]]
            for key, port in service["ports"].items():
                if key in into["ports"]:
                    into["ports"][key]["endpoints"] += port["endpoints"]
                else:
                    into["ports"][key] = copy.deepcopy(port)
    return merged


def restore_text(rules: Ruleset, stale_nat_chains: Sequence[str] = ()) -> str:
    """One iptables-restore --noflush input for both tables. Declaring a chain flushes
    it; a stale chain is declared (emptied) and then deleted."""
    lines = []
    for table, chains, stale in (
        ("filter", rules.filter, ()),
        ("nat", rules.nat, sorted(stale_nat_chains)),
    ):
        lines.append(f"*{table}")
        lines += [f":{chain} - [0:0]" for chain in (*chains, *stale)]
        lines += [f"-A {chain} {rule}" for chain, rs in chains.items() for rule in rs]
        lines += [f"-X {chain}" for chain in stale]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"
