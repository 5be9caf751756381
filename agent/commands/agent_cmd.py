"""`picket agent`: the node agent (its flags mirror the DaemonSet's args)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

BACKENDS = ("iptables",)


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
        "--nflog-group", type=int, default=100, help="NFLOG group of the drop log (default 100)"
    )
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="remove everything Picket programmed on this node, then exit",
    )
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    from agent.dataplane.iptables import DataplaneError, IptablesBackend

    backend = IptablesBackend(nflog_group=args.nflog_group)
    if args.cleanup:
        try:
            for item in backend.cleanup():
                print(f"removed {item}")
        except DataplaneError as exc:
            print(f"picket agent: {exc}", file=sys.stderr)
            return 1
        return 0
    if not args.node:
        print("picket agent: --node or $NODE_NAME is required", file=sys.stderr)
        return 2
    from agent.agent import Agent
    from agent.watch import api_client, kinds

    agent = Agent(
        args.node, backend, kinds(api_client(args.kubeconfig)), resync_period=args.resync_period
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("picket.agent").info(
        "node %s, backend %s (%s)", args.node, backend.name, backend.mode
    )
    agent.run(stop)
    return 0
