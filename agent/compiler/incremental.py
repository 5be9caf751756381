"""Compiling a change instead of the whole cluster: the work a relabel costs is the
pod's own membership in each peer set, not a pass over every pod.

`rebuild` compiles everything (as compile_node does); `update` takes a LiveState's
Changes and recomputes only: the local endpoints in namespaces whose policies changed
and the local pods that changed; the members of new peer sets; the members of
namespace-selector sets when namespace labels changed; and, for every other set, the
contribution of each changed pod (members.pod_members, as the full compile counts it).
Transit endpoints: after a change to Services, EndpointSlices, pods, nodes or policies
the transit candidates are listed again (the backends of Services balanced across
nodes, not every pod); rules are recomputed for new candidates, changed pods and
namespaces whose policies changed, and node addresses for nodes whose pods changed.
Members are reference-counted (a pod address can be
contributed twice while a pod is replaced). A differential test holds update() to
compile_node on random sequences of changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

from agent.compiler.compile import (
    node_addresses,
    node_pod_cidrs,
    own_node_addresses,
    peer_node_addresses,
    pod_addresses,
    transit_candidates,
)
from agent.compiler.ir import (
    CIDRSet,
    IdentityKey,
    LocalEndpoint,
    NamedPortClause,
    NamedPortSet,
    NodeIR,
    PeerPortClause,
    PeerSet,
    SelectorSet,
    TransitEndpoint,
    identity_key,
)
from agent.compiler.members import pod_members, set_members
from agent.compiler.rules import PeerSets, endpoint_rules, transit_rules
from agent.model.live import Changes
from agent.model.objects import IPAddress, IPNetwork, Pod
from agent.model.view import ClusterView, local_endpoints


class ChangingView(ClusterView, Protocol):
    """A view that also says what changed since it was last asked (LiveState)."""

    def take_changes(self) -> Changes: ...


def _referenced(endpoints: Iterable[LocalEndpoint]) -> set[str]:
    found: set[str] = set()
    for endpoint in endpoints:
        for rules in (endpoint.ingress, endpoint.egress):
            for clause in rules.clauses if rules else ():
                if isinstance(clause, NamedPortClause):
                    found.add(clause.members)
                elif isinstance(clause, PeerPortClause) and clause.peers:
                    found.update(clause.peers)
    return found


class IncrementalCompiler:
    def __init__(self, node: str) -> None:
        self.node = node
        self._endpoints: dict[str, LocalEndpoint] = {}
        self._sets: dict[str, PeerSet] = {}
        self._counts: dict[str, Counter] = {}
        self._frozen: dict[str, frozenset] = {}
        self._node_ips: tuple = ()
        self._addresses: dict[IPAddress, IdentityKey] = {}
        # Transit candidates by ref: their endpoint, or None while nothing isolates them.
        self._candidates: dict[str, TransitEndpoint | None] = {}
        self._transit_node_ips: dict[str | None, tuple[IPAddress, ...]] = {}
        self._peer_node_ips: tuple[IPAddress, ...] = ()
        self._pod_cidrs: tuple[IPNetwork, ...] = ()

    def rebuild(self, state: ChangingView) -> NodeIR:
        self._endpoints = {}
        self._sets, self._counts, self._frozen = {}, {}, {}
        self._candidates, self._transit_node_ips = {}, {}
        state.take_changes()
        self._recompute_endpoints(state, [p.ref for p in local_endpoints(state, self.node)])
        self._update_transit(state, Changes(services=True))
        self._sync_sets(state, full=set(self._referenced()))
        self._node_ips = node_addresses(state, self.node)
        self._peer_node_ips = peer_node_addresses(state, self.node)
        self._pod_cidrs = node_pod_cidrs(state, self.node)
        self._addresses = pod_addresses(state)
        return self.ir()

    def update(self, state: ChangingView) -> NodeIR:
        changes = state.take_changes()
        if changes.empty:
            return self.ir()
        refs = {ref for ref in self._endpoints if ref.split("/", 1)[0] in changes.policy_namespaces}
        refs |= {
            p.ref
            for p in local_endpoints(state, self.node)
            if p.namespace in changes.policy_namespaces
        }
        refs |= {
            p.ref
            for pair in changes.pods
            for p in pair
            if p is not None and p.node_name == self.node
        }
        self._recompute_endpoints(state, sorted(refs))
        self._update_transit(state, changes)
        full = (
            {sid for sid, s in self._sets.items() if _namespace_dependent(s)}
            if (changes.namespaces)
            else set()
        )
        self._sync_sets(state, full=full, changes=changes)
        self._node_ips = node_addresses(state, self.node)
        if changes.nodes:
            self._peer_node_ips = peer_node_addresses(state, self.node)
        self._pod_cidrs = node_pod_cidrs(state, self.node)
        self._update_addresses(state, changes)
        return self.ir()

    def _update_addresses(self, state: ClusterView, changes: Changes) -> None:
        touched = {ip for pair in changes.pods for p in pair if p is not None for ip in p.ips}
        touched |= {
            ip for ns in changes.namespaces for p in state.endpoint_pods_in(ns) for ip in p.ips
        }
        if not touched:
            return
        addresses = dict(self._addresses)  # a new mapping: the diff compares by identity
        for ip in touched:
            pod = state.endpoint_pod_with_ip(ip)
            if pod is None:
                addresses.pop(ip, None)
            else:
                addresses[ip] = identity_key(state.namespace_labels(pod.namespace), pod.labels)
        self._addresses = addresses

    def _recompute_endpoints(self, state: ClusterView, refs: list[str]) -> None:
        registry = PeerSets()
        local = {p.ref: p for p in local_endpoints(state, self.node)}
        for ref in refs:
            pod = local.get(ref)
            if pod is None:
                self._endpoints.pop(ref, None)
            else:
                self._endpoints[ref] = endpoint_rules(state, pod, registry)
        for sid, peer_set in registry.sets.items():
            self._sets.setdefault(sid, peer_set)

    def _update_transit(self, state: ClusterView, changes: Changes) -> None:
        """The transit candidates listed again, each endpoint kept unless what it is
        built from changed (see the module docstring)."""
        if not (changes.services or changes.nodes or changes.pods or changes.policy_namespaces):
            return
        changed = [p for pair in changes.pods for p in pair if p is not None]
        if changes.nodes:
            self._transit_node_ips = {}
        for pod in changed:  # its host IP is one of its node's addresses
            self._transit_node_ips.pop(pod.node_name, None)
        changed_refs = {p.ref for p in changed}
        registry = PeerSets()
        candidates: dict[str, TransitEndpoint | None] = {}
        for pod in transit_candidates(state, self.node):
            if pod.node_name not in self._transit_node_ips:
                self._transit_node_ips[pod.node_name] = own_node_addresses(state, pod)
            node_ips = self._transit_node_ips[pod.node_name]
            old = self._candidates.get(pod.ref)
            if (
                pod.ref not in self._candidates
                or pod.ref in changed_refs
                or pod.namespace in changes.policy_namespaces
            ):
                candidates[pod.ref] = transit_rules(state, pod, registry, node_ips)
            elif old is not None and old.node_ips != node_ips:
                candidates[pod.ref] = replace(old, node_ips=node_ips)
            else:
                candidates[pod.ref] = old
        self._candidates = candidates
        for sid, peer_set in registry.sets.items():
            self._sets.setdefault(sid, peer_set)

    def _transit(self) -> dict[str, TransitEndpoint]:
        return {r: e for r, e in sorted(self._candidates.items()) if e is not None}

    def _referenced(self) -> set[str]:
        return _referenced([*self._endpoints.values(), *self._transit().values()])

    def _sync_sets(
        self, state: ClusterView, full: set[str], changes: Changes | None = None
    ) -> None:
        wanted = self._referenced()
        for sid in list(self._sets):
            if sid not in wanted:
                for index in (self._sets, self._counts, self._frozen):
                    index.pop(sid, None)
        for sid in wanted:
            if sid not in self._counts or sid in full:
                self._counts[sid] = Counter(set_members(state, self._sets[sid]))
                self._frozen.pop(sid, None)
            elif changes is not None:
                self._apply_pod_changes(state, sid, changes.pods)

    def _apply_pod_changes(
        self, state: ClusterView, sid: str, pods: list[tuple[Pod | None, Pod | None]]
    ) -> None:
        counts, peer_set = self._counts[sid], self._sets[sid]
        changed = False
        for old, new in pods:
            for member in pod_members(state, peer_set, old):
                counts[member] -= 1
                if counts[member] <= 0:
                    del counts[member]
                changed = True
            for member in pod_members(state, peer_set, new):
                counts[member] += 1
                changed = True
        if changed:
            self._frozen.pop(sid, None)

    def ir(self) -> NodeIR:
        members = {}
        for sid, peer_set in self._sets.items():
            if isinstance(peer_set, CIDRSet):
                continue
            if sid not in self._frozen:
                self._frozen[sid] = frozenset(self._counts[sid])
            members[sid] = self._frozen[sid]
        endpoints = {ref: self._endpoints[ref] for ref in sorted(self._endpoints)}
        return NodeIR(
            self.node,
            self._node_ips,
            endpoints,
            dict(sorted(self._sets.items())),
            members,
            self._addresses,
            self._transit(),
            self._peer_node_ips,
            self._pod_cidrs,
        )


def _namespace_dependent(peer_set: PeerSet) -> bool:
    """Sets whose members depend on namespace labels: a namespace selector somewhere."""
    if isinstance(peer_set, NamedPortSet):
        peer_set = peer_set.peer  # type: ignore[assignment]
    return isinstance(peer_set, SelectorSet) and peer_set.namespace_selector is not None
