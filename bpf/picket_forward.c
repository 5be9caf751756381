/* Picket's eBPF datapath: one BPF netfilter program per address family at the FORWARD
 * hook of the node's namespace (picket_forward4 at IPv4's, picket_forward6 at IPv6's;
 * one verdict, inlined with the family a constant), after kube-proxy's DNAT and before
 * its masquerade, so that it judges every connection between its real ends
 * (docs/ebpf.md, "Where the check runs"). What a pod
 * sends is checked against its egress policy, what it receives against its ingress
 * policy, and what this node DNATs to a pod of another node against that pod's ingress
 * policy (a transit endpoint); the kernel's connection tracking says which packets
 * begin a connection. The maps are pinned under PICKET_PIN_DIR (a restarted agent
 * makes its own and takes the hooks over: docs/ebpf.md, "Restarts and cleanup"); the
 * logic lives in lib/. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/in.h>
#include "picket.h"

BPF_TABLE_PINNED7("lpm_trie", struct addr_key, struct addr_value, picket_addr,
                  PICKET_ADDR_ENTRIES, PICKET_PIN_DIR "/addr", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED7("lpm_trie", struct addr_key, __u8, picket_pod_cidrs,
                  PICKET_POD_CIDR_ENTRIES, PICKET_PIN_DIR "/pod_cidrs", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", __u32, struct endpoint_value, picket_endpoints,
                 PICKET_ENDPOINT_ENTRIES, PICKET_PIN_DIR "/endpoints");
BPF_TABLE_PINNED("hash", struct source_key, __u8, picket_sources,
                 PICKET_ENDPOINT_ENTRIES * ADDRS_PER_ENDPOINT, PICKET_PIN_DIR "/sources");
BPF_TABLE_PINNED("hash", struct transit_key, struct endpoint_value, picket_transit,
                 PICKET_ENDPOINT_ENTRIES * ADDRS_PER_ENDPOINT, PICKET_PIN_DIR "/transit");
BPF_TABLE_PINNED("hash", struct transit_home_key, __u8, picket_transit_home,
                 PICKET_ENDPOINT_ENTRIES * ADDRS_PER_ENDPOINT, PICKET_PIN_DIR "/transit_home");
BPF_TABLE_PINNED7("lpm_trie", struct policy_key, __u8, picket_policy,
                  PICKET_POLICY_ENTRIES, PICKET_PIN_DIR "/policy", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", struct named_key, __u8, picket_named,
                 PICKET_NAMED_ENTRIES, PICKET_PIN_DIR "/named");
BPF_TABLE_PINNED("percpu_array", __u32, __u64, picket_verdicts,
                 FAMILIES * DIRECTIONS * REASON_SLOTS, PICKET_PIN_DIR "/verdicts");
BPF_TABLE_PINNED7("hash", struct drop_count_key, __u64, picket_drop_counts,
                  PICKET_ENDPOINT_ENTRIES * DROP_COUNTS_PER_ENDPOINT, PICKET_PIN_DIR "/drop_counts",
                  BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("array", __u32, __u64, picket_config, CONFIG_COUNT,
                 PICKET_PIN_DIR "/config");
BPF_TABLE("percpu_array", __u32, struct rate_state, picket_rate, 1);
/* Each local pod's own event bucket (by endpoint number, per CPU; not pinned: a restart
 * starts them full), so that one flooded pod cannot use up the events of the rest. */
BPF_TABLE("lru_percpu_hash", __u32, struct rate_state, picket_endpoint_rate,
          PICKET_ENDPOINT_ENTRIES);
BPF_RINGBUF_OUTPUT(picket_drops, PICKET_RING_PAGES);

#include "lib/kernel.h"
#include "lib/headers.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/events.h"
#include "lib/verdict.h"

int picket_forward4(struct bpf_nf_ctx *ctx)
{
    return picket_verdict(ctx, FAMILY_IPV4);
}

int picket_forward6(struct bpf_nf_ctx *ctx)
{
    return picket_verdict(ctx, FAMILY_IPV6);
}
