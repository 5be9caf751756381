/* One packet at the FORWARD hook: the egress policy of the pod it leaves (by input
 * interface) and the ingress policy of the pod it enters (by output interface); a new
 * connection this node DNATed to a pod of another node, that pod's ingress policy (by
 * the backend's address in the transit map). Later packets and replies of a connection
 * the kernel's conntrack already holds pass; a new connection is judged on its real
 * endpoints (see struct flow). */
#ifndef PICKET_VERDICT_H
#define PICKET_VERDICT_H

/* 1 when `direction`'s policy of `ep` admits the new connection `f`. */
static __always_inline int direction_admits(struct flow *f, const int family,
                                            struct endpoint_value *ep, __u8 direction,
                                            __u32 ifindex)
{
    __u32 isolated = direction == DIR_EGRESS ? (ep->flags & EP_EGRESS_ISOLATED)
                                             : (ep->flags & EP_INGRESS_ISOLATED);
    if (!isolated) {
        count_packet(family, direction, REASON_ALLOWED_NOT_ISOLATED);
        return 1;
    }
    if (!f->tracked) {
        /* Nothing to judge it as, from any peer (iptables drops INVALID first in a
         * direction chain too); the drop log folds these per pod and direction. */
        report_drop(f, family, ep->id, direction, f->untracked, ifindex);
        return 0;
    }
    union inet_addr *peer_addr = direction == DIR_EGRESS ? &f->daddr : &f->saddr;
    struct addr_value peer = peer_identity(peer_addr, family);
    /* Traffic between a pod and its own node is always allowed. */
    if (peer.pod_identity == IDENTITY_HOST) {
        count_packet(family, direction, REASON_ALLOWED_HOST);
        return 1;
    }
    if (direction == DIR_INGRESS && f->upstream) {
        /* Masqueraded by the node that DNATed it, which judged this very ingress on
         * the client's own address (agent/dataplane/transit_mark.py). */
        count_packet(family, direction, REASON_ALLOWED_UPSTREAM);
        return 1;
    }
    if (f->protocol == IPPROTO_TCP && !f->syn) {
        /* Not a connection attempt (a cut connection's tail): counted, not logged. */
        count_drop(family, ep->id, direction, REASON_DROP_NO_SYN);
        return 0;
    }
    if (policy_allows(ep, direction, &peer, f)) {
        count_packet(family, direction, REASON_ALLOWED_POLICY);
        return 1;
    }
    if (ep->flags & EP_AUDIT) {
        /* Audit mode: report, then admit as policy would have (later packets pass by
         * conntrack, so the connection is reported once). */
        report_drop(f, family, ep->id, direction, REASON_AUDIT_POLICY, ifindex);
        return 1;
    }
    report_drop(f, family, ep->id, direction, REASON_DROP_POLICY, ifindex);
    return 0;
}

/* A packet between no local pods: a new connection this node DNATed to a transit
 * endpoint is judged on that pod's ingress; anything else passes (its own node
 * judges it). */
static __always_inline int transit_verdict(struct bpf_nf_ctx *ctx, const int family,
                                           __u32 to_if)
{
    unsigned long nfct = skb_nfct(ctx->skb);
    if (!(nfct & ~CTINFO_MASK) || (nfct & CTINFO_MASK) != CTINFO_NEW)
        return NF_ACCEPT;
    struct flow f = {};
    read_flow(ctx->skb, nfct, family, &f);
    if (!f.dnat)
        return NF_ACCEPT; /* not DNATed here: routed through */
    struct transit_key backend;
    __builtin_memcpy(backend.addr, &f.daddr, sizeof(backend.addr));
    struct endpoint_value *transit = picket_transit.lookup(&backend);
    if (!transit)
        return NF_ACCEPT;
    struct transit_home_key home = {.endpoint = transit->id};
    __builtin_memcpy(home.addr, &f.saddr, sizeof(home.addr));
    if (picket_transit_home.lookup(&home)) {
        count_packet(family, DIR_INGRESS, REASON_ALLOWED_HOST); /* from the pod's own node */
        return NF_ACCEPT;
    }
    return direction_admits(&f, family, transit, DIR_INGRESS, to_if) ? NF_ACCEPT : NF_DROP;
}

/* 1 when `addr` is in one of the node's pod CIDRs (of either family). */
static __always_inline int in_pod_cidr(const union inet_addr *addr)
{
    struct addr_key key = {.prefixlen = 128};
    __builtin_memcpy(key.addr, addr, sizeof(key.addr));
    return picket_pod_cidrs.lookup(&key) != 0;
}

/* A pod of this node the agent has not programmed yet: an address of the node's pod
 * CIDRs on an interface that is no local endpoint's (a pod between its CNI ADD and its
 * programming, or started while the agent is down). Its traffic is dropped from the
 * first packet, so that it meets its policy or nothing; counted per direction (it has
 * no endpoint number, nor a namespace the datapath knows) and reported to the drop
 * log. 1 when dropped. */
