"""`python -m lab.kubeproxy --node NAME --kubeconfig PATH --state-dir DIR`: the lab
kube-proxy of one node, run inside that node's network namespace (lab/lab.py)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kubernetes import config

from lab.kubeproxy.proxy import KubeProxy


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="picket-lab-kube-proxy")
    p.add_argument("--node", required=True, help="this node's name (endpoints on it are local)")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--state-dir", type=Path, required=True, help="where kubeproxy/<node>.json goes")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    api = config.new_client_from_config(args.kubeconfig)
    KubeProxy(api, args.node, args.state_dir).run()


if __name__ == "__main__":
    main()
