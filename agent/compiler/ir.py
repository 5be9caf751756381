"""The backend-neutral IR: what one node must enforce, in terms a dataplane can match
on with addresses and ports only.

For each local endpoint and direction: not isolated (None), or the clauses that admit
traffic. Clauses name *peer sets* by id; a set's definition is shared by every policy
that uses it, and its members (pod addresses) change without any clause changing, so
a pod relabel is a membership update, not a rule rewrite.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.model.objects import NAMESPACE_NAME_LABEL, IPAddress, IPNetwork
from agent.model.selectors import LabelSelector

ALL_PORTS = (1, 65535)


@dataclass(frozen=True, order=True)
class PortRange:
    protocol: str
    first: int
    last: int

    def contains(self, protocol: str, port: int | None) -> bool:
        if protocol != self.protocol:
            return False
        if (self.first, self.last) == ALL_PORTS:
            return True
        return port is not None and self.first <= port <= self.last

    def __str__(self) -> str:
        if (self.first, self.last) == ALL_PORTS:
            return f"any/{self.protocol}"
        span = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{span}/{self.protocol}"


@dataclass(frozen=True)
class SelectorSet:
    """Pods chosen by a peer's selectors: in `namespace` when there is no namespace
    selector, else in every namespace the selector matches; every pod there when there
    is no pod selector."""

    namespace_selector: LabelSelector | None
    namespace: str | None
    pod_selector: LabelSelector | None

    def key(self) -> str:
        ns = (
            f"ns={self.namespace}"
            if self.namespace_selector is None
            else f"nssel={self.namespace_selector}"
        )
        pods = "all" if self.pod_selector is None else str(self.pod_selector)
        return f"sel|{ns}|pods={pods}"

    def __str__(self) -> str:
        where = (
            f"namespace {self.namespace}"
            if self.namespace_selector is None
            else f"namespaces matching {self.namespace_selector}"
        )
        which = "all pods" if self.pod_selector is None else f"pods matching {self.pod_selector}"
        return f"{which} in {where}"

    # The peer rule, stated once for the compilers and the eBPF planner (the oracle keeps
    # its own statement; the differential tests hold the two together). In two halves so
    # that members.set_members can judge a namespace once for all of its pods.

    def selects(
        self,
        namespace: str | None,
        namespace_labels: Mapping[str, str],
        pod_labels: Mapping[str, str],
    ) -> bool:
        """Whether a pod with `pod_labels`, in `namespace` with `namespace_labels`, is
        in this set."""
        # namespaceSelector and podSelector in one peer mean AND.
        in_namespace = self.selects_namespace(namespace, namespace_labels)
        return in_namespace and self.selects_pod_labels(pod_labels)

    def selects_namespace(self, namespace: str | None, namespace_labels: Mapping[str, str]) -> bool:
        # Without a namespaceSelector, the podSelector picks pods of the policy's namespace.
        if self.namespace_selector is None:
            return namespace == self.namespace
        return self.namespace_selector.matches(namespace_labels)

    def selects_pod_labels(self, pod_labels: Mapping[str, str]) -> bool:
        # Without a podSelector, every pod of the chosen namespaces.
        return self.pod_selector is None or self.pod_selector.matches(pod_labels)


@dataclass(frozen=True)
class CIDRSet:
    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    def key(self) -> str:
        return f"cidr|{self.cidr}|" + ",".join(str(e) for e in self.excepts)

    def contains(self, ip: IPAddress) -> bool:
        if ip.version != self.cidr.version or ip not in self.cidr:
            return False
        return not any(ip in hole for hole in self.excepts)

    def __str__(self) -> str:
        holes = f" except {', '.join(str(e) for e in self.excepts)}" if self.excepts else ""
        return f"{self.cidr}{holes}"


@dataclass(frozen=True)
class NamedPortSet:
    """(address, protocol, port) of the pods in `peer` (every pod when None) that have
    a container port called `port_name` for `protocol`: egress named ports resolve
    against the destination pod, so the port depends on the peer."""

    peer: SelectorSet | CIDRSet | None
    port_name: str
    protocol: str

    def key(self) -> str:
        peer = "any" if self.peer is None else self.peer.key()
        return f"named|{self.port_name}/{self.protocol}|{peer}"

    def __str__(self) -> str:
        peer = "any pod" if self.peer is None else str(self.peer)
        return f"port {self.port_name}/{self.protocol} of {peer}"


PeerSet = SelectorSet | CIDRSet | NamedPortSet
Labels = tuple[tuple[str, str], ...]
IdentityKey = tuple[Labels, Labels]  # (namespace labels, pod labels), each sorted


def identity_key(namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> IdentityKey:
    return tuple(sorted(namespace_labels.items())), tuple(sorted(pod_labels.items()))


def selects_identity(peer: SelectorSet, key: IdentityKey) -> bool:
    """Whether pods with these labels, in a namespace with these labels, are in `peer`
    (the namespace's name is its kubernetes.io/metadata.name label)."""
    namespace_labels, pod_labels = dict(key[0]), dict(key[1])
    return peer.selects(namespace_labels.get(NAMESPACE_NAME_LABEL), namespace_labels, pod_labels)


NamedMember = tuple[IPAddress, str, int]


def set_id(peer_set: PeerSet) -> str:
    """A stable short name: a prefix by type and a hash of the definition."""
    prefix = {SelectorSet: "s", CIDRSet: "c", NamedPortSet: "n"}[type(peer_set)]
    return f"{prefix}-{hashlib.sha256(peer_set.key().encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class Origin:
    policy: str
    direction: str
    index: int

    def __str__(self) -> str:
        return f"{self.policy} spec.{self.direction.lower()}[{self.index}]"


@dataclass(frozen=True)
class PeerPortClause:
    """Admits a peer in any of `peers` (None: any peer) on any of `ports` (None: any
    port and protocol)."""

    peers: tuple[str, ...] | None
    ports: tuple[PortRange, ...] | None
    origin: Origin


@dataclass(frozen=True)
class NamedPortClause:
    """Admits (peer address, protocol, port) when it is a member of `members`."""

    members: str
    origin: Origin


Clause = PeerPortClause | NamedPortClause


@dataclass(frozen=True)
class DirectionRules:
    """An isolated direction: the isolating policies and every clause that admits."""

    policies: tuple[str, ...]
    clauses: tuple[Clause, ...]


@dataclass(frozen=True)
class LocalEndpoint:
    pod: str
    ips: tuple[IPAddress, ...]
    ingress: DirectionRules | None
    egress: DirectionRules | None
    # Audit mode (picket.io/enforcement: audit on the namespace): what the rules would
    # deny passes and is reported as a would-be drop.
    audit: bool = False


def sets_used(endpoint: LocalEndpoint) -> set[str]:
    """Every set the endpoint's clauses name: peer sets and named-port member sets."""
    used: set[str] = set()
    for rules in (endpoint.ingress, endpoint.egress):
        for clause in rules.clauses if rules else ():
            if isinstance(clause, NamedPortClause):
                used.add(clause.members)
            elif clause.peers:
                used.update(clause.peers)
    return used


@dataclass(frozen=True)
class TransitEndpoint(LocalEndpoint):
    """A pod on another node that this node may DNAT outside traffic to (a backend of a
    Service balanced across nodes: agent/model/services.py). Only its ingress is
    judged here (egress None), on the client's own address, and only for connections
    this node DNATed; traffic from `node_ips`, the pod's own node, is always allowed."""

    node_ips: tuple[IPAddress, ...] = ()


@dataclass(frozen=True)
class NodeIR:
    node: str
    node_ips: tuple[IPAddress, ...]
    endpoints: Mapping[str, LocalEndpoint] = field(default_factory=dict)
    sets: Mapping[str, PeerSet] = field(default_factory=dict)
    # Members of selector sets (addresses) and named-port sets ((address, proto, port)).
    # CIDR sets are defined by their prefixes and have no member list.
    members: Mapping[str, frozenset] = field(default_factory=dict)
    # Every policed pod address in the cluster and what an identity-based datapath keys
    # on: the pod's (namespace labels, pod labels). Pods with equal keys share an
    # identity; the iptables backend does not need this.
    addresses: Mapping[IPAddress, IdentityKey] = field(default_factory=dict)
    # Pods of other nodes whose ingress this node judges for the connections it DNATs
    # to them (outside clients of NodePort/LoadBalancer Services, externalTrafficPolicy
    # Cluster), by namespace/name; their clauses' sets are in `sets` and `members`.
    transit: Mapping[str, TransitEndpoint] = field(default_factory=dict)
    # The other nodes' addresses: a connection another node DNATed and masqueraded to
    # its own address reaches this node from one of them, and is trusted as judged
    # there only with the transit mark (agent/dataplane/transit_mark.py).
    peer_node_ips: tuple[IPAddress, ...] = ()
    # This node's pod address ranges (its Node's spec.podCIDRs, or --pod-cidr): traffic
    # to or from an address in them that no programmed local pod holds is dropped, so
    # that a pod is closed from its first packet until its policy is programmed.
    pod_cidrs: tuple[IPNetwork, ...] = ()
