"""Chain names as kube-proxy's iptables mode computes them (pkg/proxy/iptables), so a
chain in the lab is named what it would be named on a real node for the same Service:
a prefix and the first 16 characters of base32(sha256(...))."""

from __future__ import annotations

import base64
import hashlib

SERVICES = "KUBE-SERVICES"
EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
NODEPORTS = "KUBE-NODEPORTS"
POSTROUTING = "KUBE-POSTROUTING"
MARK_MASQ = "KUBE-MARK-MASQ"
FORWARD = "KUBE-FORWARD"

CLUSTER_POLICY_PREFIX = "KUBE-SVC-"
LOCAL_POLICY_PREFIX = "KUBE-SVL-"
EXTERNAL_PREFIX = "KUBE-EXT-"
ENDPOINT_PREFIX = "KUBE-SEP-"
FIREWALL_PREFIX = "KUBE-FW-"  # never made here (no LoadBalancer), swept all the same
# The per-service chains, which a sync deletes when no service uses them any more.
SERVICE_CHAIN_PREFIXES = (
    CLUSTER_POLICY_PREFIX,
    LOCAL_POLICY_PREFIX,
    EXTERNAL_PREFIX,
    ENDPOINT_PREFIX,
    FIREWALL_PREFIX,
)


def _hash16(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """`service_port_name` is `ns/name` or `ns/name:port-name`; protocol in lower case."""
    return _hash16(service_port_name + protocol.lower())


def cluster_policy_chain(service_port_name: str, protocol: str) -> str:
    return CLUSTER_POLICY_PREFIX + port_proto_hash(service_port_name, protocol)


def local_policy_chain(service_port_name: str, protocol: str) -> str:
    return LOCAL_POLICY_PREFIX + port_proto_hash(service_port_name, protocol)


def external_chain(service_port_name: str, protocol: str) -> str:
    return EXTERNAL_PREFIX + port_proto_hash(service_port_name, protocol)


def endpoint_chain(service_port_name: str, protocol: str, endpoint: str) -> str:
    """`endpoint` is `ip:port`."""
    return ENDPOINT_PREFIX + _hash16(service_port_name + protocol.lower() + endpoint)


def is_service_chain(name: str) -> bool:
    return name.startswith(SERVICE_CHAIN_PREFIXES)


def probability(n: int) -> str:
    """The statistic match's probability for the first of `n` remaining endpoints,
    formatted as kube-proxy formats it (%0.10f)."""
    return f"{1.0 / n:0.10f}"
