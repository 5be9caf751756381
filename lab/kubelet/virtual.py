"""Pods of virtual nodes: API objects that get an address per family from their node's
pod CIDRs and a Running status, and nothing else (no namespace, no responders).
Benchmarks use them to put thousands of peers in peer sets without thousands of
namespaces."""

from __future__ import annotations

from ipaddress import ip_address
from itertools import chain
from typing import Any

from lab.config import IP_FAMILIES_DEFAULT, VirtualNode

# A /64 has more addresses than any benchmark makes pods: search this many at most.
SEARCH = 65536


class VirtualAddresses:
    """Allocates pod addresses per virtual node, never reusing one that is in use. A pod
    gets the same offset into each family's range (198.19.1.7 and 2001:2:0:101::7)."""

    def __init__(
        self, nodes: list[VirtualNode], families: tuple[int, ...] = IP_FAMILIES_DEFAULT
    ) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.families = families
        self._by_uid: dict[str, tuple[str, int]] = {}  # uid -> (node, offset)
        self._taken: dict[str, set[int]] = {n.name: set() for n in nodes}

    def holds(self, node_name: str | None) -> bool:
        return node_name in self.nodes

    def assign(self, uid: str, pod: dict[str, Any]) -> tuple[str, ...] | None:
        """Addresses for a new pod, one per family (None when it already has them);
        raises when the node's pod CIDR is full."""
        node = self.nodes[pod["spec"]["nodeName"]]
        existing = (pod.get("status") or {}).get("podIP")
        if existing or uid in self._by_uid:
            if existing:
                self._record(uid, node.name, self._offset(node, existing))
            return None
        # .1 is the gateway on real nodes; keep the plan alike. The IPv4 range bounds
        # the offsets when the lab has it.
        first = 2
        last = min(min(c.num_addresses for c in node.pod_cidrs(self.families)) - 2, SEARCH)
        taken = self._taken[node.name]
        start = first + len(taken) % (last - first + 1)
        for offset in chain(range(start, last + 1), range(first, start)):
            if offset not in taken:
                self._record(uid, node.name, offset)
                return self._addresses(node, offset)
        raise RuntimeError(f"virtual node {node.name} has no free address")

    def _addresses(self, node: VirtualNode, offset: int) -> tuple[str, ...]:
        return tuple(str(cidr.network_address + offset) for cidr in node.pod_cidrs(self.families))

    @staticmethod
    def _offset(node: VirtualNode, address: str) -> int:
        ip = ip_address(address)
        cidr = node.pod_cidr if ip.version == 4 else node.pod_cidr6
        return int(ip) - int(cidr.network_address)

    def _record(self, uid: str, node: str, offset: int) -> None:
        self._by_uid[uid] = (node, offset)
        self._taken[node].add(offset)

    def release(self, uid: str) -> None:
        found = self._by_uid.pop(uid, None)
        if found is not None:
            self._taken[found[0]].discard(found[1])

    def host_ips(self, node: VirtualNode) -> tuple[str, ...]:
        """Virtual nodes have no underlay address; report each CIDR's gateway."""
        return self._addresses(node, 1)
