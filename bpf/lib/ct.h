/* Connection tracking owned by the programs: an allowed connection's first packet
 * creates an entry for the endpoint and direction that checked it; later packets and
 * replies (the reversed tuple, the other direction) match it. RST retires an entry at
 * once, FIN shortens its life, idle entries expire (timeouts per protocol, from the
 * config map), and the LRU map drops the oldest when full. */
#ifndef PICKET_CT_H
#define PICKET_CT_H

static __always_inline __u64 config_get(__u32 slot, __u64 fallback)
{
    __u64 *value = picket_config.lookup(&slot);
    return value && *value ? *value : fallback;
}

static __always_inline __u64 ct_lifetime_ns(__u8 protocol, __u32 flags)
{
    __u64 seconds;
    if (flags & CT_FIN)
        seconds = config_get(CONFIG_FIN_TIMEOUT_S, 10);
    else if (protocol == IPPROTO_TCP)
        seconds = config_get(CONFIG_TCP_TIMEOUT_S, 3600);
    else if (protocol == IPPROTO_UDP)
        seconds = config_get(CONFIG_UDP_TIMEOUT_S, 60);
    else
        seconds = config_get(CONFIG_OTHER_TIMEOUT_S, 60);
    return seconds * 1000000000ULL;
}

static __always_inline void ct_fill(struct ct_key *key, struct packet *pkt, int reverse,
                                    __u8 direction, __u32 endpoint)
{
    key->saddr = reverse ? pkt->daddr : pkt->saddr;
    key->daddr = reverse ? pkt->saddr : pkt->daddr;
    key->sport = reverse ? pkt->dport : pkt->sport;
    key->dport = reverse ? pkt->sport : pkt->dport;
    key->protocol = pkt->protocol;
    key->direction = direction;
    key->endpoint = endpoint;
}

/* An entry's last_seen is written by every CPU that sees the connection: another CPU
 * may have stored a time later than the clock this one read a moment ago. Unsigned
 * "now - then" would then wrap to centuries, the entry would be judged expired, and the
 * connection's next segments dropped as mid-stream (bulk TCP on two CPUs did exactly
 * that). A time in our future is "just seen". */
static __always_inline __u64 ns_since(__u64 now, __u64 then)
{
    return now > then ? now - then : 0;
}

/* How stale last_seen may get before a packet rewrites it: lifetimes are whole
 * seconds, and not writing the shared entry on every packet keeps its cache line from
 * bouncing between the CPUs of a busy connection. */
#define CT_REFRESH_NS 100000000ULL

/* 1 when the entry under `key` is alive; refreshes it, and applies FIN and RST. */
static __always_inline int ct_touch(struct ct_key *key, struct packet *pkt, __u64 now)
{
    struct ct_value *entry = picket_ct.lookup(key);
    if (!entry)
        return 0;
    __u64 idle = ns_since(now, entry->last_seen_ns);
    if (idle > ct_lifetime_ns(key->protocol, entry->flags)) {
        picket_ct.delete(key);
        return 0;
    }
    if (pkt->protocol == IPPROTO_TCP && (pkt->tcp_flags & TCP_RST)) {
        picket_ct.delete(key);
        return 1; /* the RST itself still belongs to the connection */
    }
    if (pkt->protocol == IPPROTO_TCP && (pkt->tcp_flags & TCP_FIN) && !(entry->flags & CT_FIN))
        entry->flags |= CT_FIN;
    if (idle > CT_REFRESH_NS)
        entry->last_seen_ns = now;
    return 1;
}

/* Part of a connection this endpoint already let through, either way round. */
static __always_inline int ct_established(struct packet *pkt, __u32 endpoint, __u8 direction)
{
    struct ct_key key = {};
    __u64 now = bpf_ktime_get_ns();
    ct_fill(&key, pkt, 0, direction, endpoint);
    if (ct_touch(&key, pkt, now))
        return 1;
    struct ct_key reply = {};
    ct_fill(&reply, pkt, 1, direction ^ 1, endpoint);
    return ct_touch(&reply, pkt, now);
}

static __always_inline void ct_create(struct packet *pkt, __u32 endpoint, __u8 direction)
{
    struct ct_key key = {};
    struct ct_value value = {};
    ct_fill(&key, pkt, 0, direction, endpoint);
    value.last_seen_ns = bpf_ktime_get_ns();
    picket_ct.update(&key, &value);
}

/* A packet that may open a connection: anything but a TCP segment without SYN (a
 * mid-stream segment of a connection we do not know, or one whose entry was removed
 * because policy now forbids it, must not be adopted). */
static __always_inline int ct_may_open(struct packet *pkt)
{
    if (pkt->protocol != IPPROTO_TCP)
        return 1;
    return (pkt->tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST)) == TCP_SYN;
}

#endif
