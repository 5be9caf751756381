"""The drop log against real kernels and a real journald, for both backends: one record
per denied connection with every field right (TCP, UDP and SCTP; same node and across
nodes; ingress and egress), none for allowed traffic; connections denied through a
ClusterIP and a node port name the Service; audit mode; a SYN flood held to the budget
(its namespace's share: a quiet namespace's denials are all logged meanwhile) while
enforcement goes on; and `picket drops` reading it all back."""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lab import processes
from lab.config import EXTERNAL_ADDRESS, LabNode, state_dir
from tests.support.enforcement import apply, probe_once
from tests.support.lab_cli import PICKET, Kubectl, model_lab, picket, wait_until
from tests.support.lab_cli import drop_records as drops
from tests.support.policies import BACKENDS, netpol, pods_peer, sel
from tests.support.services import published

WINDOW = 5.0  # the agent's default --drop-log-window: a record is written when it closes
RATE, BURST = 100, 200  # the agent's default --drop-log-rate and --drop-log-burst
NAMESPACE_BURST = 50  # its default --drop-log-namespace-burst


@pytest.fixture(scope="module", params=BACKENDS)
def enforcing(request: pytest.FixtureRequest) -> Iterator[tuple[str, Kubectl]]:
    with model_lab(request.param) as kubectl:
        yield request.param, kubectl


@pytest.fixture
def backend(enforcing: tuple[str, Kubectl]) -> str:
    return enforcing[0]


@pytest.fixture
def kubectl(enforcing: tuple[str, Kubectl]) -> Iterator[Kubectl]:
    kubectl = enforcing[1]
    yield kubectl
    for ns in "xyz":
        kubectl("delete", "networkpolicy", "--all", "-n", ns)
    for ns in "yz":
        kubectl("annotate", "namespace", ns, "picket.io/enforcement-", "picket.io/drop-log-")


def pods(kubectl: Kubectl, family: int = 4) -> dict[str, dict[str, str]]:
    """namespace/name -> ip (of `family`) and node, for the model's pods."""
    found = {}
    for item in kubectl.json("get", "pods", "-A")["items"]:
        meta = item["metadata"]
        ips = [p["ip"] for p in item["status"].get("podIPs") or []]
        found[f"{meta['namespace']}/{meta['name']}"] = {
            "ip": next(ip for ip in ips if (6 if ":" in ip else 4) == family),
            "node": item["spec"]["nodeName"],
        }
    return found


def probe(source: str, target: str, port: str, family: int = 4) -> str:
    return probe_once(source, target, port, family=family)


def matching(records: list[dict], src: dict, dst: dict, protocol: str, port: int) -> list[dict]:
    return [
        r
        for r in records
        if r.get("PICKET_SRC_IP") == src["ip"]
        and r.get("PICKET_DST_IP") == dst["ip"]
        and r.get("PICKET_PROTOCOL") == protocol
        and r.get("PICKET_DST_PORT") == str(port)
    ]


POLICIES = [
    netpol("y", "default-deny", {"podSelector": {}}),
    netpol(
        "y",
        "allow-backend",
        {"podSelector": sel(pod="a"), "ingress": [{"from": [pods_peer(pod="b")]}]},
    ),
    netpol("x", "b-no-egress", {"podSelector": sel(pod="b"), "policyTypes": ["Egress"]}),
]


def _pairs(where: dict[str, dict[str, str]]) -> list[tuple[str, str, str, list[str]]]:
    """(direction, source, destination, isolating policies) for a same-node and a
    cross-node pair, each direction. Ingress into y/a (x/a, z/* send: not y/b);
    egress from x/b (to z pods)."""
    out = []
    for direction, source_pool, target, policies in (
        (
            "ingress",
            ["x/a", "x/c", "z/a", "z/b", "z/c"],
            "y/a",
            ["y/allow-backend", "y/default-deny"],
        ),
        ("egress", ["x/b"], None, ["x/b-no-egress"]),
    ):
        for same in (True, False):
            if direction == "ingress":
                src = next(
                    s for s in source_pool if (where[s]["node"] == where[target]["node"]) == same
                )
                out.append((direction, src, target, policies))
            else:
                src = source_pool[0]
                dst = next(
                    d
                    for d in ("z/a", "z/b", "z/c")
                    if (where[d]["node"] == where[src]["node"]) == same
                )
                out.append((direction, src, dst, policies))
    return out


