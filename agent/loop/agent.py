"""The agent loop: informers -> changed objects -> compile for this node (incrementally;
from scratch on a full sync) -> diff -> backend, then remove the conntrack entries of
connections a narrowing change forbids.

Shutting down leaves the rules in place (fail closed: enforcement must not stop
because the agent does); `picket agent --cleanup` removes them.

One event's path, hop by hop, is in docs/agent.md ("Following one relabel"): each hop
here names the next in a comment."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from agent.compiler.diff import diff_ir
from agent.compiler.incremental import IncrementalCompiler
from agent.compiler.ir import NodeIR
from agent.compiler.narrowing import narrowed_addresses, narrows
from agent.dataplane.backend import Backend
from agent.dataplane.ipset_render import family_count
from agent.loop.snapshot import Snapshotter
from agent.loop.sync import SyncRunner
from agent.loop.watch import Informer, Kind
from agent.model.annotations import problems as annotation_problems
from agent.model.live import LiveState
from agent.model.objects import IPAddress, IPNetwork, Namespace
from agent.model.view import released_addresses

log = logging.getLogger("picket.agent")
T = TypeVar("T")


class SyncObserver(Protocol):
    """What the agent reports as it works (the metrics implement it)."""

    def synced(self, kind: str, seconds: float, latency: float | None) -> None:
        """A sync of `kind` (full, incremental) took `seconds`; `latency` is from the
        first API event it answers to the dataplane being updated (None if none)."""

    def failed(self, stage: str) -> None:
        """A sync failed in `stage` (compile, program, conntrack); it will be retried."""

    def watch_restarted(self, kind: str) -> None:
        """An informer of `kind` lost its watch and lists again."""


class _Unobserved:
    def synced(self, kind: str, seconds: float, latency: float | None) -> None:
        pass

    def failed(self, stage: str) -> None:
        pass

    def watch_restarted(self, kind: str) -> None:
        pass


@dataclass(frozen=True)
class AgentView:
    """What the agent holds, counted (for gauges)."""

    policies: int
    local_endpoints: int
    peer_set_members: dict[int, int]  # address family (4, 6) -> addresses in peer sets
    invalid_objects: dict[str, int]


class Agent:
    def __init__(
        self,
        node: str,
        backend: Backend,
        kinds: list[Kind],
        resync_period: float = 30.0,
        observer: SyncObserver | None = None,
        pod_cidrs: tuple[IPNetwork, ...] = (),
    ) -> None:
        self.node = node
        # --pod-cidr: the node's pod ranges when its Node object has none (NodeIR.pod_cidrs)
        self.pod_cidrs = pod_cidrs
        self.backend = backend
        self.observer = observer or _Unobserved()
        # An informer's change requests a sync; the runner's thread then calls self.sync.
        self.runner = SyncRunner(self.sync, resync_period=resync_period)
        self.informers = [
            Informer(k, self.runner.request, on_restart=self.observer.watch_restarted)
            for k in kinds
        ]
        self.snapshots = Snapshotter()
        self.compiler = IncrementalCompiler(node)
        self.live: LiveState | None = None
        self.ir: NodeIR | None = None
        # The IR being programmed: drops while the backend applies it are the new rules'
        # (the drop log describes them with it), and it is not yet what is programmed.
        self._programming: NodeIR | None = None
        self.ready = threading.Event()
        self.lock = threading.Lock()
        self._warned: set[str] = set()
        self._members: tuple[NodeIR | None, dict[int, int]] | None = None  # view's, per IR

    def _compile(self, full: bool) -> tuple[NodeIR, frozenset[IPAddress]]:
        """The IR, and the addresses pods anywhere in the cluster released since the
        last sync (this node's conntrack holds its pods' connections with remote pods
        too)."""
        if full or self.live is None:
            before = self.live
            ir = self._compile_all()
            if before is None:
                return ir, frozenset()
            pairs = ((pod, self.live.pods.get(ref)) for ref, pod in before.pods.items())
            return ir, released_addresses(pairs)
        with self.lock:  # readers on other threads (read_cache, view) see whole changes
            for informer in self.informers:
                self._take_pending(informer)
        gone = released_addresses(self.live.changes.pods)
        # next: IncrementalCompiler.update (agent/compiler/incremental.py) compiles what
        # the live state recorded as changed
        return self.compiler.update(self.live), gone

    def _with_pod_cidrs(self, ir: NodeIR) -> NodeIR:
        """The IR with --pod-cidr's ranges, if given; without any, a warning (once): the
        backends cannot keep a pod closed until it is programmed."""
        if self.pod_cidrs:
            return replace(ir, pod_cidrs=self.pod_cidrs)
        if not ir.pod_cidrs and "no pod CIDR" not in self._warned:
            self._warned.add("no pod CIDR")
            log.warning(
                "node %s: no pod CIDR (its Node has no spec.podCIDRs, and no --pod-cidr): "
                "a new pod is open until its policy is programmed",
                self.node,
            )
        return ir

    def _compile_all(self) -> NodeIR:
        """From scratch, from every informer's objects (start, periodic resync)."""
        for informer in self.informers:
            informer.take_pending()  # a rebuild covers what changed so far
        objects = {i.kind.name: i.objects() for i in self.informers}
        with self.lock:  # readers on other threads (read_cache, view)
            state = self.snapshots.state(objects)
            self.live = LiveState.from_state(state)
        for namespace in state.namespaces.values():
            self._warn_annotations(namespace)
        return self.compiler.rebuild(self.live)

    def _take_pending(self, informer: Informer) -> None:
        """An informer's pending changes into the live state, each version parsed once."""
        kind = informer.kind.name
        for key, raw in informer.take_pending().items():
            # Snapshotter.parse (agent/loop/snapshot.py): the raw dict as a model object
            obj = self.snapshots.parse(kind, raw) if raw is not None else None
            if obj is None:
                self.snapshots.forget(kind, key)
                self.live.remove(kind, key.lstrip("/"))
            else:
                self._warn_annotations(obj)
                self.live.put(obj)  # next: LiveState.put (agent/model/live.py) records it

    def _warn_annotations(self, obj: object) -> None:
        """Once per problem, not at every full resync."""
        if isinstance(obj, Namespace):
            for problem in annotation_problems(obj):
                if problem not in self._warned:
                    self._warned.add(problem)
                    log.warning("%s", problem)

    def read_cache(self, read: Callable[[LiveState | None, NodeIR | None], T]) -> T:
        """`read(live state, node IR)` under the lock a sync holds while it changes them,
        for readers on other threads (the wiring in agent/commands/agent_cmd.py hands
        this to them)."""
        with self.lock:
            return read(self.live, self._programming or self.ir)

    def view(self) -> AgentView:
        with self.lock:
            ir, live = self.ir, self.live
            policies = len(live.policies) if live is not None else 0
            invalid = self.snapshots.invalid
        return AgentView(
            policies=policies,
            local_endpoints=len(ir.endpoints) if ir is not None else 0,
            peer_set_members=self._members_by_family(ir),
            invalid_objects=invalid,
        )

    def _members_by_family(self, ir: NodeIR | None) -> dict[int, int]:
        """Peer set members per family: a walk of every member, so once per IR (an IR
        is immutable; the metrics ask at every scrape), and outside the lock."""
        if self._members is None or self._members[0] is not ir:
            sets = ir.members.values() if ir is not None else ()
            self._members = (ir, {f: sum(family_count(m, f) for m in sets) for f in (4, 6)})
        return self._members[1]

    @contextmanager
    def _stage(self, stage: str) -> Iterator[None]:
        try:
            yield
        except Exception:
            self.observer.failed(stage)
            raise

    def sync(self, full: bool, requested: float | None) -> None:
        start = time.monotonic()
        with self._stage("compile"):
            # next: _compile, which takes the pending changes; `gone`: addresses whose
            # pod went, whose connections a new pod there must not inherit
            ir, gone = self._compile(full)
            ir = self._with_pod_cidrs(ir)
            change = diff_ir(self.ir, ir)  # agent/compiler/diff.py: against what is programmed
        if change.empty and not full and not gone:
            return
        with self.lock:
            self._programming = ir
        try:
            with self._stage("program"):
                # next: IptablesBackend.apply (agent/dataplane/iptables.py) or
                # EbpfBackend.apply (agent/dataplane/ebpf/backend.py): the kernel writes
                self.backend.apply(ir, change, full)
            # The first sync also removes what policy denies: connections from before
            # the agent started (a new node's, or those a policy change forbade while it
            # was down) would otherwise live on as established.
            if self.ir is None or narrows(change) or gone:
                # Only the entries of the addresses the change can forbid connections
                # of are read (agent/compiler/narrowing.py); all on the first sync.
                touching = None if self.ir is None else narrowed_addresses(self.ir, change)
                with self._stage("conntrack"):
                    removed = self.backend.remove_denied(ir, gone, touching)
                if removed:
                    log.info("removed %d connections the change forbids", removed)
            with self.lock:
                self.ir = ir
        finally:
            with self.lock:
                self._programming = None
        done = time.monotonic()
        latency = done - requested if requested is not None and not change.empty else None
        self.observer.synced("full" if full else "incremental", done - start, latency)
        self.ready.set()
        log.info(
            "%s sync: %d endpoints, %d sets, %d rules (%.1f ms)",
            "full" if full else "incremental",
            len(ir.endpoints),
            len(ir.sets),
            self.backend.rule_count(),
            1000 * (done - start),
        )

    def run(self, stop: threading.Event) -> None:
        for informer in self.informers:
            informer.start()
        # Programming before every kind is listed could remove rules for policies not
        # yet seen: wait until all are.
        while not all(i.synced.wait(1) for i in self.informers):
            if stop.is_set():
                return
            log.info("waiting for the first list of every kind")
        worker = threading.Thread(target=self.runner.run, name="sync", daemon=True)
        worker.start()
        stop.wait()
        self.runner.stop()
        worker.join(5)
