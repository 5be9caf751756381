"""The agent's Prometheus metrics and its health endpoints (docs/metrics.md)."""
