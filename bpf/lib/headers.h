/* The only parts of a packet the program reads itself: the fixed IP header (the
 * source check, pods not programmed yet) and, for a packet conntrack holds no entry
 * for, enough of the headers to say why. The kernel keeps the fixed header in linear
 * data from ip_rcv / ipv6_rcv on (which also checked its version and lengths); ports
 * and flags come from the conntrack entry, which conntrack filled with
 * skb_header_pointer wherever the bytes lay. `family` is a constant of each entry
 * point (FAMILY_IPV4, FAMILY_IPV6), so each program keeps only its own branch. */
#ifndef PICKET_HEADERS_H
#define PICKET_HEADERS_H

/* The fixed part of an IPv4 header (network byte order, like the rest). */
struct ip_fields {
    __u8 version_ihl;
    __u8 tos;
    __u16 tot_len;
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

/* The fixed IPv6 header (RFC 8200), 40 bytes. */
struct ipv6_fields {
    __u8 version_class;   /* the version in the high nibble */
    __u8 class_flow[3];
    __u16 payload_len;
    __u8 nexthdr;
    __u8 hop_limit;
    union inet_addr saddr;
    union inet_addr daddr;
};

#define IPV6_HEADER 40
#define PROTO_ICMPV6 58
/* Extension headers the program walks to find the transport header (RFC 8200 4). */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
/* At most this many of them; a packet with more is `unparsed`. */
#define IPV6_EXTENSIONS_WALKED 6

/* What the source check and the drop log need of the fixed header. */
struct ip_summary {
    union inet_addr saddr;
    union inet_addr daddr;
    __u8 protocol;        /* IPv6: the fixed header's next header */
};

/* 0, or the error of the read (then `ip` is zeroes: no address, no protocol). */
static __always_inline long read_ip_summary(void *skb, const int family, struct ip_summary *ip)
{
    long err;
    if (family == FAMILY_IPV4) {
        struct ip_fields v4;
        err = read_kernel(&v4, sizeof(v4), skb_ip_header(skb));
        addr_from_ipv4(&ip->saddr, v4.saddr);
        addr_from_ipv4(&ip->daddr, v4.daddr);
        ip->protocol = v4.protocol;
    } else {
        struct ipv6_fields v6;
        err = read_kernel(&v6, sizeof(v6), skb_ip_header(skb));
        ip->saddr = v6.saddr;
        ip->daddr = v6.daddr;
        ip->protocol = v6.nexthdr;
    }
    if (err)
        __builtin_memset(ip, 0, sizeof(*ip));
    return err;
}

/* The smallest transport header conntrack accepts for `protocol` (0: no minimum). */
static __always_inline __u32 transport_minimum(const int family, __u8 protocol)
{
    switch (protocol) {
    case IPPROTO_TCP:
        return 20;
    case IPPROTO_UDP:
        return 8;
    case 132: /* SCTP's common header */
        return 12;
    }
    if (protocol == (family == FAMILY_IPV4 ? IPPROTO_ICMP : PROTO_ICMPV6))
        return 8;
    return 0;
}

static __always_inline __u8 untracked_reason4(void *skb, struct flow *f)
{
    struct ip_fields ip;
    if (read_kernel(&ip, sizeof(ip), skb_ip_header(skb)))
        return REASON_DROP_UNPARSED;
    /* For the drop log: which pod it was for (no ports: conntrack read none). */
    f->protocol = ip.protocol;
    addr_from_ipv4(&f->saddr, ip.saddr);
    addr_from_ipv4(&f->daddr, ip.daddr);
    __u32 header = (ip.version_ihl & 0xF) * 4;
    __u32 total = bpf_ntohs(ip.tot_len);
    if ((ip.version_ihl >> 4) != 4 || header < 20 || total < header)
        return REASON_DROP_UNPARSED;
    if (bpf_ntohs(ip.frag_off) & (IP_MF | IP_OFFSET))
        return REASON_DROP_FRAGMENT;
    if (total - header < transport_minimum(FAMILY_IPV4, ip.protocol))
        return REASON_DROP_UNPARSED;
    return REASON_DROP_INVALID;
}

/* The extension headers walked to the transport header, each read from linear data
 * only: one that lies in pages (or past the packet) ends the walk with conntrack's own
 * verdict, which the program cannot second-guess; more than IPV6_EXTENSIONS_WALKED is
 * `unparsed` (conntrack itself walks any number, and a pod gains nothing by sending
 * more). AH's length is in 4-byte units plus 2, the others' in 8-byte units plus 1. */
static __always_inline __u8 untracked_reason6(void *skb, struct flow *f)
{
    struct ipv6_fields ip;
    unsigned char *header = skb_ip_header(skb);
    if (read_kernel(&ip, sizeof(ip), header))
        return REASON_DROP_UNPARSED;
    f->saddr = ip.saddr;
    f->daddr = ip.daddr;
    f->protocol = ip.nexthdr;
    if ((ip.version_class >> 4) != 6)
        return REASON_DROP_UNPARSED;
    __u32 total = skb_len(skb); /* ip6_rcv_core trimmed it to the payload length */
    __u32 linear = skb_linear_ip_bytes(skb);
    __u32 offset = IPV6_HEADER;
    __u8 next = ip.nexthdr;
#pragma unroll
    for (int i = 0; i < IPV6_EXTENSIONS_WALKED; i++) {
        if (next == NEXTHDR_FRAGMENT)
            return REASON_DROP_FRAGMENT;
        if (next != NEXTHDR_HOP && next != NEXTHDR_ROUTING && next != NEXTHDR_DEST &&
            next != NEXTHDR_AUTH)
            break;
        __u8 ext[2] = {};
        if (offset + 2 > linear || read_kernel(ext, sizeof(ext), header + offset))
            return REASON_DROP_INVALID;
        offset += next == NEXTHDR_AUTH ? (ext[1] + 2) * 4 : (ext[1] + 1) * 8;
        next = ext[0];
    }
    f->protocol = next;
    if (next == NEXTHDR_HOP || next == NEXTHDR_ROUTING || next == NEXTHDR_DEST ||
        next == NEXTHDR_AUTH || next == NEXTHDR_FRAGMENT)
        return REASON_DROP_UNPARSED; /* more extension headers than are walked */
    if (total < offset || total - offset < transport_minimum(FAMILY_IPV6, next))
        return REASON_DROP_UNPARSED;
    return REASON_DROP_INVALID;
}

/* Why conntrack holds no entry for a packet, as far as its IP headers tell: a fragment
 * (the hook asks the kernel to reassemble before it, so one here means that was
 * bypassed), headers that do not parse (a transport header shorter than its
 * protocol's minimum, an IP header the program could not read, more IPv6 extension
 * headers than it walks), or else conntrack's own judgment: INVALID (a bad checksum,
 * TCP flags no state admits, an ICMP error of no connection, ...). */
static __always_inline __u8 untracked_reason(void *skb, const int family, struct flow *f)
{
    return family == FAMILY_IPV4 ? untracked_reason4(skb, f) : untracked_reason6(skb, f);
}

#endif