def probes(*triples: tuple[str, str, str], family: int = 4) -> list[str]:
    """Probes at once (each a new connection from its own socket)."""
    with ThreadPoolExecutor(len(triples)) as pool:
        return list(pool.map(lambda t: probe(*t, family), triples))


@pytest.mark.parametrize("family", [4, 6])
def test_each_denied_connection_gives_one_complete_record(kubectl, family):
    """Over IPv4 and over IPv6: the records name the same pods and policies, with the
    addresses of the family the connection used."""
    apply(kubectl, *POLICIES)
    where = pods(kubectl, family)
    pairs = _pairs(where)
    attempts = [(s, d, f"80/{proto}") for _, s, d, _ in pairs for proto in ("tcp", "udp", "sctp")]
    assert wait_until(lambda: set(probes(*attempts, family=family)) == {"timeout"})
    time.sleep(WINDOW + 1)  # the records of the probes above are written
    # `picket drops --since` takes whole seconds: start on one, so the table below reads
    # nothing written before `start` (the records of the probes above included).
    time.sleep(math.ceil(time.time()) - time.time())
    start = time.time()
    allowed = ("z/a", "x/a")  # nothing isolates x/a's ingress or z/a's egress
    outcomes = probes(
        *attempts, *[(*allowed, f"80/{p}") for p in ("tcp", "udp", "sctp")], family=family
    )
    assert outcomes[: len(attempts)] == ["timeout"] * len(attempts)
    assert all(o.startswith("connected") for o in outcomes[len(attempts) :]), outcomes
    time.sleep(WINDOW + 2)
    records = drops(start)
    for protocol in ("TCP", "UDP", "SCTP"):
        for direction, src, dst, policies in pairs:
            found = matching(records, where[src], where[dst], protocol, 80)
            assert len(found) == 1, (protocol, direction, src, dst, found)
            r = found[0]
            src_ns, src_pod = src.split("/")
            dst_ns, dst_pod = dst.split("/")
            local = where[dst] if direction == "ingress" else where[src]
            want = {
                "SYSLOG_IDENTIFIER": "picket",
                "PICKET_VERDICT": "drop",
                "PICKET_DIRECTION": direction,
                "PICKET_PROTOCOL": protocol,
                "PICKET_SRC_NAMESPACE": src_ns,
                "PICKET_SRC_POD": src_pod,
                "PICKET_SRC_IP": where[src]["ip"],
                "PICKET_DST_NAMESPACE": dst_ns,
                "PICKET_DST_POD": dst_pod,
                "PICKET_DST_IP": where[dst]["ip"],
                "PICKET_DST_PORT": "80",
                "PICKET_POLICIES": ",".join(policies),
                "PICKET_NODE": local["node"],
            }
            assert {k: r.get(k) for k in want} == want
            assert 1024 <= int(r["PICKET_SRC_PORT"]) <= 65535
            assert int(r["PICKET_REPEATS"]) >= 1
            assert r["MESSAGE"].startswith(f"DROP {direction} {protocol} {src}:")
            assert f"is isolated by {', '.join(policies)}" in r["MESSAGE"]
        assert matching(records, where[allowed[0]], where[allowed[1]], protocol, 80) == []
    assert len(records) == len(attempts), records  # nothing else was denied meanwhile
    # `picket drops` reads them back, and filters
    table = picket("drops", "--since", f"@{int(start)}", "--pod", "y/a").stdout
    rows = [line for line in table.splitlines() if "y/a:80" in line]
    assert len(rows) == 6 and all("y/default-deny" in r and "ingress" in r for r in rows), table
    egress = drops(start, "--policy", "x/b-no-egress")
    assert len(egress) == 6 and {r["PICKET_DIRECTION"] for r in egress} == {"egress"}, egress
    in_y = [r for r in records if "y" in (r["PICKET_SRC_NAMESPACE"], r["PICKET_DST_NAMESPACE"])]
    assert drops(start, "--namespace", "y") == in_y


