/* The policy question, in at most four lookups whatever the number of policies: the
 * peer's pod identity, its ipBlock prefix identity, and "any peer", each an LPM lookup
 * over (endpoint, direction, identity, protocol, port); then, for egress rules with
 * named ports, the exact (endpoint, destination, protocol, port). */
#ifndef PICKET_POLICY_H
#define PICKET_POLICY_H

/* Addresses are 16 bytes in every family (IPv4 mapped), so a whole one is 128 bits. An
 * IPv6 packet's ::ffff:a.b.c.d is no peer at all (WORLD, no ipBlock): else a host that
 * sends IPv6 from a pod's IPv4 address so written would pass as that pod. */
static __always_inline struct addr_value peer_identity(const union inet_addr *addr,
                                                       const int family)
{
    struct addr_value none = {.pod_identity = IDENTITY_WORLD, .cidr_identity = 0};
    if (family == FAMILY_IPV6 && addr_is_ipv4_mapped(addr))
        return none;
    struct addr_key key = {.prefixlen = 128};
    __builtin_memcpy(key.addr, addr, sizeof(key.addr));
    struct addr_value *found = picket_addr.lookup(&key);
    return found ? *found : none;
}

static __always_inline int policy_lookup(__u32 endpoint, __u8 direction, __u32 identity,
                                         struct flow *pkt)
{
    struct policy_key key = {.prefixlen = 120};
    __u32 endpoint_be = bpf_htonl(endpoint);
    __u32 identity_be = bpf_htonl(identity);
    __builtin_memcpy(key.endpoint, &endpoint_be, 4);
    key.direction = direction;
    __builtin_memcpy(key.identity, &identity_be, 4);
    key.protocol = pkt->protocol;
    key.port[0] = pkt->dport >> 8;
    key.port[1] = pkt->dport & 0xff;
    return picket_policy.lookup(&key) != 0;
}

static __always_inline int policy_allows(struct endpoint_value *ep, __u8 direction,
                                         struct addr_value *peer, struct flow *pkt)
{
    if (policy_lookup(ep->id, direction, peer->pod_identity, pkt))
        return 1;
    if (peer->cidr_identity && policy_lookup(ep->id, direction, peer->cidr_identity, pkt))
        return 1;
    if (policy_lookup(ep->id, direction, IDENTITY_ANY, pkt))
        return 1;
    if (direction == DIR_EGRESS && (ep->flags & EP_NAMED_EGRESS)) {
        struct named_key key = {.endpoint = ep->id, .port = pkt->dport,
                                .protocol = pkt->protocol};
        __builtin_memcpy(key.daddr, &pkt->daddr, sizeof(key.daddr));
        if (picket_named.lookup(&key))
            return 1;
    }
    return 0;
}

#endif
