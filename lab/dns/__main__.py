"""`python -m lab.dns`: the process behind a DNS pod (started by the lab kubelet)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kubernetes import config

from lab.config import CLUSTER_DOMAIN
from lab.dns.pod import DnsPod


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="picket-lab-dns")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--netns", required=True, help="the DNS pod's network namespace")
    p.add_argument("--data-dir", type=Path, required=True, help="hosts files, readiness")
    p.add_argument("--pod", default="", help="NS/POD, for the log")
    p.add_argument("--zone", default=CLUSTER_DOMAIN)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("picket.lab.dns").info("DNS pod %s in %s", args.pod, args.netns)
    api = config.new_client_from_config(args.kubeconfig)
    return DnsPod(api, args.netns, args.data_dir, args.zone).run()


if __name__ == "__main__":
    sys.exit(main())
