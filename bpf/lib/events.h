/* Counters, and drop events for the drop log: a per-CPU token bucket keeps a flood of
 * denied packets from flooding the ring buffer (what it holds back is counted). */
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

static __always_inline void count_packet(__u8 direction, __u32 reason)
{
    __u32 slot = direction * REASON_SLOTS + reason;
    __u64 *value = picket_verdicts.lookup(&slot);
    if (value)
        *value += 1;
}

/* Drops are the slow path: a shared hash with atomic adds is cheap enough there. */
static __always_inline void count_drop(__u32 endpoint, __u8 direction, __u8 reason)
{
    count_packet(direction, reason);
    struct drop_count_key key = {.endpoint = endpoint, .direction = direction,
                                 .reason = reason};
    __u64 one = 1;
    __u64 *value = picket_drop_counts.lookup(&key);
    if (value)
        __sync_fetch_and_add(value, 1);
    else
        picket_drop_counts.update(&key, &one);
}

static __always_inline int take_token(void)
{
    __u32 zero = 0;
    struct rate_state *state = picket_rate.lookup(&zero);
    if (!state)
        return 0;
    __u64 now = bpf_ktime_get_ns();
    __u64 rate = config_get(CONFIG_EVENTS_PER_SECOND, 1000);
    __u64 burst = config_get(CONFIG_EVENTS_BURST, 100) * 1000;
    __u64 elapsed = ns_since(now, state->last_ns); /* never wraps, whatever wrote last */
    if (elapsed > 10000000000ULL)
        elapsed = 10000000000ULL; /* no overflow after a long quiet */
    __u64 tokens = state->tokens_milli + elapsed * rate / 1000000;
    if (tokens > burst)
        tokens = burst;
    state->last_ns = now;
    if (tokens < 1000) {
        state->tokens_milli = tokens;
        return 0;
    }
    state->tokens_milli = tokens - 1000;
    return 1;
}

static __always_inline void report_drop(struct flow *pkt, __u32 endpoint, __u8 direction,
                                        __u8 reason, __u32 ifindex)
{
    count_drop(endpoint, direction, reason);
    if (!take_token()) {
        count_packet(direction, REASON_EVENT_SUPPRESSED);
        return;
    }
    struct drop_event *event = picket_drops.ringbuf_reserve(sizeof(struct drop_event));
    if (!event) {
        count_packet(direction, REASON_EVENT_SUPPRESSED);
        return;
    }
    event->timestamp_ns = bpf_ktime_get_ns();
    event->saddr = pkt->saddr;
    event->daddr = pkt->daddr;
    event->sport = pkt->sport;
    event->dport = pkt->dport;
    event->service_addr = pkt->service_addr;
    event->service_port = pkt->service_port;
    event->pad2 = 0;
    event->protocol = pkt->protocol;
    event->direction = direction;
    event->reason = reason;
    event->pad = 0;
    event->endpoint = endpoint;
    event->ifindex = ifindex;
    picket_drops.ringbuf_submit(event, 0);
}

#endif
