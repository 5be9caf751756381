"""The lab: a multi-node cluster in network namespaces on one host."""

# The lab's processes that never import the agent package first (the API server, the
# kubelet) hash IPv6 addresses too: the same hash, installed before any of it runs
# (agent/model/address_hash.py). Importing agent.model runs agent/__init__, which
# installs it.
import agent.model.address_hash  # noqa: F401
