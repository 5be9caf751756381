/* Counters, and drop events for the drop log: per-CPU token buckets, one per local pod
 * and one for the node, keep a flood of denied packets from flooding the ring buffer
 * or using up the other pods' events (what they hold back is counted). */
#ifndef PICKET_EVENTS_H
#define PICKET_EVENTS_H

static __always_inline __u64 config_get(__u32 slot, __u64 fallback)
{
    __u64 *value = picket_config.lookup(&slot);
    return value && *value ? *value : fallback;
}

/* `now - then`, or 0 when `then` is later: another CPU may have stored a time later
 * than this CPU's reading of the clock, and the unsigned difference must not wrap. */
static __always_inline __u64 ns_since(__u64 now, __u64 then)
{
    return now > then ? now - then : 0;
}

/* The verdict counter of (family, direction, reason): IPv4's slots, then IPv6's
 * (agent/dataplane/ebpf_layout.py: verdict_slot). */
static __always_inline void count_packet(const int family, __u8 direction, __u32 reason)
{
    __u32 slot = ((family == FAMILY_IPV6) * DIRECTIONS + direction) * REASON_SLOTS + reason;
    __u64 *value = picket_verdicts.lookup(&slot);
    if (value)
        *value += 1;
}

/* Drops are the slow path: a shared hash with atomic adds is cheap enough there. */
static __always_inline void count_drop(const int family, __u32 endpoint, __u8 direction,
                                       __u8 reason)
{
    count_packet(family, direction, reason);
    struct drop_count_key key = {.endpoint = endpoint, .direction = direction,
                                 .reason = reason, .family = family};
    __u64 one = 1;
    __u64 *value = picket_drop_counts.lookup(&key);
    if (value)
        __sync_fetch_and_add(value, 1);
    else
        picket_drop_counts.update(&key, &one);
}

/* Takes a token from `state` (milli-tokens, refilled at `rate` per second up to
 * `burst` tokens); 1 when there was one. */
static __always_inline int bucket_take(struct rate_state *state, __u64 now, __u64 rate,
                                       __u64 burst)
{
    __u64 elapsed = ns_since(now, state->last_ns); /* never wraps, whatever wrote last */
    if (elapsed > 10000000000ULL)
        elapsed = 10000000000ULL; /* no overflow after a long quiet */
    __u64 tokens = state->tokens_milli + elapsed * rate / 1000000;
    if (tokens > burst * 1000)
        tokens = burst * 1000;
    state->last_ns = now;
    if (tokens < 1000) {
        state->tokens_milli = tokens;
        return 0;
    }
    state->tokens_milli = tokens - 1000;
    return 1;
}

/* A drop event may be sent for `endpoint`: its own bucket, then the node's. */
static __always_inline int take_token(__u32 endpoint)
{
    __u64 now = bpf_ktime_get_ns();
    __u64 burst = config_get(CONFIG_ENDPOINT_EVENTS_BURST, 100);
    struct rate_state *mine = picket_endpoint_rate.lookup(&endpoint);
    if (!mine) {
        struct rate_state full = {.tokens_milli = burst * 1000, .last_ns = now};
        picket_endpoint_rate.update(&endpoint, &full);
        mine = picket_endpoint_rate.lookup(&endpoint);
        if (!mine)
            return 0;
    }
    if (!bucket_take(mine, now, config_get(CONFIG_ENDPOINT_EVENTS_PER_SECOND, 100), burst))
        return 0;
    __u32 zero = 0;
    struct rate_state *node = picket_rate.lookup(&zero);
    if (!node)
        return 0;
    return bucket_take(node, now, config_get(CONFIG_EVENTS_PER_SECOND, 1000),
                       config_get(CONFIG_EVENTS_BURST, 100));
}

/* A drop event for the drop log, when `endpoint`'s bucket and the node's allow it (the
 * drop is counted by the caller). */
static __always_inline void send_drop_event(struct flow *pkt, const int family, __u32 endpoint,
                                            __u8 direction, __u8 reason, __u32 ifindex)
{
    if (!take_token(endpoint)) {
        count_packet(family, direction, REASON_EVENT_SUPPRESSED);
        return;
    }
    struct drop_event *event = picket_drops.ringbuf_reserve(sizeof(struct drop_event));
    if (!event) {
        count_packet(family, direction, REASON_EVENT_SUPPRESSED);
        return;
    }
    event->timestamp_ns = bpf_ktime_get_ns();
    __builtin_memcpy(event->saddr, &pkt->saddr, sizeof(event->saddr));
    __builtin_memcpy(event->daddr, &pkt->daddr, sizeof(event->daddr));
    if (pkt->dnat)
        __builtin_memcpy(event->service_addr, &pkt->service_addr, sizeof(event->service_addr));
    else
        __builtin_memset(event->service_addr, 0, sizeof(event->service_addr));
    event->endpoint = endpoint;
    event->ifindex = ifindex;
    event->sport = pkt->sport;
    event->dport = pkt->dport;
    event->service_port = pkt->service_port;
    event->protocol = pkt->protocol;
    event->direction = direction;
    event->reason = reason;
    event->family = family;
    __builtin_memset(event->pad, 0, sizeof(event->pad));
    picket_drops.ringbuf_submit(event, 0);
}

static __always_inline void report_drop(struct flow *pkt, const int family, __u32 endpoint,
                                        __u8 direction, __u8 reason, __u32 ifindex)
{
    count_drop(family, endpoint, direction, reason);
    send_drop_event(pkt, family, endpoint, direction, reason, ifindex);
}

#endif
