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

/* An address as the maps hold it: 16 bytes, IPv6 as it is, IPv4 mapped
 * (::ffff:a.b.c.d; bpf/picket.h). The words let the program copy and compare it in two
 * loads. */
union inet_addr {
    __u8 b[16];
    __u32 w[4];
    __u64 d[2];
};

/* `ip` (network byte order) as ::ffff:a.b.c.d. */
static __always_inline void addr_from_ipv4(union inet_addr *addr, __u32 ip)
{
    addr->d[0] = 0;
    addr->w[2] = bpf_htonl(0xffff);
    addr->w[3] = ip;
}

static __always_inline int addr_equal(const union inet_addr *a, const union inet_addr *b)
{
    return a->d[0] == b->d[0] && a->d[1] == b->d[1];
}

/* ::ffff:0:0/96: where the maps keep IPv4 addresses. In an IPv6 packet such an address
 * is no IPv4 address's (RFC 4291 2.5.5.2: they are not used on the wire). */
static __always_inline int addr_is_ipv4_mapped(const union inet_addr *addr)
{
    return addr->d[0] == 0 && addr->w[2] == bpf_htonl(0xffff);
}

/* A connection attempt as the kernel's connection tracking saw it: the client's own
 * address (the original source: masquerade happens after FORWARD) and the backend's
 * (the reply's source: kube-proxy's DNAT happened before). */
struct flow {
    union inet_addr saddr;
    union inet_addr daddr;
    union inet_addr service_addr; /* where the client sent it, when DNAT changed that */
    __u16 sport;          /* host byte order */
    __u16 dport;
    __u16 service_port;
    __u8 protocol;
    __u8 tracked;         /* 0: no conntrack entry (INVALID or untracked) */
    __u8 untracked;       /* then the drop reason: invalid, unparsed or fragment */
    __u8 new;             /* the connection's first packet(s): judged by policy */
    __u8 syn;             /* TCP: the connection began with a SYN */
    __u8 upstream;        /* another node DNATed and judged it (the transit mark) */
    __u8 dnat;            /* DNAT changed the destination: service_addr/port hold it */
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

/* Where the packet's IP header starts (a kernel address, read with probe reads). */
static __always_inline unsigned char *skb_ip_header(void *skb)
{
    unsigned char *head = 0;
    __u16 network = 0;
    read_kernel(&head, sizeof(head), skb + PICKET_OFF_SKB_HEAD);
    read_kernel(&network, sizeof(network), skb + PICKET_OFF_SKB_NETWORK_HEADER);
    return head + network;
}

/* How many bytes of the packet, from its IP header on, are in linear data (where a
 * probe read finds them; the rest is in pages): skb->tail less the network header,
 * both offsets from skb->head on 64-bit kernels. 0 when they cannot be read. */
static __always_inline __u32 skb_linear_ip_bytes(void *skb)
{
    __u32 tail = 0;
    __u16 network = 0;
    read_kernel(&tail, sizeof(tail), skb + PICKET_OFF_SKB_TAIL);
    read_kernel(&network, sizeof(network), skb + PICKET_OFF_SKB_NETWORK_HEADER);
    return tail > network ? tail - network : 0;
}

/* The packet's length from its IP header on (at FORWARD skb->data is the IP header). */
static __always_inline __u32 skb_len(void *skb)
{
    __u32 len = 0;
    read_kernel(&len, sizeof(len), skb + PICKET_OFF_SKB_LEN);
    return len;
}

#endif
