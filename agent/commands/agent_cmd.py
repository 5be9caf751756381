"""`picket agent`: the node agent (its flags mirror the DaemonSet's args)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import fields
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import TYPE_CHECKING

from agent.dataplane import transit_mark
from agent.dataplane.backend import Backend
from agent.dataplane.ipset_render import DEFAULT_MAX_SET_ELEMENTS

if TYPE_CHECKING:
    from agent.dataplane.ebpf.backend import EbpfBackend
    from agent.droplog.capture import NflogSource, RingSource
    from agent.droplog.service import DropLog
    from agent.loop.agent import Agent
    from agent.metrics.collector import AgentMetrics
    from agent.metrics.server import MetricsServer

BACKENDS = ("iptables", "ebpf")


def _ebpf_flags(p: argparse.ArgumentParser) -> None:
    from agent.dataplane.ebpf.settings import EbpfSettings

    group = p.add_argument_group("eBPF backend (map sizes, drop events)")
    for f in fields(EbpfSettings):
        group.add_argument(
            f"--bpf-{f.name.replace('_', '-')}",
            dest=f"bpf_{f.name}",
            type=int,
            default=f.default,
            help=f"default {f.default}",
        )
    group.add_argument(
        "--bpf-pin-root",
        type=Path,
        default=Path("/sys/fs/bpf/picket"),
        help="where maps are pinned, per node (default /sys/fs/bpf/picket)",
    )


def _drop_log_flags(p: argparse.ArgumentParser) -> None:
    from agent.droplog.service import DropLogSettings

    defaults = DropLogSettings()
    group = p.add_argument_group("drop log (journald; JSON lines on stderr without it)")
    group.add_argument("--drop-log", choices=("on", "off"), default="on")
    group.add_argument(
        "--drop-log-rate",
        type=float,
        default=defaults.rate,
        help=f"connection records per second on this node (default {defaults.rate:g})",
    )
    group.add_argument(
        "--drop-log-burst",
        type=float,
        default=defaults.burst,
        help=f"records at once before the rate applies (default {defaults.burst:g})",
    )
    group.add_argument(
        "--drop-log-window",
        type=float,
        default=defaults.window,
        help="seconds a record folds in repeats of its connection before it is written "
        f"(default {defaults.window:g})",
    )
    group.add_argument(
        "--drop-log-namespace-rate",
        type=float,
        default=defaults.namespace_rate,
        help="records per second of each namespace, which the records of connections its "
        "pods send (or, from outside, that its pods receive) cost, within the node's "
        f"(default {defaults.namespace_rate:g})",
    )
    group.add_argument(
        "--drop-log-namespace-burst",
        type=float,
        default=defaults.namespace_burst,
        help=f"each namespace's records at once (default {defaults.namespace_burst:g})",
    )


def capture_source(args: argparse.Namespace, backend: Backend) -> NflogSource | RingSource:
    """What the drop log reads, from what the backend exposes: the drop log imports
    neither backend, so this is where their NFLOG prefixes and event layout meet it."""
    from agent.droplog.capture import NflogSource
    from agent.droplog.events import DROP, WOULD_DROP

    if args.backend == "ebpf":
        return ring_source(backend)
    from agent.dataplane import source_check, unprogrammed
    from agent.dataplane.iptables_render import invalid_prefix, nflog_prefix
    from agent.droplog.events import INVALID, SPOOFED, UNPROGRAMMED

    prefixes = {
        nflog_prefix(direction, audit): (direction.lower(), WOULD_DROP if audit else DROP)
        for audit in (False, True)
        for direction in ("Ingress", "Egress")
    }
    others = {source_check.NFLOG_PREFIX: ("egress", SPOOFED)}
    others |= {invalid_prefix(d): (d.lower(), INVALID) for d in ("Ingress", "Egress")}
    others |= {unprogrammed.nflog_prefix(d): (d, UNPROGRAMMED) for d in ("ingress", "egress")}
    return NflogSource(args.nflog_group, prefixes, others)


def ring_source(backend: EbpfBackend) -> RingSource:
    """The eBPF backend's `picket_drops` ring buffer, read with the layout a unit test
    holds to bpf/picket.h; policy denials, forged sources and untracked packets (no-SYN
    drops are not the drop log's)."""
    from agent.dataplane import ebpf_layout as layout
    from agent.droplog.capture import RingEventLayout, RingSource
    from agent.droplog.events import (
        DROP,
        FRAGMENT,
        INVALID,
        SPOOFED,
        UNPARSED,
        UNPROGRAMMED,
        WOULD_DROP,
    )

    verdicts = {layout.REASON_DROP_POLICY: DROP, layout.REASON_AUDIT_POLICY: WOULD_DROP}
    others = {
        layout.REASON_DROP_SPOOFED: SPOOFED,
        layout.REASON_DROP_INVALID: INVALID,
        layout.REASON_DROP_UNPARSED: UNPARSED,
        layout.REASON_DROP_FRAGMENT: FRAGMENT,
        layout.REASON_DROP_UNPROGRAMMED: UNPROGRAMMED,
    }
    return RingSource(
        open=backend.bpf["picket_drops"].open_ring_buffer,
        poll=backend.bpf.ring_buffer_poll,
        suppressed=lambda: backend.counters().get("event_suppressed", 0),
        layout=RingEventLayout(
            layout.DropEvent, verdicts, layout.DIR_EGRESS, layout.FAMILY_IPV4, others
        ),
    )


def start_drop_log(
    args: argparse.Namespace, backend: Backend, agent: Agent, stop: threading.Event
) -> tuple[threading.Thread, DropLog] | None:
    """The drop log runs beside enforcement: if it cannot start, enforcement goes on.
    It is handed its capture source and the agent, as the reader of its cache."""
    if args.drop_log == "off":
        return None
    from agent.dataplane.pod_interfaces import interface_owner
    from agent.droplog.capture import open_capture
    from agent.droplog.journal import RecordWriter
    from agent.droplog.service import DropLog, DropLogSettings

    try:
        capture = open_capture(capture_source(args, backend))
    except OSError as exc:
        logging.getLogger("picket.droplog").error("drop log not started: %s", exc)
        return None
    settings = DropLogSettings(
        args.drop_log_rate,
        args.drop_log_burst,
        args.drop_log_window,
        namespace_rate=args.drop_log_namespace_rate,
        namespace_burst=args.drop_log_namespace_burst,
    )
    droplog = DropLog(
        args.node, capture, agent, RecordWriter(), settings, interface_owner=interface_owner
    )
    thread = threading.Thread(target=droplog.run, args=(stop,), name="droplog", daemon=True)
    thread.start()
    return thread, droplog


def metrics_server(args: argparse.Namespace, metrics: AgentMetrics, agent: Agent) -> MetricsServer:
    from agent.metrics.health import liveness, readiness
    from agent.metrics.server import MetricsServer

    runner = agent.runner
    return MetricsServer(
        args.metrics_addr,
        metrics.registry,
        liveness=lambda: liveness(
            runner.started, runner.heartbeat, time.monotonic(), args.liveness_timeout
        ),
        readiness=lambda: readiness(
            agent.ready.is_set(), [o.table for o in agent.backend.capacity_exceeded()]
        ),
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "agent",
        help="enforce NetworkPolicies on this node",
        description="Watch the API and program this node's dataplane. "
        "Stopping leaves the rules in place; --cleanup removes them.",
    )
    p.add_argument(
        "--node", default=os.environ.get("NODE_NAME"), help="this node's name (default: $NODE_NAME)"
    )
    p.add_argument("--backend", choices=BACKENDS, default="iptables")
    p.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster config)")
    p.add_argument(
        "--resync-period",
        type=float,
        default=30.0,
        help="seconds between full syncs, which repair drift (default 30)",
    )
    p.add_argument(
        "--nflog-group",
        type=int,
        default=100,
        help="iptables: NFLOG group of the drop log (default 100)",
    )
    p.add_argument(
        "--transit-dscp",
        type=_dscp,
        default=transit_mark.DEFAULT_DSCP,
        help="DSCP code point (0-63) that marks a NodePort connection this node DNATed "
        "and judged for the backend pod of another node, whose node then trusts it "
        "(docs/semantics.md, Services); 0 turns the mark off. Default 23 (0x17), every "
        "node must use the same",
    )
    p.add_argument(
        "--ipset-max-elements",
        type=int,
        default=DEFAULT_MAX_SET_ELEMENTS,
        metavar="N",
        help="iptables: the most members a peer set gets (sets are sized from their "
        "content); the endpoints whose rules use a bigger one deny everything until it "
        f"fits (default {DEFAULT_MAX_SET_ELEMENTS})",
    )
    p.add_argument(
        "--pod-cidr",
        action="append",
        type=_pod_cidr,
        default=[],
        metavar="CIDR",
        help="this node's pod address range (repeatable), where its Node object has no "
        "spec.podCIDRs: traffic of an address in it that no programmed pod holds is "
        "dropped, so a new pod is closed until its policy is programmed (default: the "
        "Node's spec.podCIDRs)",
    )
    _drop_log_flags(p)
    _ebpf_flags(p)
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="remove everything Picket programmed on this node, then exit",
    )
    p.add_argument(
        "--metrics-addr",
        default=":9402",
        help="[host]:port serving /metrics, /healthz and /readyz (default :9402, every "
        "address; a node's own address, e.g. from the downward API's status.hostIP, keeps "
        "it off the pod network's other addresses); 'off' serves nothing",
    )
    p.add_argument(
        "--metrics-read-interval",
        type=float,
        default=5.0,
        help="seconds between two readings of the dataplane's counters, which scrapes "
        "serve (a scrape runs no command; default 5)",
    )
    p.add_argument(
        "--liveness-timeout",
        type=float,
        default=60.0,
        help="seconds without a beat of the sync loop before /healthz fails (default 60)",
    )
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=run)


