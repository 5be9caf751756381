/* One packet, one endpoint, one direction: the whole decision. */
#ifndef PICKET_VERDICT_H
#define PICKET_VERDICT_H

static __always_inline int picket_verdict(struct __sk_buff *skb, __u8 direction)
{
    struct packet pkt = {};
    if (!parse_packet(skb, &pkt)) {
        count_packet(direction, REASON_ALLOWED_OTHER);
        return TC_ACT_OK;
    }
    __u32 ifindex = skb->ifindex;
    struct endpoint_value *ep = picket_endpoints.lookup(&ifindex);
    if (!ep)
        return TC_ACT_OK; /* not (yet) a local endpoint */
    struct addr_value peer = peer_identity(direction == DIR_EGRESS ? pkt.daddr : pkt.saddr);
    /* Traffic between a pod and its own node is always allowed. */
    if (peer.pod_identity == IDENTITY_HOST) {
        count_packet(direction, REASON_ALLOWED_HOST);
        return TC_ACT_OK;
    }
    if (pkt.icmp_error) {
        count_packet(direction, REASON_ALLOWED_OTHER);
        return TC_ACT_OK;
    }
    /* Replies and later packets of an allowed connection are not new connections. */
    if (ct_established(&pkt, ep->id, direction)) {
        count_packet(direction, REASON_ALLOWED_CT);
        return TC_ACT_OK;
    }
    __u32 isolated = direction == DIR_EGRESS ? (ep->flags & EP_EGRESS_ISOLATED)
                                             : (ep->flags & EP_INGRESS_ISOLATED);
    int opens = ct_may_open(&pkt);
    if (!isolated) {
        if (opens)
            ct_create(&pkt, ep->id, direction);
        count_packet(direction, REASON_ALLOWED_NOT_ISOLATED);
        return TC_ACT_OK;
    }
    if (!opens) {
        /* Not a connection attempt (a cut connection's tail): counted, not logged. */
        count_drop(ep->id, direction, REASON_DROP_NO_SYN);
        return TC_ACT_SHOT;
    }
    if (policy_allows(ep, direction, &peer, &pkt)) {
        ct_create(&pkt, ep->id, direction);
        count_packet(direction, REASON_ALLOWED_POLICY);
        return TC_ACT_OK;
    }
    if (ep->flags & EP_AUDIT) {
        /* Audit mode: report, then admit as policy would have (replies and later
         * packets pass by CT, so the connection is reported once). */
        report_drop(skb, &pkt, ep->id, direction, REASON_AUDIT_POLICY);
        ct_create(&pkt, ep->id, direction);
        return TC_ACT_OK;
    }
    report_drop(skb, &pkt, ep->id, direction, REASON_DROP_POLICY);
    return TC_ACT_SHOT;
}

#endif
