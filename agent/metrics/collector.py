"""Every Prometheus metric the agent exports (names and meanings: docs/metrics.md).

Two kinds: what the agent observes as it happens (sync durations, programming latency,
errors, watch restarts) is recorded into prometheus-client metrics by the SyncObserver
calls; what the agent's state holds (gauges) is read when Prometheus scrapes, by a
custom collector; what the kernel holds (drop counters, map sizes, the conntrack count)
comes from the last reading of agent/metrics/readings.py, taken on a timer, so that no
scrape runs a command or walks a map.
Label values are bounded: directions, reasons, namespaces, families, kinds, map names;
never pod names or addresses. A count that differs by address family has a `family`
label, "ipv4" or "ipv6" (Cilium's values for its `family` label); the layers below
hand over the IP version, and only here does it become a label value."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.dataplane.backend import Backend
from agent.droplog.service import DropLog
from agent.loop.agent import Agent
from agent.metrics.readings import DEFAULT_INTERVAL, DataplaneReader

log = logging.getLogger("picket.metrics")

STAGES = ("compile", "program", "conntrack")
RESOURCES = {
    "Namespace": "namespaces",
    "Pod": "pods",
    "NetworkPolicy": "networkpolicies",
    "Node": "nodes",
    "Service": "services",
    "EndpointSlice": "endpointslices",
}
FAMILY_LABELS = {4: "ipv4", 6: "ipv6"}  # IP version -> the `family` label's value
# Seconds: a relabel at 10,000 pods programs in tens of milliseconds, a full sync of a
# large cluster in a second or two; the tail buckets catch a struggling agent.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AgentMetrics:
    """The agent's registry. Implements agent.loop.agent.SyncObserver."""

    def __init__(self, backend: Backend, version: str, interval: float = DEFAULT_INTERVAL) -> None:
        disable_created_metrics()  # `_created` series double the output for no question
        self.registry = CollectorRegistry()
        self.backend = backend
        self.readings = DataplaneReader(backend, interval)
        self.agent: Agent | None = None
        self.droplog: DropLog | None = None
        r = self.registry
        self.sync_duration = Histogram(
            "picket_sync_duration_seconds",
            "Time to compile and program one sync, by kind (full, incremental).",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.programming_latency = Histogram(
            "picket_programming_latency_seconds",
            "From the first API event a sync answers to the dataplane being updated.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sync_errors = Counter(
            "picket_sync_errors", "Failed syncs, by the stage that failed.", ["stage"], registry=r
        )
        self.watch_restarts = Counter(
            "picket_watch_restarts",
            "Watches lost and re-listed (410 Gone, API errors), by resource.",
            ["resource"],
            registry=r,
        )
        self.last_sync = Gauge(
            "picket_last_sync_timestamp_seconds",
            "Unix time of the last successful sync (0: none yet).",
            registry=r,
        )
        build = Gauge(
            "picket_build_info",
            "Always 1; the agent's version and dataplane backend as labels.",
            ["version", "backend"],
            registry=r,
        )
        build.labels(version, backend.name).set(1)
        for kind in ("full", "incremental"):
            self.sync_duration.labels(kind)
        for stage in STAGES:
            self.sync_errors.labels(stage)
        for resource in RESOURCES.values():
            self.watch_restarts.labels(resource)
        ProcessCollector(registry=r)  # what the agent itself costs: CPU, memory, fds
        r.register(_StateCollector(self))

    def attach(self, agent: Agent, droplog: DropLog | None) -> None:
        self.agent, self.droplog = agent, droplog

    # --- SyncObserver -----------------------------------------------------------------

    def synced(self, kind: str, seconds: float, latency: float | None) -> None:
        self.sync_duration.labels(kind).observe(seconds)
        if latency is not None:
            self.programming_latency.observe(latency)
        self.last_sync.set(time.time())

    def failed(self, stage: str) -> None:
        self.sync_errors.labels(stage).inc()

    def watch_restarted(self, kind: str) -> None:
        self.watch_restarts.labels(RESOURCES.get(kind, kind.lower())).inc()


class _StateCollector:
    """Read at scrape time: the agent's state, and the dataplane's last reading. A part
    that fails is left out of that scrape and logged; the rest is still served."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # unchecked: what exists depends on the backend and the drop log

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        for part in (self._state, self._datapath, self._maps, self._capacity, self._droplog):
            try:
                yield from part(m)
            except Exception as exc:  # a scrape must never take the agent down
                log.warning("metrics: %s failed: %s", part.__name__.strip("_"), exc)

    @staticmethod
    def _state(m: AgentMetrics) -> Iterator[Metric]:
        if m.agent is None:
            return
        view = m.agent.view()
        yield _gauge("picket_policies", "NetworkPolicies the agent knows.", view.policies)
        yield _gauge(
            "picket_local_endpoints",
            "Pods on this node the agent enforces for.",
            view.local_endpoints,
        )
        yield _by_family(
            "picket_peer_set_members",
            "Addresses in all peer sets programmed on this node, by address family.",
            view.peer_set_members,
        )
        invalid = GaugeMetricFamily(
            "picket_invalid_objects",
            "Objects the model refuses, enforced fail-closed, by kind.",
            labels=["kind"],
        )
        for kind in RESOURCES:
            invalid.add_metric([kind], view.invalid_objects.get(kind, 0))
        yield invalid

    @staticmethod
    def _datapath(m: AgentMetrics) -> Iterator[Metric]:
        reading = m.readings.latest
        if reading is None:
            return
        yield _gauge(
            "picket_dataplane_reading_timestamp_seconds",
            "Unix time of the dataplane reading the counters and map sizes come from "
            "(taken every --metrics-read-interval seconds, not per scrape).",
            reading.at,
        )
        counters = reading.counters
        yield _counters(
            "picket_dropped_packets",
            "Packets the datapath dropped, by direction, reason and namespace of the pod "
            "whose policy dropped them ('' when none: invalid state), and address family.",
            ["direction", "reason", "namespace"],
            counters.dropped,
        )
        yield _counters(
            "picket_would_drop_packets",
            "Packets audit mode let through that policy would have dropped, by "
            "direction, namespace and address family.",
            ["direction", "namespace"],
            counters.would_drop,
        )
        if counters.allowed is not None:
            yield _counters(
                "picket_allowed_packets",
                "Packets the datapath let through, by direction and address family.",
                ["direction"],
                counters.allowed,
            )

    @staticmethod
    def _capacity(m: AgentMetrics) -> Iterator[Metric]:
        """From the last plan (no kernel read): the tables it did not fit."""
        overflows = m.backend.capacity_exceeded()
        exceeded = GaugeMetricFamily(
            "picket_dataplane_capacity_exceeded",
            "1 for each map or set the last plan did not fit: the endpoints whose entries "
            "did not fit deny everything until it does.",
            labels=["map"],
        )
        for overflow in overflows:
            exceeded.add_metric([overflow.table], 1)
        yield exceeded
        yield _gauge(
            "picket_dataplane_capacity_denied_endpoints",
            "Endpoints denied everything because their entries did not fit.",
            len({ref for overflow in overflows for ref in overflow.endpoints}),
        )

    @staticmethod
    def _maps(m: AgentMetrics) -> Iterator[Metric]:
        reading = m.readings.latest
        if reading is None:
            return
        restored = CounterMetricFamily(
            "picket_jump_restored",
            "Times Picket's jump into its chain was found displaced or removed and put "
            "back first (the log names what was in front).",
        )
        restored.add_metric([], reading.jumps_restored)
        yield restored
        connections = reading.conntrack_entries
        if connections is not None:
            yield _gauge(
                "picket_conntrack_entries",
                "Connections in the kernel's conntrack table of the node's namespace.",
                connections,
            )
        if m.backend.name == "iptables":
            yield _by_family(
                "picket_iptables_rules",
                "Rules in Picket's chains, by address family (iptables, ip6tables).",
                reading.rules,
            )
            return
        sizes = reading.map_entries
        entries = GaugeMetricFamily(
            "picket_bpf_map_entries", "Entries in each eBPF map.", labels=["map"]
        )
        for name, value in sorted(sizes.items()):
            entries.add_metric([name], value)
        yield entries

    @staticmethod
    def _droplog(m: AgentMetrics) -> Iterator[Metric]:
        droplog = m.droplog
        yield _counters(
            "picket_dropped_connections",
            "Denied connections (a flow's repeats within the drop log window count once), "
            "by direction, namespace and address family; counted by the drop log before "
            "its budget.",
            ["direction", "namespace"],
            dict(droplog.connections) if droplog is not None else {},
        )
        yield _counter(
            "picket_droplog_events_lost",
            "Denied-packet events the capture lost (netlink overflow, sequence gaps, eBPF "
            "events held back by the kernel's rate limit or a full ring).",
            droplog.capture.lost() if droplog is not None else 0,
        )
        yield _counter(
            "picket_droplog_suppressed",
            "Connections the drop log's budget kept out of the journal.",
            droplog.folder.suppressed if droplog is not None else 0,
        )
        yield _counter(
            "picket_droplog_records",
            "Connection records written to the journal.",
            droplog.stats.records if droplog is not None else 0,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _counters(
    name: str, documentation: str, labels: list[str], values: Mapping[tuple, int]
) -> CounterMetricFamily:
    """A counter per label values; each key is those values and then its IP version."""
    counter = CounterMetricFamily(name, documentation, labels=[*labels, "family"])
    for (*rest, family), value in sorted(values.items()):
        counter.add_metric([*rest, FAMILY_LABELS[family]], value)
    return counter


def _by_family(name: str, documentation: str, values: Mapping[int, int]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=["family"])
    for family, value in sorted(values.items()):
        gauge.add_metric([FAMILY_LABELS[family]], value)
    return gauge
