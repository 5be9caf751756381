"""Cluster DNS in the lab: dnsmasq as the backend of `kube-system/kube-dns`, the records
it serves, and `picket lab resolve`."""
