"""The process behind a DNS pod: it keeps dnsmasq's hosts file equal to the records of
the cluster's Services and EndpointSlices (lab/dns/records.py), and runs dnsmasq in the
pod's network namespace for as long as it runs itself.

Services and EndpointSlices come from list+watch informers (agent/loop/watch.py), whose
changes only wake the render loop, so a burst of changes is one rewrite. The file is
replaced by a rename, which dnsmasq's inotify sees as a whole new file: a query never
finds it half written. Once dnsmasq answers with the first records, the process writes
`ready` in its data directory; the lab kubelet reports the pod Ready then.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from ipaddress import ip_address
from pathlib import Path
from types import FrameType

from kubernetes import client

from agent.loop.watch import Informer, Kind
from lab.dns import dnsmasq
from lab.dns.records import Record, render_hosts, service_records
from lab.dns.resolve import ask
from lab.dns.search import ANSWER, TIMEOUT, UNREACHABLE

log = logging.getLogger("picket.lab.dns")
HOSTS_FILE = "records.hosts"
READY_FILE = "ready"
CHECK_EVERY = 1.0  # seconds between looks at dnsmasq when nothing changes


def hosts_dir(data_dir: Path) -> Path:
    return data_dir / "hosts"


class DnsPod:
    def __init__(self, api: client.ApiClient, netns: str, data_dir: Path, zone: str) -> None:
        self.netns, self.data_dir, self.zone = netns, data_dir, zone
        self.wake, self.stopping = threading.Event(), threading.Event()
        core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        self.services = Informer(
            Kind("Service", core.list_service_for_all_namespaces), self.wake.set
        )
        self.slices = Informer(
            Kind("EndpointSlice", discovery.list_endpoint_slice_for_all_namespaces),
            self.wake.set,
        )
        self.served = ""

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()
        self.wake.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for folder in (hosts_dir(self.data_dir), self.data_dir / "scratch"):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)  # dnsmasq reads them as nobody
        self.services.start()
        self.slices.start()
        while not self._synced():
            if self.stopping.wait(0.05):
                return 0
        first = self._render()
        argv = dnsmasq.dnsmasq_argv(hosts_dir(self.data_dir), self.zone)
        proc = dnsmasq.start_in(self.netns, argv)
        try:
            return self._serve(proc, first)
        finally:
            dnsmasq.stop(proc)

    def _synced(self) -> bool:
        return self.services.synced.is_set() and self.slices.synced.is_set()

    def _serve(self, proc: subprocess.Popen, first: Record | None) -> int:
        ready = False
        while not self.stopping.is_set():
            if proc.poll() is not None:
                log.error("dnsmasq exited (status %s)", proc.returncode)
                return 1
            if not ready and self._answers(first):
                (self.data_dir / READY_FILE).write_text("ready\n")
                log.info("dnsmasq answers in %s", self.netns)
                ready = True
            self.wake.wait(CHECK_EVERY if ready else 0.05)
            self.wake.clear()
            self._render()
        return 0

    def _render(self) -> Record | None:
        """Rewrite the hosts file if the records changed; returns a record it serves."""
        self.services.take_pending()  # the informers keep changes for a reader of diffs;
        self.slices.take_pending()  # this one renders everything each time
        records = service_records(self.services.objects(), self.slices.objects(), self.zone)
        text = render_hosts(records)
        if text != self.served:
            scratch = self.data_dir / "scratch" / HOSTS_FILE
            scratch.write_text(text)
            scratch.chmod(0o644)
            scratch.rename(hosts_dir(self.data_dir) / HOSTS_FILE)
            self.served = text
            log.info("serving %d records", len(records))
        return records[0] if records else None

    def _answers(self, record: Record | None) -> bool:
        """dnsmasq answers a query, with an address for the name of `record` when it
        serves one (asked of its type: an IPv6-only cluster's records are all AAAA)."""
        if record is None:
            reply = ask(self.netns, "127.0.0.1", f"{self.zone}.", False, 0.5)
            return reply.outcome not in (TIMEOUT, UNREACHABLE)
        name, address = record
        family = ip_address(address).version
        return ask(self.netns, "127.0.0.1", f"{name}.", False, 0.5, family).outcome == ANSWER
