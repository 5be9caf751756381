"""A cluster with a transit endpoint: the model cluster with Service y/web, balanced
across nodes (NodePort, externalTrafficPolicy Cluster), whose slice names y/c on
node-2; isolated, y/c is a transit endpoint of node-1."""

from __future__ import annotations

from typing import Any

from tests.support.builders import endpoint, endpoint_slice, model_cluster, policy, service

# y/c (198.18.2.13) is on node-2; y/a (198.18.1.11) on node-1.
ISOLATE_Y = policy("y", "isolate", {"podSelector": {}, "policyTypes": ["Ingress"]})
C = endpoint("198.18.2.13", "y/c", node_name="node-2")


def web(*objs: dict[str, Any], endpoints: list | None = None, **service_args: Any) -> list:
    """The model cluster with Service y/web and its slice (y/c by default)."""
    return [
        *model_cluster(),
        service("y", "web", **service_args),
        endpoint_slice("y", "web-1", "web", [C] if endpoints is None else endpoints),
        *objs,
    ]
