"""Lab manifests in a line each, and the backends every enforcement test runs on."""

from __future__ import annotations

from typing import Any

BACKENDS = ["iptables", "ebpf"]


def netpol(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def sel(**labels: str) -> dict[str, Any]:
    return {"matchLabels": labels}


def pods_peer(**labels: str) -> dict[str, Any]:
    return {"podSelector": sel(**labels)}


def ns_peer(**labels: str) -> dict[str, Any]:
    return {"namespaceSelector": sel(**labels)}
