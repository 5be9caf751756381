/* What netfilter hands a BPF program at the FORWARD hook, read with the running
 * kernel's struct layouts. BCC compiles against the distribution's 6.1 headers, which
 * predate BPF netfilter programs (6.4) and need not match this kernel's layouts: the
 * loader reads every member offset used here from the kernel's BTF
 * (agent/dataplane/ebpf/btf.py) and passes it as PICKET_OFF_*; the verifier checks each
 * load against the same BTF. */
#ifndef PICKET_KERNEL_H
#define PICKET_KERNEL_H

struct bpf_nf_ctx {
    void *state;  /* struct nf_hook_state */
    void *skb;    /* struct sk_buff */
};

#define NF_DROP 0
#define NF_ACCEPT 1

/* bpf_probe_read_kernel, called by its number: BCC replaces the name by the older
 * bpf_probe_read (which a BPF netfilter program may not call) when it cannot read the
 * kernel's symbol addresses, as in a container without CAP_SYSLOG on a node whose
 * kernel.perf_event_paranoid is above 1 (Debian's is 3). */
static long (*read_kernel)(void *dst, __u32 size, const void *unsafe_ptr) =
    (void *)BPF_FUNC_probe_read_kernel;

/* enum ip_conntrack_info: the low bits of skb->_nfct. */
#define CTINFO_NEW 2
#define CTINFO_MASK 7UL
/* enum tcp_conntrack: a connection's first packet was a SYN. */
#define TCP_CONNTRACK_SYN_SENT 1

/* A connection attempt as the kernel's connection tracking saw it: the client's own
 * address (the original source: masquerade happens after FORWARD) and the backend's
 * (the reply's source: kube-proxy's DNAT happened before). */
struct flow {
    __u32 saddr;          /* network byte order */
    __u32 daddr;
    __u16 sport;          /* host byte order */
    __u16 dport;
    __u32 service_addr;   /* where the client sent it, when DNAT changed that; else 0 */
    __u16 service_port;
    __u8 protocol;
    __u8 tracked;         /* 0: no conntrack entry (INVALID or untracked) */
    __u8 untracked;       /* then the drop reason: invalid, unparsed or fragment */
    __u8 new;             /* the connection's first packet(s): judged by policy */
    __u8 syn;             /* TCP: the connection began with a SYN */
    __u8 upstream;        /* another node DNATed and judged it (the transit mark) */
};

static __always_inline __u32 hook_ifindex(void *state, __u32 offset)
{
    void *dev = 0;
    __u32 ifindex = 0;
    read_kernel(&dev, sizeof(dev), state + offset);
    if (dev)
        read_kernel(&ifindex, sizeof(ifindex), dev + PICKET_OFF_DEV_IFINDEX);
    return ifindex;
}

static __always_inline unsigned long skb_nfct(void *skb)
{
    unsigned long nfct = 0;
    read_kernel(&nfct, sizeof(nfct), skb + PICKET_OFF_SKB_NFCT);
    return nfct;
}

/* One side (src or dst) of a conntrack tuple: address and port/ICMP id, big-endian. */
static __always_inline void tuple_side(void *tuple, __u32 addr_off, __u32 port_off,
                                       __u32 *addr, __u16 *port)
{
    __u16 raw = 0;
    read_kernel(addr, sizeof(*addr), tuple + addr_off);
    read_kernel(&raw, sizeof(raw), tuple + port_off);
    *port = bpf_ntohs(raw);
}

/* Where the packet's IP header starts (a kernel address, read with probe reads). */
static __always_inline unsigned char *skb_ip_header(void *skb)
{
    unsigned char *head = 0;
    __u16 network = 0;
    read_kernel(&head, sizeof(head), skb + PICKET_OFF_SKB_HEAD);
    read_kernel(&network, sizeof(network), skb + PICKET_OFF_SKB_NETWORK_HEADER);
    return head + network;
}

/* The fixed part of an IPv4 header. The kernel keeps it in linear data from ip_rcv on
 * (which also checked its version, length and checksum): this is the only part of a
 * packet the program reads itself; conntrack read the transport header, with
 * skb_header_pointer, wherever it lay. */
