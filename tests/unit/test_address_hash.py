"""IPv6 addresses of a cluster's address plan hash apart (agent/model/address_hash.py)."""

from ipaddress import IPv6Address, ip_address

import agent  # noqa: F401  (installs the hash, as every agent process does)
from agent.model.address_hash import installed


def _lab_plan(count: int) -> list[IPv6Address]:
    """Pod addresses as the lab numbers them: 2001:2:0:<node>::<n>, 250 per node."""
    return [ip_address(f"2001:2:0:{1 + i // 250:x}::{1 + i % 250:x}") for i in range(count)]


def test_the_package_installs_the_hash():
    assert installed()


def test_pod_addresses_of_many_nodes_hash_apart():
    addresses = _lab_plan(10_000)
    # CPython's own hash gives these 560 distinct values (the integer folds modulo
    # 2**61 - 1); a hash of the 16 bytes, all but a chance few.
    assert len({hash(a) for a in addresses}) >= 0.99 * len(addresses)


def test_equal_addresses_hash_equal_and_containers_find_them():
    addresses = _lab_plan(1_000)
    table = {a: str(a) for a in addresses}
    for a in addresses:
        again = IPv6Address(str(a))  # another object, the same address
        assert hash(again) == hash(a)
        assert table[again] == str(a)
    scoped = IPv6Address("fe80::1%eth0")
    assert scoped != IPv6Address("fe80::1") and scoped == IPv6Address("fe80::1%eth0")
    assert hash(scoped) == hash(IPv6Address("fe80::1%eth0"))