def make_backend(args: argparse.Namespace, cleanup: bool = False) -> Backend:
    if args.backend == "ebpf":
        from agent.dataplane.ebpf.backend import EbpfBackend
        from agent.dataplane.ebpf.settings import EbpfSettings

        settings = EbpfSettings(
            **{f.name: getattr(args, f"bpf_{f.name}") for f in fields(EbpfSettings)}
        )
        return EbpfBackend(
            args.node,
            args.bpf_pin_root,
            settings=settings,
            load=not cleanup,
            transit_dscp=args.transit_dscp,
        )
    from agent.dataplane.iptables import IptablesBackend

    return IptablesBackend(
        nflog_group=args.nflog_group,
        transit_dscp=args.transit_dscp,
        max_set_elements=args.ipset_max_elements,
    )


def _pod_cidr(text: str) -> IPv4Network | IPv6Network:
    try:
        return ip_network(text)  # strict: host bits set is a typo, not a range
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--pod-cidr: {exc}") from None


def _dscp(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value <= 63:
        raise argparse.ArgumentTypeError(f"--transit-dscp: {text} is not a DSCP (0-63)")
    return value


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if not args.node:
        print("picket agent: --node or $NODE_NAME is required", file=sys.stderr)
        return 2
    try:
        backend = make_backend(args, cleanup=args.cleanup)
        if args.cleanup:
            for item in backend.cleanup():
                print(f"removed {item}")
            return 0
    except Exception as exc:  # a dataplane that cannot start: one clear line
        print(f"picket agent: {exc}", file=sys.stderr)
        return 1
    from agent import __version__
    from agent.loop.agent import Agent
    from agent.loop.watch import api_client, kinds
    from agent.metrics.collector import AgentMetrics

    metrics = AgentMetrics(backend, __version__, args.metrics_read_interval)
    agent = Agent(
        args.node,
        backend,
        kinds(api_client(args.kubeconfig)),
        resync_period=args.resync_period,
        observer=metrics,
        pod_cidrs=tuple(args.pod_cidr),
    )
    server = None
    if args.metrics_addr != "off":
        try:
            server = metrics_server(args, metrics, agent)
        except (OSError, ValueError) as exc:  # a port in use: say so, do not start half
            print(f"picket agent: --metrics-addr {args.metrics_addr}: {exc}", file=sys.stderr)
            return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("picket.agent").info(
        "node %s, backend %s (%s), metrics on %s",
        args.node,
        backend.name,
        backend.mode,
        args.metrics_addr,
    )
    droplog = start_drop_log(args, backend, agent, stop)
    metrics.attach(agent, droplog[1] if droplog else None)
    if server is not None:
        metrics.readings.start(stop)
        server.start()
    agent.run(stop)
    if droplog is not None:
        droplog[0].join(5)  # it writes what is still open before it ends
    if server is not None:
        server.stop()
    return 0
