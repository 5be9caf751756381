"""The lab kube-proxy's loop: list+watch Services and EndpointSlices (the agent's
informers: re-list on 410, backoff), coalesce their events in a sync runner, and apply
the whole render each sync, as kube-proxy's iptables mode does:

- no rules until both kinds are listed (a partial picture would reject live Services);
- one `iptables-restore --noflush` of our chains, stale service chains deleted in it;
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

from kubernetes import client

from agent.loop.sync import SyncRunner
from agent.loop.watch import Informer, Kind, backoff
from lab.kubeproxy import conntrack, kernel
from lab.kubeproxy.objects import service_ports, slice_endpoints
from lab.kubeproxy.render import NodeContext, Ruleset, render, restore_text
from lab.kubeproxy.status import write_status

log = logging.getLogger("picket.lab.kubeproxy")
RESYNC_PERIOD = 30.0  # seconds, kube-proxy's --iptables-sync-period default


def node_pod_cidr(core: client.CoreV1Api, node: str) -> str:
    """This node's pod CIDR, from its Node object: what --detect-local-mode=NodeCIDR
    reads. Waits (with backoff) until the node is registered and has one."""
    failures = 0
    while True:
        try:
            obj = json.loads(core.read_node(node, _preload_content=False).data)
            cidr = (obj.get("spec") or {}).get("podCIDR")
            if cidr:
                return cidr
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
        self.context: NodeContext | None = None  # run() reads it from the Node
        self._applied: Ruleset | None = None
        self._jumps_checked = False
        self._problems: set[str] = set()

    def run(self) -> None:
        self.context = NodeContext(
            self.node, node_pod_cidr(self.core, self.node), kernel.tcp_be_liberal()
        )
        log.info("node %s, pod CIDR %s (local traffic)", self.node, self.context.pod_cidr)
        if kernel.ensure_ip_forward():
            log.warning("net.ipv4.ip_forward was off on this node; turned it on")
        self.services.start()
        self.slices.start()
        self.runner.run()  # next: sync(), on this thread

    def sync(self, full: bool, requested: float | None) -> None:
        if self.context is None or not (
            self.services.synced.is_set() and self.slices.synced.is_set()
        ):
            return  # an informer's first list will request another sync
        started = time.monotonic()
        # Every sync renders the whole state, so the pending changes are only drained.
        self.services.take_pending()
        self.slices.take_pending()
        ports, problems = service_ports(self.services.objects())
        self._report(problems)
        rules = render(ports, slice_endpoints(self.slices.objects(), self.node), self.context)
        if rules == self._applied and not full:
            return
        stale = kernel.service_chains() - set(rules.nat)
        kernel.restore(restore_text(rules, sorted(stale)))
        if full or not self._jumps_checked:
            self._check_node()
        self._clean_udp(rules, full)
        write_status(self.state_dir, self.node, rules.programmed)
        changed, self._applied = rules != self._applied, rules
        now = time.monotonic()
        log.log(
            logging.INFO if changed else logging.DEBUG,
            "programmed %d service ports, %d chains (%d stale removed) in %.1f ms, "
            "%.1f ms after the first change it answers",
            len(ports),
            len(rules.nat) + len(rules.filter),
            len(stale),
            (now - started) * 1000,
            (now - (requested or started)) * 1000,
        )

    def _check_node(self) -> None:
        for jump in kernel.ensure_jumps():
            log.info("inserted the jump %s", jump)
        self._jumps_checked = True
        if not kernel.conntrack_loaded():
            log.error("nf_conntrack is not loaded: Service NAT cannot work on this node")

    def _clean_udp(self, rules: Ruleset, full: bool) -> None:
        before = conntrack.UdpFrontends.of(self._applied.programmed if self._applied else {})
        if not full and conntrack.UdpFrontends.of(rules.programmed) == before:
            return
        try:
            removed = conntrack.remove_stale_udp(rules.programmed)
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
