"""The toy CNI: its network configuration (one generator, for the lab and for real
nodes) and the CNI protocol a runtime speaks to the plugins.

The network is Debian's reference plugins: `ptp` (a veth per pod, host side routed,
no bridge) with `host-local` IPAM over the node's pod CIDR; `loopback` brings up the
pod's lo. Plugins are executed as a container runtime does (libcni's conflist rules:
ADD in order with prevResult, DEL in reverse), inside the node's network namespace.

`python3 -m lab.cni --pod-cidr CIDR` prints the conflist for a real node: the
Vagrant lab writes it to each node's CNI directory. This module and lab.config
import only the standard library, so that runs from a checkout on a bare node.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_interface, ip_network
from pathlib import Path
from typing import Any

from lab.config import CNI_BIN_DIR

CNI_VERSION = "1.0.0"
LOOPBACK = {"cniVersion": CNI_VERSION, "name": "loopback", "type": "loopback"}


def network_config(pod_cidrs: Sequence[str], data_dir: str | None = None) -> dict[str, Any]:
    """The conflist for a node whose pods take an address from each of `pod_cidrs` (one
    per family: host-local allocates from every range set). `data_dir` is host-local's
    allocation store: lab nodes share one filesystem, so each needs its own; a real node
    has its own disk and keeps host-local's default."""
    defaults = {4: "0.0.0.0/0", 6: "::/0"}
    ipam: dict[str, Any] = {
        "type": "host-local",
        "ranges": [[{"subnet": cidr}] for cidr in pod_cidrs],
        "routes": [{"dst": defaults[ip_network(cidr).version]} for cidr in pod_cidrs],
    }
    if data_dir is not None:
        ipam["dataDir"] = data_dir
    return {
        "cniVersion": CNI_VERSION,
        "name": "picket",
        "plugins": [
            {"type": "ptp", "ipMasq": False, "mtu": 1500, "ipam": ipam},
        ],
    }


class CniError(RuntimeError):
    pass


@dataclass(frozen=True)
class Sandbox:
    container_id: str  # the pod UID
    netns_path: str  # /run/netns/<name>
    ifname: str = "eth0"
    args: str = ""  # CNI_ARGS, e.g. "IgnoreUnknown=1;IP=198.18.1.9" (host-local's request)


def _invoke(
    plugin_conf: dict[str, Any], command: str, sandbox: Sandbox, runtime_netns: str, ifname: str
) -> dict[str, Any]:
    plugin = CNI_BIN_DIR / plugin_conf["type"]
    env = {
        **os.environ,
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": sandbox.container_id,
        "CNI_NETNS": sandbox.netns_path,
        "CNI_IFNAME": ifname,
        "CNI_PATH": str(CNI_BIN_DIR),
    }
    if sandbox.args:
        env["CNI_ARGS"] = sandbox.args
    proc = subprocess.run(
        ["ip", "netns", "exec", runtime_netns, str(plugin)],
        input=json.dumps(plugin_conf).encode(),
        env=env,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        try:
            msg = json.loads(proc.stdout).get("msg", "")
        except ValueError:
            msg = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
        raise CniError(f"{plugin.name} {command} failed: {msg.strip()}")
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def _plugin_conf(
    conflist: dict[str, Any], plugin: dict[str, Any], prev: dict[str, Any] | None
) -> dict[str, Any]:
    conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def add(conflist: dict[str, Any], sandbox: Sandbox, runtime_netns: str) -> dict[str, Any]:
    """CNI ADD: loopback, then the network's plugins in order. Returns the result."""
    _invoke(LOOPBACK, "ADD", sandbox, runtime_netns, "lo")
    result: dict[str, Any] | None = None
    for plugin in conflist["plugins"]:
        result = _invoke(
            _plugin_conf(conflist, plugin, result), "ADD", sandbox, runtime_netns, sandbox.ifname
        )
    return result or {}


def delete(
    conflist: dict[str, Any], sandbox: Sandbox, runtime_netns: str, prev: dict[str, Any] | None
) -> None:
    """CNI DEL: the plugins in reverse order (releases the address)."""
    for plugin in reversed(conflist["plugins"]):
        _invoke(_plugin_conf(conflist, plugin, prev), "DEL", sandbox, runtime_netns, sandbox.ifname)


def check(
    conflist: dict[str, Any], sandbox: Sandbox, runtime_netns: str, prev: dict[str, Any]
) -> None:
    """CNI CHECK: raises CniError when the pod's network is not as ADD left it."""
    for plugin in conflist["plugins"]:
        _invoke(
            _plugin_conf(conflist, plugin, prev), "CHECK", sandbox, runtime_netns, sandbox.ifname
        )


def result_ips(result: dict[str, Any]) -> tuple[IPv4Address | IPv6Address, ...]:
    """The pod's addresses in a CNI result, in the order of the ranges (the primary
    family first)."""
    return tuple(ip_interface(entry["address"]).ip for entry in result.get("ips", []))


def save_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    """Print a real node's conflist: the same generator the lab's kubelet uses."""
    parser = argparse.ArgumentParser(
        prog="python3 -m lab.cni",
        description="Print the CNI network configuration (conflist JSON) of a node.",
    )
    parser.add_argument(
        "--pod-cidr",
        required=True,
        action="append",
        help="the node's pod range, e.g. 10.42.1.0/24; once per family for dual-stack "
        "(the first is the primary family)",
    )
    args = parser.parse_args(argv)
    cidrs = []
    for text in args.pod_cidr:
        try:
            cidrs.append(ip_network(text))  # strict: host bits set is a typo, not a range
        except ValueError as exc:
            parser.error(f"--pod-cidr {text!r}: {exc}")
    if len({c.version for c in cidrs}) != len(cidrs):
        parser.error("--pod-cidr: at most one range per address family")
    json.dump(network_config([str(c) for c in cidrs]), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