def test_opted_out_namespace_is_silent_and_audit_mode_logs_what_would_drop(kubectl):
    """One namespace enforced but opted out of the log, another in audit mode."""
    kubectl("annotate", "namespace", "y", "picket.io/drop-log=off")
    kubectl("annotate", "namespace", "z", "picket.io/enforcement=audit")
    apply(
        kubectl,
        netpol("y", "default-deny", {"podSelector": {}}),
        netpol("z", "default-deny", {"podSelector": {}}),
    )
    assert wait_until(lambda: probe("x/c", "y/b", "80") == "timeout")
    time.sleep(1)  # the annotations reached the agents (watch events, like the policies)
    start = time.time()
    assert probe("x/c", "y/b", "81") == "timeout"  # denied, not logged
    assert probe("y/b", "x/c", "80").startswith("connected")  # y's egress is open
    matrix = picket("lab", "matrix", "--json", "--outcomes", "--namespaces", "x,z").stdout
    result = json.loads(matrix)["results"]
    assert all(o != "timeout" for row in result.values() for o in row.values()), result
    time.sleep(WINDOW + 2)
    where = pods(kubectl)
    records = drops(start)
    assert [r for r in records if r.get("PICKET_DST_NAMESPACE") == "y"] == []
    for src in (p for p in where if p[0] in "xz"):
        for dst in (d for d in where if d.startswith("z/") and d != src):
            found = matching(records, where[src], where[dst], "TCP", 80)
            assert len(found) == 1, (src, dst)
            assert found[0]["PICKET_VERDICT"] == "would-drop"
            assert found[0]["PICKET_POLICIES"] == "z/default-deny"
            assert found[0]["MESSAGE"].startswith("WOULD-DROP ingress TCP")
    assert all(r["PICKET_DST_NAMESPACE"] == "z" for r in records), records
    kubectl("annotate", "namespace", "z", "picket.io/enforcement-", "picket.io/drop-log-")
    assert wait_until(lambda: probe("x/a", "z/a", "80") == "timeout")
    assert probe("z/a", "x/a", "80").startswith("connected")