static __always_inline int unprogrammed_drop(struct bpf_nf_ctx *ctx, const int family,
                                             int from_known, int to_known, __u32 from_if,
                                             __u32 to_if)
{
    struct ip_summary ip;
    if (read_ip_summary(ctx->skb, family, &ip))
        return 0; /* judged later (unparsed) where a pod is known; else not a pod's */
    __u8 direction;
    __u32 ifindex;
    if (!from_known && in_pod_cidr(&ip.saddr)) {
        direction = DIR_EGRESS;
        ifindex = from_if;
    } else if (!to_known && in_pod_cidr(&ip.daddr)) {
        direction = DIR_INGRESS;
        ifindex = to_if;
    } else {
        return 0;
    }
    count_packet(family, direction, REASON_DROP_UNPROGRAMMED);
    struct flow claimed = {.saddr = ip.saddr, .daddr = ip.daddr, .protocol = ip.protocol};
    send_drop_event(&claimed, family, UNPROGRAMMED_ENDPOINT, direction,
                    REASON_DROP_UNPROGRAMMED, ifindex);
    return 1;
}

/* The verdict of one packet of `family` (a constant of each entry point: the compiler
 * keeps only that family's header reads and address conversions). */
static __always_inline int picket_verdict(struct bpf_nf_ctx *ctx, const int family)
{
    void *state = ctx->state;
    __u32 from_if = hook_ifindex(state, PICKET_OFF_STATE_IN);
    __u32 to_if = hook_ifindex(state, PICKET_OFF_STATE_OUT);
    struct endpoint_value *from_pod = picket_endpoints.lookup(&from_if);
    struct endpoint_value *to_pod = picket_endpoints.lookup(&to_if);
    /* The barrier keeps clang from testing both at once with an OR of the two
     * pointers, which the verifier refuses. */
    asm volatile("" : "+r"(from_pod));
    if ((!from_pod || !to_pod) && unprogrammed_drop(ctx, family, from_pod != 0, to_pod != 0,
                                                    from_if, to_if))
        return NF_DROP;
    if (!from_pod && !to_pod)
        return transit_verdict(ctx, family, to_if); /* between no local pods */
    /* Identity comes from the source address: a pod may only send from its own, or it
     * could pose as any peer a policy admits, or ride another pod's connection. So
     * this comes before everything else, for every packet a pod sends. */
    if (from_pod) {
        struct ip_summary ip;
        read_ip_summary(ctx->skb, family, &ip);
        struct source_key source = {.ifindex = from_if};
        __builtin_memcpy(source.addr, &ip.saddr, sizeof(source.addr));
        /* An IPv6 source ::ffff:a.b.c.d is not the pod's IPv4 address a.b.c.d, whose
         * key it has. */
        int mapped = family == FAMILY_IPV6 && addr_is_ipv4_mapped(&ip.saddr);
        if (mapped || !picket_sources.lookup(&source)) {
            /* Reported like a policy drop (the drop log folds them per pod). */
            struct flow claimed = {.saddr = ip.saddr, .daddr = ip.daddr,
                                   .protocol = ip.protocol};
            report_drop(&claimed, family, from_pod->id, DIR_EGRESS, REASON_DROP_SPOOFED,
                        from_if);
            return NF_DROP;
        }
    }
    /* In and out of the same pod's interface: the pod reaching itself through a
     * Service that chose it (hairpin), which is always allowed. */
    if (from_if == to_if) {
        count_packet(family, DIR_EGRESS, REASON_ALLOWED_HOST);
        return NF_ACCEPT;
    }
    unsigned long nfct = skb_nfct(ctx->skb);
    struct flow f = {};
    read_flow(ctx->skb, nfct, family, &f);
    /* Replies and later packets of a connection are not new connections; conntrack
     * also tells which ICMP errors relate to one (RELATED). */
    if (f.tracked && !f.new) {
        if (from_pod)
            count_packet(family, DIR_EGRESS, REASON_ALLOWED_CT);
        if (to_pod)
            count_packet(family, DIR_INGRESS, REASON_ALLOWED_CT);
        return NF_ACCEPT;
    }
    /* A TCP connection whose first packet is no SYN: conntrack picked it up
     * mid-stream, typically one whose entry a narrowing change removed. Which end is
     * the client is then unknown: picked up from the server's side (on the server's
     * node, when the client is on another) it would be taken for a connection the
     * server opened, often allowed, and the cut connection would live on. So it is
     * dropped where a local pod is isolated in either direction; between pods no
     * policy isolates it passes, as if Picket were not there. */
    if (f.tracked && f.protocol == IPPROTO_TCP && !f.syn) {
        __u32 isolated = EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED;
        if (to_pod && (to_pod->flags & isolated)) {
            count_drop(family, to_pod->id, DIR_INGRESS, REASON_DROP_NO_SYN);
            return NF_DROP;
        }
        if (from_pod && (from_pod->flags & isolated)) {
            count_drop(family, from_pod->id, DIR_EGRESS, REASON_DROP_NO_SYN);
            return NF_DROP;
        }
    }
    if (from_pod && !direction_admits(&f, family, from_pod, DIR_EGRESS, from_if))
        return NF_DROP;
    if (to_pod && !direction_admits(&f, family, to_pod, DIR_INGRESS, to_if))
        return NF_DROP;
    return NF_ACCEPT;
}

#endif
