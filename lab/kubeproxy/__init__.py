"""The lab kube-proxy: kube-proxy's iptables mode (v1.32 layout) in every node namespace.

It reads Services and EndpointSlices only (never pods), as the real one does, and
programs the node's nat and filter tables with one `iptables-restore --noflush`.

    objects.py    API dicts -> ServicePort and Endpoint (pure)
    topology.py   which endpoints a service port uses on this node (pure)
    names.py      chain names as kube-proxy hashes them (pure)
    render.py     the whole ruleset and its iptables-restore text (pure)
    status.py     the status file other lab parts wait on
    kernel.py     iptables-save/restore, jump rules, sysctls
    conntrack.py  stale UDP conntrack entries
    proxy.py      list+watch, coalesced syncs
"""
