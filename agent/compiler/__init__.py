"""Pure compilation of cluster state into a backend-neutral IR for one node."""
