"""Picket: a per-node Kubernetes NetworkPolicy enforcer."""

from agent.model.address_hash import install as _install_address_hash

# Before any module of the package hashes an IPv6 address (agent/model/address_hash.py).
_install_address_hash()

__version__ = "0.1.0"
