"""Lab manifests in a line each, and the backends every enforcement test runs on."""

from __future__ import annotations

from typing import Any

from tests.support.builders import policy

BACKENDS = ["iptables", "ebpf"]


# The lab suites' name for the one NetworkPolicy builder.
netpol = policy


def sel(**labels: str) -> dict[str, Any]:
    return {"matchLabels": labels}


def pods_peer(**labels: str) -> dict[str, Any]:
    return {"podSelector": sel(**labels)}


def ns_peer(**labels: str) -> dict[str, Any]:
    return {"namespaceSelector": sel(**labels)}
