"""`picket lab`: the network-namespace cluster. Tests, the demo and the benchmarks
use only these commands. The `picket` CLI finds `register` through the
`picket.subcommands` entry point (pyproject.toml), so the agent never imports the lab."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.request
from ipaddress import ip_address
from pathlib import Path

from kubernetes.client import ApiException, CoreV1Api

from agent.explain import render_matrix
from lab import images, lab, processes
from lab.cluster import (
    core_api,
    family_of,
    get_pod,
    get_service,
    list_endpoint_slices,
    list_nodes,
    list_pods,
    list_services,
    probe_destination,
    probe_source,
)
from lab.config import (
    CLUSTER_DOMAIN,
    LabNode,
    lab_nodes,
    parse_ip_families,
    state_dir,
)
from lab.dns.addon import NAMESPACE as DNS_NAMESPACE
from lab.dns.addon import SERVICE as DNS_SERVICE
from lab.dns.records import cluster_ip, slices_by_service
from lab.dns.resolve import resolve
from lab.dns.search import candidates
from lab.kubeproxy.status import programmed, status_path
from lab.matrix import ServiceProbeError, probe_matrix, probe_services, probeable
from lab.probe import probe
from lab.services import status_line

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lab",
        help="the multi-node lab in network namespaces",
        description="A Kubernetes-like cluster in network namespaces on this "
        "host, driven by the real kubectl. Needs root.",
    )
    cmds = p.add_subparsers(dest="lab_command", metavar="COMMAND", required=True)
    _register_up(cmds)
    cmds.add_parser("down", help="remove everything the lab made").set_defaults(func=cmd_down)
    cmds.add_parser("status", help="nodes, pods, Services, processes").set_defaults(func=cmd_status)
    cmds.add_parser("kubeconfig", help="print the kubeconfig path").set_defaults(
        func=cmd_kubeconfig
    )
    ex = cmds.add_parser("exec", help="run a command in a pod's network namespace")
    ex.add_argument("pod", metavar="NS/POD")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD...")
    ex.set_defaults(func=cmd_exec)
    _register_probes(cmds)
    _register_resolve(cmds)
    me = cmds.add_parser("metrics", help="what each agent's /metrics says (picket_* series)")
    me.add_argument("prefix", nargs="?", default="picket_", help="only series starting with this")
    me.set_defaults(func=cmd_metrics)
    im = cmds.add_parser(
        "image",
        help="import a checkout as the lab's image localhost/picket:TAG",
        description="What a node does with the image built from daemonset/Containerfile "
        "(docs/deploy.md): make it runnable by the DaemonSet. `lab up` imports the "
        "checkout it runs from under its version; this imports one under another tag.",
    )
    im.add_argument("--tag", required=True)
    im.add_argument("--from", dest="source", type=Path, default=processes.ROOT, metavar="DIR")
    im.set_defaults(func=cmd_image)


def _register_up(cmds: argparse._SubParsersAction) -> None:
    up = cmds.add_parser("up", help="build the lab (idempotent); prints the kubeconfig path")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument(
        "--backend",
        default="none",
        choices=lab.BACKENDS,
        help="none (no enforcement), iptables or ebpf: one agent per node",
    )
    up.add_argument(
        "--api-validation",
        choices=lab.API_VALIDATIONS,
        help="strict (the default: as a real API server validates) or off (store any "
        "well-formed object, for handing the agents what the model refuses); fixed "
        "while the lab is up",
    )
    up.add_argument(
        "--virtual-nodes",
        type=int,
        default=0,
        help="nodes that exist only in the API: their pods get addresses and no "
        "namespace (for benchmarks with thousands of pods)",
    )
    up.add_argument(
        "--ip-families",
        type=parse_ip_families,
        help="the pods' address families: 4,6 (the default: dual-stack, IPv4 primary), "
        "6,4, 4 or 6; fixed while the lab is up",
    )
    up.set_defaults(func=cmd_up)


def _register_probes(cmds: argparse._SubParsersAction) -> None:
    pr = cmds.add_parser("probe", help="try one new connection from a pod, node or outside")
    pr.add_argument(
        "source",
        metavar="SOURCE",
        help="NS/POD, node/NAME, external (the outside host, from its own address), or "
        "an address: a node's, or an outside one (198.19.200.0/24)",
    )
    pr.add_argument(
        "target",
        metavar="TARGET",
        help="NS/POD, an IP address, svc/NS/NAME (its ClusterIP, at a Service port), or "
        "nodeport/NODE/PORT[/PROTO] (the node's address; no PORT argument then)",
    )
    pr.add_argument("port", metavar="PORT[/PROTO]", nargs="?")
    pr.add_argument("--timeout", type=float, default=1.0)
    pr.add_argument(
        "--family",
        type=int,
        choices=(4, 6),
        help="for NS/POD, node and nodeport targets: their address of this family "
        "(default: the primary one, the pod's podIP)",
    )
    pr.set_defaults(func=cmd_probe)
    mx = cmds.add_parser("matrix", help="probe every ordered pair of ready pods")
    mx.add_argument("--namespaces", help="only pods of these namespaces (x,y,z)")
    mx.add_argument("--port", type=int, default=80)
    mx.add_argument("--protocol", default="TCP", type=str.upper, choices=("TCP", "UDP", "SCTP"))
    mx.add_argument("--timeout", type=float, default=1.0)
    mx.add_argument(
        "--family",
        type=int,
        choices=(4, 6),
        help="probe each pod's address of this family (default: the primary one)",
    )
    mx.add_argument(
        "--via-service",
        action="store_true",
        help="probe each pod through a Service of its own (its ClusterIP), made for the run",
    )
    mx.add_argument("--json", action="store_true")
    mx.add_argument(
        "--outcomes",
        action="store_true",
        help="with --json: each result is connected, refused or timeout instead "
        "of a boolean (refused means the policy let the connection attempt through)",
    )
    mx.set_defaults(func=cmd_matrix)


def _register_resolve(cmds: argparse._SubParsersAction) -> None:
    rs = cmds.add_parser("resolve", help="a DNS query from a pod, to the kube-dns Service")
    rs.add_argument("pod", metavar="NS/POD")
    rs.add_argument("name", metavar="NAME", help="expanded with the pod's search list")
    rs.add_argument("--tcp", action="store_true", help="over TCP (default UDP)")
    rs.add_argument(
        "--family",
        type=int,
        choices=(4, 6),
        help="ask for the addresses of this family: A records (4) or AAAA (6); "
        "default: the pod's primary family, that of its podIP",
    )
    rs.add_argument(
        "--server",
        help="ask this address (either family) instead of the kube-dns ClusterIP (e.g. its pod's)",
    )
    rs.add_argument("--timeout", type=float, default=2.0, help="seconds per query")
    rs.set_defaults(func=cmd_resolve)


def _fail(message: str) -> int:
    print(f"picket lab: {message}", file=sys.stderr)
    return EXIT_FAIL


def _api() -> CoreV1Api:
    path = lab.kubeconfig_path()
    if not path.exists():
        raise lab.LabError("the lab is not up (run `picket lab up`)")
    return core_api(path)


def cmd_up(args: argparse.Namespace) -> int:
    try:
        path = lab.up(
            args.nodes, args.backend, args.virtual_nodes, args.api_validation, args.ip_families
        )
    except (lab.LabError, ValueError) as exc:
        return _fail(str(exc))
    print(path)
    return EXIT_OK


def cmd_image(args: argparse.Namespace) -> int:
    if not lab.state_dir().exists():
        return _fail("the lab is not up (run `picket lab up`)")
    try:
        where = images.build(lab.state_dir(), args.source.resolve(), args.tag)
    except images.ImageError as exc:
        return _fail(str(exc))
    print(f"{images.REPOSITORY}:{args.tag} {where}")
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    for item in lab.down():
        print(f"removed {item}", file=sys.stderr)
    return EXIT_OK


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    path = lab.kubeconfig_path()
    if not path.exists():
        return _fail("the lab is not up (run `picket lab up`)")
    print(path)
    return EXIT_OK


def cmd_metrics(args: argparse.Namespace) -> int:
    """Reads every agent's /metrics over the lab link, as Prometheus would."""
    conf = lab.config()
    if not conf or conf.get("backend", "none") == "none":
        return _fail("no agents run (lab down, or backend none)")
    status = EXIT_OK
    for node in lab_nodes(conf["nodes"]):
        try:
            with urllib.request.urlopen(node.metrics_url, timeout=5) as resp:
                text = resp.read().decode()
        except OSError as exc:
            print(f"{node.name}: {node.metrics_url}: {exc}", file=sys.stderr)
            status = EXIT_FAIL
            continue
        for line in text.splitlines():
            if line.startswith(args.prefix):
                print(f"{node.name} {line}")
    return status


