"""Pods of virtual nodes: API objects that get an address from their node's pod CIDR
and a Running status, and nothing else (no namespace, no responders). Benchmarks use
them to put thousands of peers in peer sets without thousands of namespaces."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from lab.config import VirtualNode


class VirtualAddresses:
    """Allocates pod addresses per virtual node, never reusing one that is in use."""

    def __init__(self, nodes: list[VirtualNode]) -> None:
        self.nodes = {n.name: n for n in nodes}
        self._by_uid: dict[str, tuple[str, str]] = {}  # uid -> (node, address)
        self._taken: dict[str, set[str]] = {n.name: set() for n in nodes}

    def holds(self, node_name: str | None) -> bool:
        return node_name in self.nodes

    def assign(self, uid: str, pod: dict[str, Any]) -> str | None:
        """An address for a new pod (None when it already has one); raises when the
        node's pod CIDR is full."""
        node = self.nodes[pod["spec"]["nodeName"]]
        existing = (pod.get("status") or {}).get("podIP")
        if existing or uid in self._by_uid:
            if existing:
                self._record(uid, node.name, existing)
            return None
        # .1 is the gateway on real nodes; keep the plan alike.
        first = int(node.pod_cidr.network_address) + 2
        last = int(node.pod_cidr.broadcast_address) - 1
        taken = self._taken[node.name]
        for value in range(first + len(taken) % (last - first + 1), last + 1):
            if str(IPv4Address(value)) not in taken:
                return self._record(uid, node.name, str(IPv4Address(value)))
        for value in range(first, last + 1):
            if str(IPv4Address(value)) not in taken:
                return self._record(uid, node.name, str(IPv4Address(value)))
        raise RuntimeError(f"virtual node {node.name} has no free address")

    def _record(self, uid: str, node: str, address: str) -> str:
        self._by_uid[uid] = (node, address)
        self._taken[node].add(address)
        return address

    def release(self, uid: str) -> None:
        found = self._by_uid.pop(uid, None)
        if found is not None:
            self._taken[found[0]].discard(found[1])

    @staticmethod
    def host_ip(node: VirtualNode) -> str:
        """Virtual nodes have no underlay address; report the CIDR's gateway."""
        return str(IPv4Address(int(node.pod_cidr.network_address) + 1))
