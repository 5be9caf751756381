"""ClusterIPs and NodePorts, allocated as kube-apiserver's Service registry does.

Which Service holds which address and port is a view of the stored Services: `observe`
is called with every stored version (the API server subscribes it to its store and feeds
it what the store holds at start), so a deleted Service, or one whose type no longer
needs node ports, frees them without a release step that could be missed.

As upstream's allocators, each range keeps a static band at its low end (256 addresses
of a /20, 86 node ports of 30000-32767) that dynamic allocation uses only when the rest is
full, so addresses people pick by hand (the kube-dns ClusterIP, .10) stay free for them.
Dynamic allocation takes the lowest free value, so a lab's addresses are reproducible."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from itertools import chain
from typing import Any

from agent.model.errors import FieldErrors
from lab.apiserver import status as st
from lab.apiserver.resources import BY_PATH
from lab.apiserver.service_defaults import (
    EXTERNAL_NAME,
    LOAD_BALANCER,
    int_or_none,
    is_headless,
    needs_health_check,
    needs_node_ports,
    ports_of,
    spec_of,
)

ServiceKey = tuple[str, str]  # (namespace, name)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_SERVICES = BY_PATH[("", "v1", "services")]


def static_band(size: int, step: int, maximum: int) -> int:
    """calculateRangeOffset: min(max(16, size/step), maximum), none for tiny ranges."""
    return 0 if size <= 16 else min(max(16, size // step), maximum)


class Pool:
    """Integers first..last, each held by at most one Service."""

    def __init__(self, first: int, last: int, static: int) -> None:
        self.first, self.last, self.static = first, last, static
        self.holders: dict[int, ServiceKey] = {}

    def __contains__(self, value: int) -> bool:
        return self.first <= value <= self.last

    def free_for(self, value: int, key: ServiceKey) -> bool:
        return self.holders.get(value, key) == key

    def next_free(self, key: ServiceKey, taken: set[int]) -> int | None:
        dynamic_start = self.first + self.static
        for value in chain(range(dynamic_start, self.last + 1), range(self.first, dynamic_start)):
            if value not in taken and self.free_for(value, key):
                return value
        return None

    def hold(self, key: ServiceKey, values: set[int]) -> None:
        for value in [v for v, holder in self.holders.items() if holder == key]:
            del self.holders[value]
        for value in values:
            if value in self:
                self.holders[value] = key


class ServiceAllocator:
    def __init__(self, cidrs: Sequence[IPNetwork], node_ports: range) -> None:
        """One ClusterIP range per family, the first the cluster's default family."""
        self.cidrs = {_family(c): c for c in cidrs}
        self.pools = {
            family: Pool(
                int(cidr.network_address) + 1,
                int(cidr.broadcast_address) - (1 if cidr.version == 4 else 0),
                static_band(cidr.num_addresses, 16, 256),
            )
            for family, cidr in self.cidrs.items()
        }
        self.ports = Pool(
            node_ports.start, node_ports.stop - 1, static_band(len(node_ports), 32, 128)
        )
        self.port_range = f"{node_ports.start}-{node_ports.stop - 1}"

    def observe(self, key: ServiceKey, service: dict[str, Any] | None) -> None:
        """Record what a stored Service holds (None: it is gone)."""
        spec = (service or {}).get("spec")
        spec = spec if isinstance(spec, dict) else {}
        held = [_address(ip) for ip in spec.get("clusterIPs") or []]
        for family, pool in self.pools.items():
            pool.hold(key, {int(ip) for ip in held if ip is not None and _family(ip) == family})
        ports = {int_or_none(p.get("nodePort")) for p in ports_of(spec)}
        ports.add(int_or_none(spec.get("healthCheckNodePort")))
        self.ports.hold(key, {p for p in ports if p})

    def allocate(self, service: dict[str, Any], key: ServiceKey) -> None:
        """Fill in what the Service needs and lacks; a requested value outside its range
        or held by another Service is a 422 naming the field, a full range a 500."""
        spec = spec_of(service)
        errs = FieldErrors()
        if spec.get("type") != EXTERNAL_NAME and not is_headless(spec):
            self._cluster_ip(spec, key, errs)
        if not errs and needs_node_ports(spec):
            self._node_ports(spec, key, errs)
        if not errs and needs_health_check(spec):
            self._health_check_port(spec, key, errs)
        if errs:
            name = (service.get("metadata") or {}).get("name", "")
            raise st.invalid(_SERVICES, name, errs)

    def _cluster_ip(self, spec: dict[str, Any], key: ServiceKey, errs: FieldErrors) -> None:
        """An address per family of spec.ipFamilies (init_ip_families filled it in), in
        its order: the requested one where clusterIPs names it, else the next free."""
        ips = spec.get("clusterIPs")
        requested = list(ips) if isinstance(ips, list) and ips else []
        if not requested and spec.get("clusterIP"):
            requested = [spec["clusterIP"]]
        families = spec.get("ipFamilies")
        if not isinstance(families, list) or not families:
            families = [next(iter(self.pools))]
        allocated: list[str] = []
        for i, family in enumerate(families):
            pool = self.pools.get(family)
            if pool is None:
                return  # init_ip_families reports a family the cluster does not serve
            if i >= len(requested) or not requested[i]:
                found = pool.next_free(key, set())
                if found is None:
                    raise _full("failed to allocate a serviceIP: range is full")
                allocated.append(str(ipaddress.ip_address(found)))
                continue
            wanted = requested[i]
            address = _address(wanted)
            if address is None or _family(address) != family:
                return  # not an address of the family: validation says so
            problem = None
            if int(address) not in pool:
                problem = (
                    f"the provided IP ({wanted}) is not in the valid range. "
                    f"The range of valid IPs is {self.cidrs[family]}"
                )
            elif not pool.free_for(int(address), key):
                problem = "provided IP is already allocated"
            if problem:
                errs.invalid(
                    "spec.clusterIPs", ips or [wanted], f"failed to allocate IP {wanted}: {problem}"
                )
                return
            allocated.append(wanted)
        if allocated != requested:  # as asked for, it stays as given (validation judges)
            spec["clusterIP"] = allocated[0]
            spec["clusterIPs"] = allocated

    def _node_ports(self, spec: dict[str, Any], key: ServiceKey, errs: FieldErrors) -> None:
        ports = ports_of(spec)
        # allocateLoadBalancerNodePorts false: no new ports, requested ones still held.
        allocate_new = not (
            spec.get("type") == LOAD_BALANCER and spec.get("allocateLoadBalancerNodePorts") is False
        )
        requested = {int_or_none(p.get("nodePort")) for p in ports} - {None, 0}
        by_number: dict[int | None, int] = {}
        for i, port in enumerate(ports):
            if port.get("nodePort") is not None and int_or_none(port["nodePort"]) is None:
                continue  # not a number: validation says so
            number = int_or_none(port.get("port"))
            # One service port number on two protocols shares one node port.
            wanted = (
                port.get("nodePort") or by_number.get(number) or _requested(ports[i + 1 :], number)
            )
            if wanted:
                path = f"spec.ports[{i}].nodePort"
                shared = any(held == wanted and n != number for n, held in by_number.items())
                if self._port_problem(wanted, key, errs, path, shared):
                    return
            elif allocate_new:
                wanted = self._next_port(key, requested | set(by_number.values()))
            else:
                continue
            port["nodePort"] = by_number[number] = wanted

    def _health_check_port(self, spec: dict[str, Any], key: ServiceKey, errs: FieldErrors) -> None:
        given = spec.get("healthCheckNodePort")
        taken = {int_or_none(p.get("nodePort")) for p in ports_of(spec)} - {None}
        if int_or_none(given):
            path = "spec.healthCheckNodePort"
            self._port_problem(given, key, errs, path, given in taken)
        elif given in (None, 0):
            spec["healthCheckNodePort"] = self._next_port(key, taken)

    def _port_problem(
        self, port: int, key: ServiceKey, errs: FieldErrors, path: str, used_here: bool
    ) -> bool:
        if port not in self.ports:
            errs.invalid(
                path,
                port,
                "provided port is not in the valid range. "
                f"The range of valid ports is {self.port_range}",
            )
        elif used_here or not self.ports.free_for(port, key):
            errs.invalid(path, port, "provided port is already allocated")
        return bool(errs)

    def _next_port(self, key: ServiceKey, taken: set[int]) -> int:
        found = self.ports.next_free(key, taken)
        if found is None:
            raise _full("failed to allocate a nodePort: range is full")
        return found


def _requested(later: list[dict[str, Any]], number: int | None) -> int | None:
    """A node port requested further down for the same service port number."""
    for other in later:
        if int_or_none(other.get("port")) == number and int_or_none(other.get("nodePort")):
            return other["nodePort"]
    return None


def _address(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _family(what: IPNetwork | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return "IPv4" if what.version == 4 else "IPv6"


def _full(message: str) -> st.ApiError:
    return st.ApiError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )
