"""Picket: a per-node Kubernetes NetworkPolicy enforcer."""

__version__ = "0.1.0"
