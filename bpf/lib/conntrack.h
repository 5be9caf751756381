/* A packet's connection, from the kernel's conntrack entry (skb->_nfct): the tuple's
 * addresses are a union nf_inet_addr at the same offsets in both families, of which an
 * IPv4 address uses the first 4 bytes. */
#ifndef PICKET_CONNTRACK_H
#define PICKET_CONNTRACK_H

/* One side (src or dst) of a conntrack tuple: address and port/ICMP id, big-endian. */
static __always_inline void tuple_side(void *tuple, __u32 addr_off, __u32 port_off,
                                       const int family, union inet_addr *addr, __u16 *port)
{
    __u16 raw = 0;
    if (family == FAMILY_IPV4) {
        __u32 ip = 0;
        read_kernel(&ip, sizeof(ip), tuple + addr_off);
        addr_from_ipv4(addr, ip);
    } else {
        read_kernel(addr, sizeof(*addr), tuple + addr_off);
    }
    read_kernel(&raw, sizeof(raw), tuple + port_off);
    *port = bpf_ntohs(raw);
}

/* Fills `f` from the connection `nfct` points at (only read for a NEW packet). */
static __always_inline void read_flow(void *skb, unsigned long nfct, const int family,
                                      struct flow *f)
{
    void *ct = (void *)(nfct & ~CTINFO_MASK);
    if (!ct) {
        f->untracked = untracked_reason(skb, family, f);
        return;
    }
    f->tracked = 1;
    f->new = (nfct & CTINFO_MASK) == CTINFO_NEW;
    if (!f->new)
        return;
    void *orig = ct + PICKET_OFF_CT_TUPLEHASH + PICKET_OFF_TH_TUPLE;
    void *reply = orig + PICKET_SIZE_TUPLEHASH;
    union inet_addr to_addr;
    __u16 to_port = 0;
    tuple_side(orig, PICKET_OFF_TUPLE_SRC_ADDR, PICKET_OFF_TUPLE_SRC_PORT, family, &f->saddr,
               &f->sport);
    tuple_side(orig, PICKET_OFF_TUPLE_DST_ADDR, PICKET_OFF_TUPLE_DST_PORT, family, &to_addr,
               &to_port);
    tuple_side(reply, PICKET_OFF_TUPLE_SRC_ADDR, PICKET_OFF_TUPLE_SRC_PORT, family, &f->daddr,
               &f->dport);
    read_kernel(&f->protocol, 1, orig + PICKET_OFF_TUPLE_PROTONUM);
    if (!addr_equal(&to_addr, &f->daddr) || to_port != f->dport) {
        f->service_addr = to_addr;
        f->service_port = to_port;
        f->dnat = 1;
    }
    __u32 mark = 0;
    read_kernel(&mark, sizeof(mark), ct + PICKET_OFF_CT_MARK);
    f->upstream = (mark & TRUSTED_CTMARK) != 0;
    if (f->protocol == IPPROTO_TCP) {
        __u8 state = 0;
        read_kernel(&state, 1, ct + PICKET_OFF_CT_TCP_STATE);
        f->syn = state == TCP_CONNTRACK_SYN_SENT;
    }
    if (f->protocol != IPPROTO_TCP && f->protocol != IPPROTO_UDP && f->protocol != 132) {
        /* ICMP and ICMPv6: the tuple holds an id and a type, not ports; a message that
         * is no error is policed as its own protocol, with port 0 (only a rule without
         * ports admits it). */
        f->sport = 0;
        f->dport = 0;
    }
}

#endif