struct ip_fields {
    __u8 version_ihl;
    __u8 tos;
    __u16 tot_len;        /* network byte order, like the rest */
    __u16 id;
    __u16 frag_off;
    __u8 ttl;
    __u8 protocol;
    __u16 check;
    __u32 saddr;
    __u32 daddr;
};

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

/* 0, or the error of the read (then `ip` is zeroes: no address, no protocol). */
static __always_inline long skb_ip_fields(void *skb, struct ip_fields *ip)
{
    long err = read_kernel(ip, sizeof(*ip), skb_ip_header(skb));
    if (err)
        __builtin_memset(ip, 0, sizeof(*ip));
    return err;
}

/* The smallest transport header conntrack accepts for `protocol` (0: no minimum). */
static __always_inline __u32 transport_minimum(__u8 protocol)
{
    switch (protocol) {
    case IPPROTO_TCP:
        return 20;
    case IPPROTO_UDP:
    case IPPROTO_ICMP:
        return 8;
    case 132: /* SCTP's common header */
        return 12;
    }
    return 0;
}

/* Why conntrack holds no entry for a packet, as far as its IP header tells: a fragment
 * (the hook asks the kernel to reassemble before it, so one here means that was
 * bypassed), a header that does not parse (a transport header shorter than its
 * protocol's minimum, or an IP header the program could not read), or else conntrack's
 * own judgment: INVALID (a bad checksum, TCP flags no state admits, ...). */
static __always_inline __u8 untracked_reason(void *skb, struct flow *f)
{
    struct ip_fields ip;
    if (skb_ip_fields(skb, &ip))
        return REASON_DROP_UNPARSED;
    /* For the drop log: which pod it was for (no ports: conntrack read none). */
    f->protocol = ip.protocol;
    f->saddr = ip.saddr;
    f->daddr = ip.daddr;
    __u32 header = (ip.version_ihl & 0xF) * 4;
    __u32 total = bpf_ntohs(ip.tot_len);
    if ((ip.version_ihl >> 4) != 4 || header < 20 || total < header)
        return REASON_DROP_UNPARSED;
    if (bpf_ntohs(ip.frag_off) & (IP_MF | IP_OFFSET))
        return REASON_DROP_FRAGMENT;
    if (total - header < transport_minimum(ip.protocol))
        return REASON_DROP_UNPARSED;
    return REASON_DROP_INVALID;
}

/* Fills `f` from the connection `nfct` points at (only read for a NEW packet). */
static __always_inline void read_flow(void *skb, unsigned long nfct, struct flow *f)
{
    void *ct = (void *)(nfct & ~CTINFO_MASK);
    if (!ct) {
        f->untracked = untracked_reason(skb, f);
        return;
    }
    f->tracked = 1;
    f->new = (nfct & CTINFO_MASK) == CTINFO_NEW;
    if (!f->new)
        return;
    void *orig = ct + PICKET_OFF_CT_TUPLEHASH + PICKET_OFF_TH_TUPLE;
    void *reply = orig + PICKET_SIZE_TUPLEHASH;
    __u32 to_addr = 0;
    __u16 to_port = 0;
    tuple_side(orig, PICKET_OFF_TUPLE_SRC_ADDR, PICKET_OFF_TUPLE_SRC_PORT, &f->saddr, &f->sport);
    tuple_side(orig, PICKET_OFF_TUPLE_DST_ADDR, PICKET_OFF_TUPLE_DST_PORT, &to_addr, &to_port);
    tuple_side(reply, PICKET_OFF_TUPLE_SRC_ADDR, PICKET_OFF_TUPLE_SRC_PORT, &f->daddr, &f->dport);
    read_kernel(&f->protocol, 1, orig + PICKET_OFF_TUPLE_PROTONUM);
    if (to_addr != f->daddr || to_port != f->dport) {
        f->service_addr = to_addr;
        f->service_port = to_port;
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
        f->sport = 0; /* ICMP: the tuple holds an id and a type, not ports */
        f->dport = 0;
    }
}

#endif