def _selector_service(name: str, pod: str, port: int, **spec: object) -> dict:
    """A Service in y selecting the model's pod `pod`, `port` -> 80/TCP."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "y", "name": name},
        "spec": {
            "selector": {"pod": pod},
            "ports": [{"port": port, "targetPort": 80, "protocol": "TCP"}],
            **spec,
        },
    }


def _nflog_gives_conntrack() -> bool:
    """Whether this kernel can attach conntrack entries to NFLOG packets (docs/droplog.md,
    "Services"): read from its build configuration, not from the agent."""
    config = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    return "CONFIG_NETFILTER_NETLINK_GLUE_CT=y" in config


def _written(since: float, **fields: str) -> list[dict]:
    """The records since `since` with these fields, once their window has closed."""
    found: list[dict] = []

    def arrived() -> bool:
        found[:] = [r for r in drops(since) if all(r.get(k) == v for k, v in fields.items())]
        return bool(found)

    assert wait_until(arrived, timeout=WINDOW + 15), fields
    return found


def test_a_connection_denied_through_a_service_names_it(kubectl, backend):
    """x/a may send nothing; y/a takes nothing. x/a -> the ClusterIP of a Service of y/b
    (egress, x/a's node), the outside host -> a node port of a Service of y/a (ingress,
    the node it reaches, y/a's). Each record names both pods (or the outside host) and
    the Service, with the address and port the client sent to. The iptables backend
    can only do so where the kernel gives NFLOG conntrack entries; elsewhere its records
    name no Service, and the agent says why."""
    where = pods(kubectl)
    nodes = sorted({p["node"] for p in where.values()})
    to_b = published(kubectl, _selector_service("b-front", "b", 8085), where["y/b"]["ip"], nodes)
    to_a = published(
        kubectl,
        _selector_service("a-outside", "a", 8086, type="NodePort"),
        where["y/a"]["ip"],
        nodes,
    )
    node_port = to_a["spec"]["ports"][0]["nodePort"]
    node_of_a = where["y/a"]["node"]
    node_address = str(LabNode(int(node_of_a.rpartition("-")[2])).address)
    apply(
        kubectl,
        netpol("x", "a-sends-nothing", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"]}),
        netpol("y", "a-takes-nothing", {"podSelector": sel(pod="a")}),
    )
    attempts = [
        ("x/a", "svc/y/b-front", "8085"),
        ("external", f"nodeport/{node_of_a}/{node_port}"),
    ]

    def attempt() -> list[str]:  # as a user tries it: `picket lab probe`
        return [picket("lab", "probe", *a, check=False).stdout.strip() for a in attempts]

    # Enforced once both agents deny the pods directly (records of other ports, sources).
    assert wait_until(lambda: probe("x/a", "y/b", "81") == "timeout")
    assert wait_until(lambda: probe("x/b", "y/a", "81") == "timeout")
    start = time.time()
    assert attempt() == ["timeout"] * 2
    named = backend == "ebpf" or _nflog_gives_conntrack()
    # Not the waits' records (port 81), nor those the module's earlier tests may still
    # write of x/a's to other pods.
    egress = _written(
        start,
        PICKET_SRC_IP=where["x/a"]["ip"],
        PICKET_DST_IP=where["y/b"]["ip"],
        PICKET_DST_PORT="80",
    )
    ingress = _written(start, PICKET_SRC_IP=str(EXTERNAL_ADDRESS), PICKET_DST_PORT="80")
    cluster_ip = to_b["spec"]["clusterIP"]
    for records, want, via in (
        (
            egress,
            {
                "PICKET_DIRECTION": "egress",
                "PICKET_SRC_KIND": "pod",
                "PICKET_SRC_NAMESPACE": "x",
                "PICKET_SRC_POD": "a",
                "PICKET_DST_NAMESPACE": "y",
                "PICKET_DST_POD": "b",
                "PICKET_DST_IP": where["y/b"]["ip"],
                "PICKET_POLICIES": "x/a-sends-nothing",
                "PICKET_NODE": where["x/a"]["node"],
            },
            {
                "PICKET_SERVICE": "y/b-front",
                "PICKET_SERVICE_IP": cluster_ip,
                "PICKET_SERVICE_PORT": "8085",
                "PICKET_SERVICE_FRONTEND": "ClusterIP",
            },
        ),
        (
            ingress,
            {
                "PICKET_DIRECTION": "ingress",
                "PICKET_SRC_KIND": "external",
                "PICKET_DST_NAMESPACE": "y",
                "PICKET_DST_POD": "a",
                "PICKET_DST_IP": where["y/a"]["ip"],
                "PICKET_POLICIES": "y/a-takes-nothing",
                "PICKET_NODE": node_of_a,
            },
            {
                "PICKET_SERVICE": "y/a-outside",
                "PICKET_SERVICE_IP": node_address,
                "PICKET_SERVICE_PORT": str(node_port),
                "PICKET_SERVICE_FRONTEND": "NodePort",
            },
        ),
    ):
        assert len(records) == 1, records
        record = records[0]
        assert {k: record.get(k) for k in want} == want
        if named:
            assert {k: record.get(k) for k in via} == via
            address = f"{via['PICKET_SERVICE_IP']}:{via['PICKET_SERVICE_PORT']}"
            assert f" via Service {via['PICKET_SERVICE']} " in record["MESSAGE"]
            assert record["MESSAGE"].split(";")[0].endswith(address)
        else:
            assert not [k for k in record if k.startswith("PICKET_SERVICE")], record
    if named:
        table = picket("drops", "--since", f"@{int(start)}", "--service", "y/b-front").stdout
        rows = table.splitlines()[1:]
        assert len(rows) == 1 and "y/b:80 via y/b-front" in rows[0], table
    else:
        log = (state_dir() / "logs" / f"agent-{where['x/a']['node']}.log").read_text()
        assert "built without CONFIG_NETFILTER_NETLINK_GLUE_CT" in log
        assert "drop records will not name the Service" in log


# A SYN flood from a pod's namespace: raw TCP SYNs with random source ports (each a new
# connection), paced to COUNT packets in DURATION seconds.
FLOOD = r"""
import os, random, socket, struct, sys, time
src, dst, count, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
def checksum(data):
    if len(data) % 2: data += b"\0"
    total = sum(struct.unpack(f"!{len(data)//2}H", data))
    while total >> 16: total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, 20)
