"""The lab: a multi-node cluster in network namespaces on one host."""
