"""`python -m lab.kubelet`: the lab kubelet for the given nodes."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from kubernetes import client, config

from lab.config import IP_FAMILIES_DEFAULT, LabNode, parse_ip_families, virtual_nodes
from lab.kubelet.kubelet import Kubelet


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="picket-lab-kubelet")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--nodes", type=int, required=True, help="lab nodes node-1..node-N")
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--virtual-nodes", type=int, default=0, help="vnode-1..vnode-M")
    p.add_argument(
        "--ip-families",
        type=parse_ip_families,
        default=IP_FAMILIES_DEFAULT,
        help="4, 6 or 4,6: an address per family for every pod",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    api = client.CoreV1Api(config.new_client_from_config(args.kubeconfig))
    nodes = [LabNode(i) for i in range(1, args.nodes + 1)]
    virtual = virtual_nodes(args.virtual_nodes)
    kubelet = Kubelet(api, nodes, args.state_dir, virtual, args.kubeconfig, args.ip_families)
    asyncio.run(kubelet.run())


if __name__ == "__main__":
    main()
