"""The eBPF backend: compiles bpf/picket_tc.c with BCC at start, attaches the two TC
programs to every local pod's host-side interface (clsact, direct action, replaced in
place), and writes what ebpf_plan says into maps pinned under the BPF filesystem.

A restarted agent finds its maps pinned and its identity numbering in a state file,
computes the same contents, and only swaps the programs on the interfaces: enforcement
never stops. `cleanup` detaches the programs and unpins the maps.

Counters: the programs count every verdict by direction and reason (a per-CPU array)
and every drop by endpoint, direction and reason (a hash the metrics read to name the
namespace). An endpoint's drop entries are read once more and deleted when the
endpoint goes, so a reused endpoint number starts from zero.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from agent.compiler.diff import IRDiff
from agent.compiler.evaluate import direction_admits
from agent.compiler.ir import NodeIR
from agent.dataplane.counters import AUDIT_REASON, DatapathCounters, MonotonicTotals, split_audit
from agent.dataplane.ebpf_layout import (
    CONFIG_EVENTS_BURST,
    CONFIG_EVENTS_PER_SECOND,
    CONFIG_FIN_TIMEOUT_S,
    CONFIG_OTHER_TIMEOUT_S,
    CONFIG_TCP_TIMEOUT_S,
    CONFIG_UDP_TIMEOUT_S,
    DIR_EGRESS,
    DIR_INGRESS,
    REASON_ALLOWED_CT,
    REASON_ALLOWED_HOST,
    REASON_ALLOWED_NOT_ISOLATED,
    REASON_ALLOWED_OTHER,
    REASON_ALLOWED_POLICY,
    REASON_AUDIT_POLICY,
    REASON_DROP_NO_SYN,
    REASON_DROP_POLICY,
    REASON_NAMES,
    REASON_SLOTS,
)
from agent.dataplane.ebpf_plan import AddrKey, EbpfPlanner, MapDelta, MapState, PolicyEntry
from agent.dataplane.interfaces import host_interfaces, node_addresses
from agent.model.objects import IP_PROTOCOL_NAMES

log = logging.getLogger("picket.ebpf")
BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
FILTER_PRIO = 4949  # our TC filters' priority: fixed, so a new program replaces the old
INGRESS_HOOK, EGRESS_HOOK = "ffff:fff2", "ffff:fff3"  # from the pod, to the pod


class DataplaneError(RuntimeError):
    pass


@dataclass(frozen=True)
class EbpfSettings:
    """Map sizes and timeouts (flags of `picket agent`; defaults documented there)."""

    addr_entries: int = 65536
    endpoint_entries: int = 4096
    policy_entries: int = 524288
    named_entries: int = 65536
    ct_entries: int = 262144
    ring_pages: int = 64
    tcp_timeout: int = 3600
    udp_timeout: int = 60
    other_timeout: int = 60
    fin_timeout: int = 10
    events_per_second: int = 1000
    events_burst: int = 1000


def program_source() -> str:
    """bpf/picket_tc.c with its local includes inlined: BCC rewrites map calls only in
    the main text, and we keep the logic in small headers."""

    def inline(path: Path) -> str:
        out = []
        for line in path.read_text().splitlines():
            found = re.match(r'#include "(.+)"', line.strip())
            out.append(inline(BPF_DIR / found.group(1)) if found else line)
        return "\n".join(out)

    return inline(BPF_DIR / "picket_tc.c")


def is_bpffs(path: Path) -> bool:
    mounts = Path("/proc/mounts").read_text().splitlines()
    return any(line.split()[1] == str(path) and line.split()[2] == "bpf" for line in mounts)


def ensure_bpffs(root: Path) -> None:
    """Pinning needs the BPF filesystem; mount it at /sys/fs/bpf when nothing has."""
    base = Path("/sys/fs/bpf")
    if str(root).startswith(str(base)) and not is_bpffs(base):
        mount = subprocess.run(
            ["mount", "-t", "bpf", "bpf", str(base)], capture_output=True, text=True, check=False
        )
        if mount.returncode != 0:  # e.g. a DaemonSet pod without CAP_SYS_ADMIN
            raise DataplaneError(
                f"{base} is not a BPF filesystem and mounting one failed "
                f"({mount.stderr.strip()}); mount it on the node: mount -t bpf bpf {base}"
            )
    root.mkdir(parents=True, exist_ok=True)


def _ip(addr: str) -> bytes:
    return socket.inet_aton(addr)


def policy_key_bytes(entry: PolicyEntry) -> bytes:
    return (
        struct.pack("<I", entry.prefixlen)
        + struct.pack(">I", entry.endpoint)
        + bytes([entry.direction, 0, 0, 0])
        + struct.pack(">I", entry.identity)
        + bytes([entry.protocol or 0])
        + struct.pack(">H", entry.port)
        + b"\0"
    )


class Maps:
    """Raw map access by bytes: building ctypes structures per entry costs more than
    the system call, and a full sync writes hundreds of thousands of entries."""

    def __init__(self, bpf: Any) -> None:
        from bcc.libbcc import lib

        self._lib = lib
        self.tables = {
            name: bpf[name]
            for name in (
                "picket_addr",
                "picket_endpoints",
                "picket_policy",
                "picket_named",
                "picket_ct",
                "picket_verdicts",
                "picket_drop_counts",
                "picket_config",
            )
        }

    def put(self, name: str, key: bytes, value: bytes) -> None:
        if (
            self._lib.bpf_update_elem(
                self.tables[name].map_fd, ctypes.c_char_p(key), ctypes.c_char_p(value), 0
            )
            != 0
        ):
            err = ctypes.get_errno()
            raise DataplaneError(f"{name}: update failed: {os.strerror(err) if err else '?'}")

    def delete(self, name: str, key: bytes) -> None:
        self._lib.bpf_delete_elem(self.tables[name].map_fd, ctypes.c_char_p(key))

    def keys(self, name: str) -> list[bytes]:
        return [bytes(k) for k in self.tables[name]]


class EbpfBackend:
    name = "ebpf"
    mode = "tc"

    def __init__(
        self,
        node: str,
        pin_root: Path = Path("/sys/fs/bpf/picket"),
        state_file: Path | None = None,
        settings: EbpfSettings | None = None,
        load: bool = True,
    ) -> None:
        self.node = node
        self.settings = settings or EbpfSettings()
        self.pin_dir = pin_root / node
        self.state_file = state_file or Path(f"/run/picket/ebpf-{node}.json")
        self.planner = EbpfPlanner(self._saved_allocations())
        self._ifindex: dict[str, int] = {}  # endpoint -> the ifindex programmed
        self._programmed: MapState | None = None
        self._attached: dict[str, str] = {}  # endpoint -> interface carrying our programs
        self._stale_policy: list[bytes] = []
        self._stale_named: list[bytes] = []
        self._stale_endpoints: list[bytes] = []
        self._drops = MonotonicTotals()
        self._lock = threading.Lock()  # metrics scrapes read counters and plan state
        self.bpf: Any = None
        if load:
            self._load()

    # --- loading ------------------------------------------------------------------------

    def _load(self) -> None:
        from bcc import BPF

        ensure_bpffs(self.pin_dir.parent)
        self.pin_dir.mkdir(parents=True, exist_ok=True)
        s = self.settings
        cflags = [
            f'-DPICKET_PIN_DIR="{self.pin_dir}"',
            f"-DPICKET_ADDR_ENTRIES={s.addr_entries}",
            f"-DPICKET_ENDPOINT_ENTRIES={s.endpoint_entries}",
            f"-DPICKET_POLICY_ENTRIES={s.policy_entries}",
            f"-DPICKET_NAMED_ENTRIES={s.named_entries}",
            f"-DPICKET_CT_ENTRIES={s.ct_entries}",
            f"-DPICKET_RING_PAGES={s.ring_pages}",
        ]
        try:
            self.bpf = BPF(text=program_source(), cflags=cflags)
            self.from_pod = self.bpf.load_func("picket_from_pod", BPF.SCHED_CLS)
            self.to_pod = self.bpf.load_func("picket_to_pod", BPF.SCHED_CLS)
        except Exception as exc:
            raise DataplaneError(
                f"cannot compile or load the TC programs ({exc}); BCC needs a kernel headers "
                "tree at /lib/modules/$(uname -r)/build (make setup links the distribution's)"
            ) from exc
        self.maps = Maps(self.bpf)
        config = {
            CONFIG_TCP_TIMEOUT_S: s.tcp_timeout,
            CONFIG_UDP_TIMEOUT_S: s.udp_timeout,
            CONFIG_OTHER_TIMEOUT_S: s.other_timeout,
            CONFIG_FIN_TIMEOUT_S: s.fin_timeout,
            CONFIG_EVENTS_PER_SECOND: s.events_per_second,
            CONFIG_EVENTS_BURST: s.events_burst,
        }
        for slot, value in config.items():
            self.maps.put("picket_config", struct.pack("<I", slot), struct.pack("<Q", value))

    def _saved_allocations(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _save_allocations(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        temp = self.state_file.with_suffix(".tmp")
        temp.write_text(json.dumps(self.planner.allocations()))
        temp.replace(self.state_file)

    # --- applying -----------------------------------------------------------------------

    def apply(self, ir: NodeIR, change: IRDiff | None = None, full: bool = True) -> bool:
        interfaces = host_interfaces(ir)
        host = set(node_addresses()) | set(ir.node_ips)
        with self._lock:
            delta = self.planner.plan(ir, host)
            released = delta.endpoint_del
            self._save_allocations()
            repair = full or self._programmed is None
            if repair:
                delta = self._repair_delta()
            self._write(delta, interfaces)
            self._retire_drop_counts(released, every_stale=repair)
            self._programmed = self.planner.state
        self._attach(interfaces, replace=full)
        return bool(delta.policy_add or delta.policy_del or delta.endpoint_set)

    def _repair_delta(self) -> MapDelta:
        """What makes the kernel's maps equal the plan, read back from the kernel: after a
        restart this is (nearly) nothing, so enforcement carries on untouched."""
        want = self.planner.state
        delta = MapDelta()
        addr_keys = {self._addr_key(k): k for k in want.addresses}
        for raw in self.maps.keys("picket_addr"):
            if raw not in addr_keys:
                delta.addr_del.add(self._addr_from_bytes(raw))
        delta.addr_set = dict(want.addresses)
        delta.endpoint_set = dict(want.endpoints)
        policy_keys = {policy_key_bytes(e): e for e in want.policy}
        present = set(self.maps.keys("picket_policy"))
        delta.policy_add = {e for k, e in policy_keys.items() if k not in present}
        self._stale_policy = [k for k in present if k not in policy_keys]
        named_keys = {self._named_key(e): e for e in want.named}
        present_named = set(self.maps.keys("picket_named"))
        delta.named_add = {e for k, e in named_keys.items() if k not in present_named}
        self._stale_named = [k for k in present_named if k not in named_keys]
        self._ifindex = {}  # every endpoint entry is rewritten by ifindex
        self._stale_endpoints = self.maps.keys("picket_endpoints")
        return delta

    @staticmethod
    def _addr_key(key: AddrKey) -> bytes:
        return struct.pack("<I", key[1]) + _ip(key[0])

    @staticmethod
    def _addr_from_bytes(raw: bytes) -> AddrKey:
        return socket.inet_ntoa(raw[4:8]), struct.unpack("<I", raw[:4])[0]

    @staticmethod
    def _named_key(entry: tuple[int, str, int, int]) -> bytes:
        endpoint, ip, protocol, port = entry
        return struct.pack("<I4sHBB", endpoint, _ip(ip), port, protocol, 0)

    def _write(self, delta: MapDelta, interfaces: dict[str, str]) -> None:
        """In the order that never admits what the new state denies, nor the other way
        round for long: entries before the flags that make them count, flags off before
        entries go."""
        m = self.maps
        for entry in delta.policy_add:
            m.put("picket_policy", policy_key_bytes(entry), b"\x01")
        for entry in delta.named_add:
            m.put("picket_named", self._named_key(entry), b"\x01")
        for key, (pod, cidr) in delta.addr_set.items():
            m.put("picket_addr", self._addr_key(key), struct.pack("<II", pod, cidr))
        indexes = _ifindexes(interfaces)
        wanted_endpoints = self.planner.state.endpoints
        for ref, (number, flags) in wanted_endpoints.items():
            index = indexes.get(ref)
            if index is None:
                continue
            if ref in delta.endpoint_set or self._ifindex.get(ref) != index:
                m.put(
                    "picket_endpoints", struct.pack("<I", index), struct.pack("<II", number, flags)
                )
                old = self._ifindex.get(ref)
                if old is not None and old != index:
                    m.delete("picket_endpoints", struct.pack("<I", old))
                self._ifindex[ref] = index
        for ref in [r for r in self._ifindex if r not in wanted_endpoints]:
            m.delete("picket_endpoints", struct.pack("<I", self._ifindex.pop(ref)))
        live = {struct.pack("<I", i) for i in self._ifindex.values()}
        for raw in self._stale_endpoints:
            if raw not in live:
                m.delete("picket_endpoints", raw)
        self._stale_endpoints = []
        for key in delta.addr_del:
            m.delete("picket_addr", self._addr_key(key))
        for entry in delta.policy_del:
            m.delete("picket_policy", policy_key_bytes(entry))
        for entry in delta.named_del:
            m.delete("picket_named", self._named_key(entry))
        for raw in self._stale_policy:
            m.delete("picket_policy", raw)
        for raw in self._stale_named:
            m.delete("picket_named", raw)
        self._stale_policy, self._stale_named = [], []

    def _attach(self, interfaces: dict[str, str], replace: bool) -> None:
        """Both programs on every local pod's interface (new ones, or all when a new
        agent brought new programs)."""
        with IPRoute() as ipr:
            for ref, ifname in interfaces.items():
                if ref not in self.planner.state.endpoints:
                    continue
                if not replace and self._attached.get(ref) == ifname:
                    continue
                found = ipr.link_lookup(ifname=ifname)
                if not found:
                    continue
                _attach_one(ipr, found[0], self.from_pod.fd, self.to_pod.fd)
                self._attached[ref] = ifname

    # --- connections, counters, cleanup ---------------------------------------------------

    def remove_denied(self, ir: NodeIR) -> int:
        """Delete the CT entries of connections the IR no longer admits."""
        refs = {v: k for k, v in self.planner.endpoint_ids.by_thing.items()}
        table, removed = self.maps.tables["picket_ct"], 0
        for key in list(table.keys()):
            ref = refs.get(key.endpoint)
            endpoint = ir.endpoints.get(ref) if ref else None
            if endpoint is None or endpoint.audit:
                continue  # audit mode keeps what it let through
            rules = endpoint.egress if key.direction == DIR_EGRESS else endpoint.ingress
            saddr = IPv4Address(socket.ntohl(key.saddr))
            daddr = IPv4Address(socket.ntohl(key.daddr))
            peer = daddr if key.direction == DIR_EGRESS else saddr
            protocol = IP_PROTOCOL_NAMES.get(key.protocol, str(key.protocol))
            port = key.dport if key.protocol in (6, 17, 132) else None
            if not direction_admits(ir, rules, peer, protocol, port):
                try:
                    del table[key]
                    removed += 1
                except KeyError:
                    pass
        return removed

    def counters(self) -> dict[str, int]:
        """Packets by verdict reason, both directions."""
        return {
            name: self._verdicts(DIR_INGRESS, reason) + self._verdicts(DIR_EGRESS, reason)
            for reason, name in REASON_NAMES.items()
        }

    def _verdicts(self, direction: int, reason: int) -> int:
        table = self.maps.tables["picket_verdicts"]
        return int(sum(table[table.Key(direction * REASON_SLOTS + reason)]))

    def _read_drop_counts(self, namespaces: dict[int, str]) -> None:
        """Feeds the totals from the entries of endpoints in `namespaces` (number ->
        namespace). Callers hold the lock."""
        for key, value in self.maps.tables["picket_drop_counts"].items():
            namespace = namespaces.get(key.endpoint)
            if namespace is None:
                continue
            labels = (
                "egress" if key.direction == DIR_EGRESS else "ingress",
                DROP_REASON_LABELS.get(key.reason, str(key.reason)),
                namespace,
            )
            self._drops.observe((key.endpoint, key.direction, key.reason), labels, value.value)

    def _retire_drop_counts(self, released: dict[str, int], every_stale: bool) -> None:
        """Removed endpoints: read their drop entries a last time, then delete them (and,
        on a full sync, entries of numbers no endpoint has, e.g. from before a restart)."""
        gone = {number: ref.partition("/")[0] for ref, number in released.items()}
        if not gone and not every_stale:
            return
        self._read_drop_counts(gone)
        live = {number for number, _ in self.planner.state.endpoints.values()}
        table = self.maps.tables["picket_drop_counts"]
        for key in list(table.keys()):
            if key.endpoint in gone or (every_stale and key.endpoint not in live):
                del table[key]
                self._drops.forget([(key.endpoint, key.direction, key.reason)])

    def datapath_counters(self) -> DatapathCounters:
        with self._lock:
            self._read_drop_counts(
                {n: ref.partition("/")[0] for ref, (n, _) in self.planner.state.endpoints.items()}
            )
            totals = self._drops.totals()
        allowed = {
            name: sum(self._verdicts(direction, reason) for reason in ALLOWED_REASONS)
            for direction, name in ((DIR_INGRESS, "ingress"), (DIR_EGRESS, "egress"))
        }
        return split_audit(totals, allowed)

    def map_entries(self) -> dict[str, int]:
        """Entries per map: the agent's own from its plan, the kernel's (CT, drop
        counts) by walking them."""
        with self._lock:
            state = self._programmed or self.planner.state
            sizes = {
                "addr": len(state.addresses),
                "endpoints": len(self._ifindex),
                "policy": len(state.policy),
                "named": len(state.named),
            }
        for name in ("ct", "drop_counts"):
            sizes[name] = sum(1 for _ in self.maps.tables[f"picket_{name}"])
        return sizes

    def rule_count(self) -> int:
        state = self._programmed or self.planner.state
        return len(state.policy) + len(state.named)

    def cleanup(self) -> list[str]:
        """Detach our programs from every interface and unpin our maps."""
        removed = []
        with IPRoute() as ipr:
            for link in ipr.get_links():
                index, name = link["index"], link.get_attr("IFLA_IFNAME")
                for hook in (INGRESS_HOOK, EGRESS_HOOK):
                    try:
                        ipr.tc("del-filter", "bpf", index, ":1", parent=hook, prio=FILTER_PRIO)
                        side = "from" if hook == INGRESS_HOOK else "to"
                        removed.append(f"program on {name} ({side} pod)")
                    except NetlinkError:
                        pass
        if self.pin_dir.exists():
            shutil.rmtree(self.pin_dir)
            removed.append(f"pinned maps {self.pin_dir}")
        if self.state_file.exists():
            self.state_file.unlink()
            removed.append(f"state {self.state_file}")
        return removed


DROP_REASON_LABELS = {
    REASON_DROP_POLICY: "policy",
    REASON_DROP_NO_SYN: "no_syn",
    REASON_AUDIT_POLICY: AUDIT_REASON,
}
ALLOWED_REASONS = (
    REASON_ALLOWED_POLICY,
    REASON_ALLOWED_CT,
    REASON_ALLOWED_NOT_ISOLATED,
    REASON_ALLOWED_HOST,
    REASON_ALLOWED_OTHER,
)


def _ifindexes(interfaces: dict[str, str]) -> dict[str, int]:
    out = {}
    for ref, name in interfaces.items():
        try:
            out[ref] = socket.if_nametoindex(name)
        except OSError:
            continue
    return out


def _attach_one(ipr: IPRoute, index: int, from_pod_fd: int, to_pod_fd: int) -> None:
    try:
        ipr.tc("add", "clsact", index)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
    for hook, fd, name in (
        (INGRESS_HOOK, from_pod_fd, "picket_from_pod"),
        (EGRESS_HOOK, to_pod_fd, "picket_to_pod"),
    ):
        ipr.tc(
            "replace-filter",
            "bpf",
            index,
            ":1",
            fd=fd,
            name=name,
            parent=hook,
            classid=1,
            direct_action=True,
            prio=FILTER_PRIO,
        )
