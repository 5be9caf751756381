"""Backends: apply an IR to the kernel (iptables+ipset, eBPF). No Kubernetes API here."""