def cmd_status(args: argparse.Namespace) -> int:
    conf = lab.config()
    if not conf:
        print("lab: down")
        return EXIT_OK
    state = state_dir()
    # The validation is named only when off, so a default lab's status reads as before.
    validation = conf.get("api_validation", "strict")
    print(
        f"lab: up, {conf['nodes']} nodes, backend {conf['backend']}, "
        + ("" if validation == "strict" else f"API validation {validation}, ")
        + f"kubeconfig {lab.kubeconfig_path()}"
    )
    for name in processes.names(state):
        pid = processes.running(state, name)
        print(f"process {name}: " + (f"pid {pid}" if pid else "NOT RUNNING"))
    try:
        api = _api()
        nodes, pods = list_nodes(api), list_pods(api)
    except (lab.LabError, ApiException, OSError) as exc:
        return _fail(f"cannot read the API: {exc}")
    _print_nodes(nodes)
    _print_services(api)
    print("pods:" if pods else "pods: none")
    for pod in pods:
        print(
            f"  {pod.ref:40} {pod.node or '-':10} {pod.ip or '-':15} "
            f"{'ready' if pod.ready else 'not ready'}"
        )
    agents = [n for n in processes.names(state) if n.startswith("agent-")]
    if conf.get("backend", "none") == "none" or not agents:
        print("agents: none (backend none: no enforcement)")
    for name in agents:
        node = LabNode(int(name.rpartition("-")[2]))
        print(
            f"agent {node.name}: backend {conf['backend']}, metrics {node.metrics_url} "
            f"(/healthz, /readyz), log {state / 'logs' / (name + '.log')}"
        )
    for node in lab_nodes(conf["nodes"]):
        services = programmed(state, node.name)
        ports = sum(len(s["ports"]) for s in (services or {}).values())
        print(
            f"kube-proxy {node.name}: "
            + ("no rules applied yet" if services is None else f"{ports} service ports programmed")
            + f" ({status_path(state, node.name)}), "
            f"log {state / 'logs' / (lab.kube_proxy_name(node) + '.log')}"
        )
    print(
        "note: kinds other than Namespace, Pod, Node, NetworkPolicy, Deployment, Service "
        "and EndpointSlice are stored but have no effect in the lab"
    )
    return EXIT_OK


