"""The agent loop: informers -> snapshot -> compile for this node -> diff -> backend,
then remove the conntrack entries of connections the change forbids.

Shutting down leaves the rules in place (fail closed: enforcement must not stop
because the agent does); `picket agent --cleanup` removes them."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from agent.compiler.compile import compile_node
from agent.compiler.diff import diff_ir
from agent.compiler.ir import NodeIR
from agent.dataplane import conntrack
from agent.dataplane.iptables import IptablesBackend, node_addresses
from agent.snapshot import Snapshotter
from agent.sync import SyncRunner
from agent.watch import Informer, Kind

log = logging.getLogger("picket.agent")


@dataclass
class SyncStats:
    full: int = 0
    incremental: int = 0
    last_duration: float = 0.0
    latencies: list[float] = field(default_factory=list)  # request -> programmed, seconds
    conntrack_removed: int = 0


class Agent:
    def __init__(
        self, node: str, backend: IptablesBackend, kinds: list[Kind], resync_period: float = 30.0
    ) -> None:
        self.node = node
        self.backend = backend
        self.runner = SyncRunner(self.sync, resync_period=resync_period)
        self.informers = [Informer(k, self.runner.request) for k in kinds]
        self.snapshots = Snapshotter()
        self.ir: NodeIR | None = None
        self.stats = SyncStats()
        self.ready = threading.Event()

    def sync(self, full: bool, requested: float | None) -> None:
        start = time.monotonic()
        state = self.snapshots.state({i.kind.name: i.objects() for i in self.informers})
        ir = compile_node(state, self.node)
        change = diff_ir(self.ir, ir)
        if change.empty and not full:
            return
        self.backend.apply(ir, full)
        if self.ir is not None and not change.empty:
            self.stats.conntrack_removed += conntrack.remove_denied(ir, node_addresses())
        self.ir = ir
        done = time.monotonic()
        self.stats.last_duration = done - start
        if full:
            self.stats.full += 1
        else:
            self.stats.incremental += 1
        if requested is not None and not change.empty:
            self.stats.latencies.append(done - requested)
            del self.stats.latencies[:-1000]
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
