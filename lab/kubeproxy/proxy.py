"""The lab kube-proxy's loop: list+watch Services and EndpointSlices (the agent's
informers: re-list on 410, backoff), coalesce their events in a sync runner, and apply
the whole render each sync, as kube-proxy's iptables mode does:

- no rules until both kinds are listed (a partial picture would reject live Services);
- one proxier per family of the node's pod CIDRs (kube-proxy's dual-stack mode: the
  same chains, in iptables for IPv4 and ip6tables for IPv6, each from the Services'
  ClusterIPs and the EndpointSlices of its family);
- one `iptables-restore --noflush` of our chains per family, stale service chains
  deleted in it;
- the jump rules checked on the first sync and on every periodic full one (which also
  rewrites the chains, repairing drift);
- stale UDP conntrack entries removed when UDP endpoints change;
- then the status file (status.py) says what is programmed.
Errors are logged and the sync retried; the process never exits on one.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from agent.loop.sync import SyncRunner
from agent.loop.watch import Informer, Kind, backoff
from lab.kubeproxy import conntrack, kernel
from lab.kubeproxy.objects import service_ports, slice_endpoints
from lab.kubeproxy.render import NodeContext, Ruleset, merged_programmed, render, restore_text
from lab.kubeproxy.status import write_status

log = logging.getLogger("picket.lab.kubeproxy")
RESYNC_PERIOD = 30.0  # seconds, kube-proxy's --iptables-sync-period default


def node_pod_cidrs(core: client.CoreV1Api, node: str) -> list[str]:
    """This node's pod CIDRs, one per family, from its Node object: what
    --detect-local-mode=NodeCIDR reads, and which families it proxies. Waits (with
    backoff) until the node is registered and has one."""
    failures = 0
    while True:
        try:
            obj = json.loads(core.read_node(node, _preload_content=False).data)
            spec = obj.get("spec") or {}
            cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
            if cidrs:
                return list(cidrs)
            reason = "no spec.podCIDR yet"
        except (client.ApiException, OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0]
        failures += 1
        if failures in (1, 20) or failures % 100 == 0:
            log.info("waiting for node %s's pod CIDR: %s", node, reason)
        time.sleep(min(backoff(failures), 2.0))


class KubeProxy:
    def __init__(self, api: client.ApiClient, node: str, state_dir: Path) -> None:
        self.core = client.CoreV1Api(api)
        discovery = client.DiscoveryV1Api(api)
        self.node, self.state_dir = node, state_dir
        self.runner = SyncRunner(self.sync, resync_period=RESYNC_PERIOD)
        self.services = Informer(
            Kind("Service", self.core.list_service_for_all_namespaces), self.runner.request
        )
        self.slices = Informer(
            Kind("EndpointSlice", discovery.list_endpoint_slice_for_all_namespaces),
            self.runner.request,
        )
        self.contexts: list[NodeContext] = []  # one per family; run() reads them
        self._applied: dict[int, Ruleset] = {}
        self._programmed: dict[str, Any] | None = None
        self._jumps_checked = False
        self._problems: set[str] = set()

    def run(self) -> None:
        liberal = kernel.tcp_be_liberal()
        self.contexts = [
            NodeContext(self.node, cidr, liberal) for cidr in node_pod_cidrs(self.core, self.node)
        ]
        cidrs = ", ".join(c.pod_cidr for c in self.contexts)
        log.info("node %s, pod CIDRs %s (local traffic)", self.node, cidrs)
        if kernel.ensure_ip_forward():
            log.warning("net.ipv4.ip_forward was off on this node; turned it on")
        self.services.start()
        self.slices.start()
        self.runner.run()  # next: sync(), on this thread

    def sync(self, full: bool, requested: float | None) -> None:
        if not self.contexts or not (self.services.synced.is_set() and self.slices.synced.is_set()):
            return  # an informer's first list will request another sync
        started = time.monotonic()
        # Every sync renders the whole state, so the pending changes are only drained.
        self.services.take_pending()
        self.slices.take_pending()
        services, slices = self.services.objects(), self.slices.objects()
        rendered: dict[int, Ruleset] = {}
        problems: list[str] = []
        for context in self.contexts:
            ports, found = service_ports(services, context.family)
            problems += found
            endpoints = slice_endpoints(slices, self.node, context.family)
            rendered[context.family] = render(ports, endpoints, context)
        self._report(sorted(set(problems)))
        if rendered == self._applied and not full:
            return
        stale = 0
        for family, rules in rendered.items():
            chains = kernel.service_chains("nat", family) - set(rules.nat)
            kernel.restore(restore_text(rules, sorted(chains)), family)
            stale += len(chains)
        if full or not self._jumps_checked:
            self._check_node()
        programmed = merged_programmed(rendered.values())
        self._clean_udp(programmed, full)
        write_status(self.state_dir, self.node, programmed)
        changed, self._applied, self._programmed = rendered != self._applied, rendered, programmed
        now = time.monotonic()
        log.log(
            logging.INFO if changed else logging.DEBUG,
            "programmed %d service ports, %d chains (%d stale removed) in %.1f ms, "
            "%.1f ms after the first change it answers",
            sum(len(p["ports"]) for p in programmed.values()),
            sum(len(r.nat) + len(r.filter) for r in rendered.values()),
            stale,
            (now - started) * 1000,
            (now - (requested or started)) * 1000,
        )

    def _check_node(self) -> None:
        for context in self.contexts:
            for jump in kernel.ensure_jumps(context.family):
                log.info("inserted the jump %s", jump)
        self._jumps_checked = True
        if not kernel.conntrack_loaded():
            log.error("nf_conntrack is not loaded: Service NAT cannot work on this node")

    def _clean_udp(self, programmed: dict[str, Any], full: bool) -> None:
        before = conntrack.UdpFrontends.of(self._programmed or {})
        if not full and conntrack.UdpFrontends.of(programmed) == before:
            return
        try:
            removed = conntrack.remove_stale_udp(programmed)
        except Exception as exc:  # conntrack netlink missing: rules still apply
            log.warning("cannot clean stale UDP conntrack entries: %s", exc)
            return
        if removed:
            log.info("removed %d stale UDP conntrack entries", removed)

    def _report(self, problems: list[str]) -> None:
        for problem in problems:
            if problem not in self._problems:
                log.warning("ignored: %s", problem)
        self._problems = set(problems)
