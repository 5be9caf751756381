"""`python -m lab.apiserver`: run the lab API server until terminated."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import ssl
from pathlib import Path

from aiohttp import web

from lab.apiserver.daemonsets import DaemonSetController
from lab.apiserver.deployments import DeploymentController
from lab.apiserver.endpointslice_controller import EndpointSliceController
from lab.apiserver.server import ApiServer
from lab.apiserver.service_registry import ServiceRegistry
from lab.apiserver.store import Store
from lab.config import NODEPORT_RANGE, SERVICE_CIDR

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="picket-lab-apiserver")
    p.add_argument("--bind-address", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6443)
    p.add_argument("--advertise-address", help="address clients use (default: bind address)")
    p.add_argument("--tls-cert", type=Path, help="serving certificate (PEM); plain HTTP without")
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--token-file", type=Path, required=True, help="the bearer token clients use")
    p.add_argument(
        "--bookmark-interval",
        type=float,
        default=2.0,
        help="seconds of idle watch between BOOKMARK events",
    )
    p.add_argument(
        "--validation",
        choices=("strict", "off"),
        default="strict",
        help="strict: validate as a real API server (through agent.model); off: store any "
        "well-formed object (names and labels still checked)",
    )
    p.add_argument(
        "--service-cluster-ip-range",
        type=_service_ranges,
        default=[SERVICE_CIDR],
        help="where ClusterIPs come from: a range, or one per family separated by a comma "
        "(dual-stack; the first family is the default) (default: %(default)s)",
    )
    p.add_argument(
        "--service-node-port-range",
        type=_port_range,
        default=NODEPORT_RANGE,
        help="where NodePorts come from, FIRST-LAST (default: 30000-32767)",
    )
    p.add_argument(
        "--event-window",
        type=int,
        default=10000,
        help="change events retained for watches; older resumes get 410 Gone",
    )
    return p.parse_args(argv)


def _service_ranges(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    ranges = [ipaddress.ip_network(part) for part in text.split(",")]
    if not 1 <= len(ranges) <= 2 or len({r.version for r in ranges}) != len(ranges):
        raise argparse.ArgumentTypeError("want one range, or one per family")
    return ranges


def _port_range(text: str) -> range:
    first, _, last = text.partition("-")
    if not (first.isdigit() and last.isdigit()) or not 0 < int(first) <= int(last) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port range FIRST-LAST: {text!r}")
    return range(int(first), int(last) + 1)


def seed(server: ApiServer) -> None:
    for name in DEFAULT_NAMESPACES:
        server.store.create(
            "namespaces",
            "",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            },
        )


async def serve(args: argparse.Namespace) -> None:
    token = args.token_file.read_text().strip()
    address = f"{args.advertise_address or args.bind_address}:{args.port}"
    store = Store(window=args.event_window)
    services = ServiceRegistry(store, args.service_cluster_ip_range, args.service_node_port_range)
    server = ApiServer(
        store,
        token,
        address,
        args.bookmark_interval,
        strict=args.validation == "strict",
        services=services,
    )
    seed(server)
    DeploymentController(server.api).start()
    DaemonSetController(server.api).start()
    EndpointSliceController(server.api).start()
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    # Open watches are long-lived requests: a graceful shutdown would wait out the
    # timeout for them (aiohttp's default, 60 s, is longer than `lab down`'s grace). A
    # real API server ends its watches on shutdown too; the informers list again.
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, args.bind_address, args.port, ssl_context=context).start()
    logging.info("serving on %s (validation %s)", address, args.validation)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
