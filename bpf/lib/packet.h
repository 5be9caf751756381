/* Parsing: Ethernet, IPv4, and the ports (or ICMP id) of TCP, UDP, SCTP and ICMP. */
#ifndef PICKET_PACKET_H
#define PICKET_PACKET_H

#define IPPROTO_SCTP_ 132

struct packet {
    __u32 saddr;      /* network byte order */
    __u32 daddr;
    __u16 sport;      /* host byte order */
    __u16 dport;
    __u8 protocol;
    __u8 tcp_flags;   /* FIN 1, SYN 2, RST 4, ACK 16 */
    __u8 icmp_error;  /* an ICMP error about another packet: not a connection */
};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* 1 when `pkt` holds an IPv4 packet's addresses and ports; 0 for anything else
 * (ARP, IPv6 for now), which the datapath does not police. */
static __always_inline int parse_packet(struct __sk_buff *skb, struct packet *pkt)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
        return 0;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end || ip->ihl < 5)
        return 0;
    pkt->saddr = ip->saddr;
    pkt->daddr = ip->daddr;
    pkt->protocol = ip->protocol;
    if (ip->frag_off & bpf_htons(0x1fff))
        return 1; /* a later fragment: no ports to read */
    void *l4 = (void *)ip + ip->ihl * 4;
    if (ip->protocol == IPPROTO_TCP) {
        struct tcphdr *tcp = l4;
        if ((void *)(tcp + 1) > data_end)
            return 0;
        pkt->sport = bpf_ntohs(tcp->source);
        pkt->dport = bpf_ntohs(tcp->dest);
        pkt->tcp_flags = ((__u8 *)tcp)[13];
    } else if (ip->protocol == IPPROTO_UDP || ip->protocol == IPPROTO_SCTP_) {
        /* SCTP's common header starts with the two ports, as UDP's does. */
        __u16 *ports = l4;
        if ((void *)(ports + 2) > data_end)
            return 0;
        pkt->sport = bpf_ntohs(ports[0]);
        pkt->dport = bpf_ntohs(ports[1]);
    } else if (ip->protocol == IPPROTO_ICMP) {
        struct icmphdr *icmp = l4;
        if ((void *)(icmp + 1) > data_end)
            return 0;
        if (icmp->type == ICMP_ECHO || icmp->type == ICMP_ECHOREPLY) {
            /* The echo id stands in for both ports, so a reply finds its request. */
            pkt->sport = bpf_ntohs(icmp->un.echo.id);
            pkt->dport = pkt->sport;
        } else {
            pkt->icmp_error = 1;
        }
    }
    return 1;
}

#endif