start, sent = time.monotonic(), 0
while sent < count:
    due = int((time.monotonic() - start) / duration * count) + 1
    while sent < min(due, count):
        tcp = struct.pack("!HHIIBBHHH", random.randint(1024, 65535), 80,
                          random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
        tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
        s.sendto(tcp, (dst, 0))
        sent += 1
    time.sleep(0.001)
print(sent, time.monotonic() - start, time.time(), flush=True)
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_syn_flood_is_held_to_the_budget_and_enforcement_goes_on(kubectl):
    count, duration = 100_000, 10.0
    apply(kubectl, *POLICIES)
    where = pods(kubectl)
    attacker, victim = "z/a", "y/b"
    assert wait_until(lambda: probe(attacker, victim, "80") == "timeout")
    node = where[victim]["node"]
    pid = processes.running(state_dir(), f"agent-{node}")
    assert pid is not None
    time.sleep(WINDOW + 1)
    cpu_before, rss_before, start = _cpu_seconds(pid), _rss_kib(pid), time.time()
    flood = subprocess.Popen(
        [
            PICKET,
            "lab",
            "exec",
            attacker,
            "--",
            sys.executable,
            "-c",
            FLOOD,
            where[attacker]["ip"],
            where[victim]["ip"],
            str(count),
            str(duration),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    probes = []
    while flood.poll() is None:  # other pods' traffic while the flood runs
        probes.append((probe("x/a", "z/b", "80"), probe("x/a", "y/c", "80")))
    # The flood's own end: the probe loop may notice it a probe timeout later, and a
    # summary written in between already holds the flood's tail.
    sent, took, ended = flood.stdout.read().split()
    elapsed = time.time() - start
    cpu = _cpu_seconds(pid) - cpu_before
    assert int(sent) == count and float(took) < duration + 2
    assert cpu < elapsed, f"agent used {cpu:.1f} s of CPU in {elapsed:.1f} s"
    assert _rss_kib(pid) - rss_before < 64 * 1024, "agent memory grew by more than 64 MiB"
    assert probes and all(
        allowed.startswith("connected") and denied == "timeout" for allowed, denied in probes
    ), probes
    flood_end = float(ended)

    def written() -> list[dict]:
        """Once open records have closed and a summary after the flood is out (summaries
        come at most every 10 s, and the flood's tail is always in one)."""
        found = [r for r in drops(start) if r.get("PICKET_NODE") == node]
        done = time.time() > flood_end + WINDOW + 1 and any(
            r.get("PICKET_VERDICT") == "suppressed"
            and int(r["__REALTIME_TIMESTAMP"]) >= flood_end * 1e6
            for r in found
        )
        return found if done else []

    # Summaries come at most every 10 s and journald may lag a loaded node: wait long.
    assert wait_until(lambda: bool(written()), timeout=WINDOW + 45), [
        (r.get("PICKET_VERDICT"), int(r["__REALTIME_TIMESTAMP"]) / 1e6 - flood_end)
        for r in drops(start)
        if r.get("PICKET_NODE") == node and r.get("PICKET_VERDICT") == "suppressed"
    ]
    records = written()
    flood_records = [r for r in records if r.get("PICKET_SRC_IP") == where[attacker]["ip"]]
    summaries = [r for r in records if r.get("PICKET_VERDICT") == "suppressed"]
    budget = BURST + RATE * (time.time() - start)
    assert len(records) - len(summaries) <= budget
    # The log did record the flood, up to the attacker's namespace's share...
    assert len(flood_records) >= NAMESPACE_BURST
    # ... and every denied connection of another, quiet namespace (x/a's probes to y/c,
    # each from its own source port) while the flood used up z's share.
    quiet = [  # written by y/c's node, which need not be the victim's
        r
        for r in drops(start)
        if (r.get("PICKET_SRC_IP"), r.get("PICKET_DST_IP"))
        == (where["x/a"]["ip"], where["y/c"]["ip"])
    ]
    assert len(quiet) >= len(probes), f"{len(quiet)} records of {len(probes)} denied probes"
    suppressed = sum(int(r["PICKET_SUPPRESSED"]) for r in summaries)
    lost = sum(int(r["PICKET_LOST"]) for r in summaries)
    assert suppressed + lost + sum(int(r["PICKET_REPEATS"]) for r in flood_records) >= count * 0.9