def _print_services(api: CoreV1Api) -> None:
    services = list_services(api)
    grouped = slices_by_service(list_endpoint_slices(api)) if services else {}
    print("services:" if services else "services: none")
    for service in services:
        meta = service["metadata"]
        print("  " + status_line(service, grouped.get((meta["namespace"], meta["name"]), [])))


def _print_nodes(nodes: list[dict]) -> None:
    print("nodes:")
    for node in nodes:
        address = next(
            (
                a["address"]
                for a in node["status"].get("addresses", [])
                if a["type"] == "InternalIP"
            ),
            "-",
        )
        print(f"  {node['metadata']['name']:10} {address:15} pods {node['spec'].get('podCIDR')}")


def cmd_exec(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        return _fail("nothing to run: picket lab exec NS/POD -- CMD...")
    try:
        pod = get_pod(_api(), args.pod)
    except (lab.LabError, ApiException, ValueError) as exc:
        return _fail(str(exc))
    if pod.netns is None:
        return _fail(f"{args.pod} has no network namespace in the lab yet")
    os.execvp("ip", ["ip", "netns", "exec", pod.netns, *argv])
    return EXIT_FAIL  # not reached


def cmd_probe(args: argparse.Namespace) -> int:
    try:
        api = _api()
        target, port, protocol = probe_destination(api, args.target, args.port, args.family)
        netns, source_ip = probe_source(api, args.source, family_of(target))
    except (lab.LabError, ApiException, ValueError) as exc:
        return _fail(str(exc))
    if not target:
        return _fail("the target pod has no address")
    result = asyncio.run(probe(netns, target, port, protocol, args.timeout, source_ip))
    print(result)
    return EXIT_OK if result.connected else EXIT_FAIL


def cmd_resolve(args: argparse.Namespace) -> int:
    """Prints the addresses, one a line (the name that answered on stderr), or the
    failure: timeout, unreachable, NXDOMAIN, NODATA or another response code."""
    try:
        api = _api()
        pod = get_pod(api, args.pod)
        # The nameserver a kubelet writes: kube-dns's primary ClusterIP, whatever is asked.
        server = args.server or cluster_ip(get_service(api, DNS_NAMESPACE, DNS_SERVICE))
        if args.server:
            ip_address(args.server)  # a ValueError that names it, if not an address
        names = candidates(args.name, args.pod.partition("/")[0], CLUSTER_DOMAIN)
    except (lab.LabError, ApiException, ValueError) as exc:
        return _fail(str(exc))
    if pod.netns is None or pod.ip is None:
        return _fail(f"{args.pod} has no network namespace or address in the lab yet")
    if server is None:
        return _fail(f"Service {DNS_NAMESPACE}/{DNS_SERVICE} has no ClusterIP")
    family = args.family or family_of(pod.ip)
    found = resolve(pod.netns, server, names, args.tcp, args.timeout, family)
    if not found.ok:
        print(found.outcome)
        print(f"asked {server} for {', '.join(found.tried)}", file=sys.stderr)
        return EXIT_FAIL
    print(f"{found.name} from {server}", file=sys.stderr)
    for address in found.addresses:
        print(address)
    return EXIT_OK


def _probe_pods(args: argparse.Namespace) -> dict:
    namespaces = args.namespaces.split(",") if args.namespaces else None
    api = _api()
    pods = list_pods(api, namespaces)
    run = (args.port, args.protocol, args.timeout)
    if not args.via_service:
        return asyncio.run(probe_matrix(pods, *run, family=args.family))
    nodes = lab_nodes(lab.config().get("nodes", 1))
    family = args.family or lab.ip_families()[0]
    targets = probeable(pods, family)
    ports = [(args.port, args.protocol)]
    with probe_services(api, targets, ports, state_dir(), nodes, (family,)) as ips:
        return asyncio.run(probe_matrix(targets, *run, addresses=ips[family], family=family))


def cmd_matrix(args: argparse.Namespace) -> int:
    try:
        found = _probe_pods(args)
    except (lab.LabError, ApiException, ServiceProbeError) as exc:
        return _fail(str(exc))
    results = {src: {dst: r.connected for dst, r in row.items()} for src, row in found.items()}
    if args.json and args.outcomes:
        outcomes = {src: {dst: r.outcome for dst, r in row.items()} for src, row in found.items()}
        print(json.dumps({"port": args.port, "protocol": args.protocol, "results": outcomes}))
    elif args.json:
        print(json.dumps({"port": args.port, "protocol": args.protocol, "results": results}))
    elif args.outcomes:
        print(
            f"# {args.port}/{args.protocol}: rows connect to columns; '.' connected, "
            "'r' refused (let through, nothing listens), 'X' timed out (dropped)"
        )
        marks = {"connected": ".", "refused": "r", "timeout": "X"}
        print(
            render_matrix(
                {s: {d: True for d in row} for s, row in found.items()},
                {s: {d: marks[r.outcome] for d, r in row.items()} for s, row in found.items()},
            )
        )
    else:
        print(
            f"# {args.port}/{args.protocol}: rows connect to columns; '.' connected, "
            "'X' refused or timed out"
        )
        print(render_matrix(results))
    return EXIT_OK
