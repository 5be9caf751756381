/* Picket's eBPF datapath: the one place where struct layouts, identities, reason codes
 * and map names are defined. agent/dataplane/ebpf_layout.py mirrors this file, and a
 * test parses it to check the mirror. */
#ifndef PICKET_H
#define PICKET_H

/* Directions, from the pod's point of view. */
#define DIR_INGRESS 0
#define DIR_EGRESS 1

/* Reserved identities. Pod identities start at IDENTITY_POD_FIRST, CIDR (ipBlock
 * prefix) identities at IDENTITY_CIDR_FIRST. */
#define IDENTITY_ANY 0      /* a policy entry for any peer */
#define IDENTITY_HOST 1     /* this node's own addresses: always allowed */
#define IDENTITY_WORLD 2    /* an address that is no pod and no node address */
#define IDENTITY_POD_FIRST 256
#define IDENTITY_CIDR_FIRST 16777216

/* Endpoint flags. */
#define EP_INGRESS_ISOLATED 1
#define EP_EGRESS_ISOLATED 2
#define EP_NAMED_EGRESS 4   /* egress rules with named ports: look in the named map */
#define EP_AUDIT 8          /* audit mode: report what policy denies, let it pass */

/* Why a packet passed or was dropped: the per-CPU verdict counters are indexed by
 * family, direction and these (verdict_slot, lib/events.h). */
#define REASON_ALLOWED_POLICY 0
#define REASON_ALLOWED_CT 1
#define REASON_ALLOWED_NOT_ISOLATED 2
#define REASON_ALLOWED_HOST 3
#define REASON_ALLOWED_OTHER 4      /* not counted: each hook sees only its family */
#define REASON_DROP_POLICY 5
#define REASON_DROP_NO_SYN 6        /* TCP without SYN and without a connection */
#define REASON_EVENT_SUPPRESSED 7   /* drop events the rate limit kept out of the ring */
#define REASON_AUDIT_POLICY 8       /* audit mode: policy would drop, passed */
#define REASON_DROP_INVALID 9       /* no conntrack entry (conntrack INVALID, untracked) */
#define REASON_ALLOWED_UPSTREAM 10  /* judged by the node that DNATed it (the transit mark) */
#define REASON_DROP_SPOOFED 11      /* from a pod's interface, not from one of its addresses */
#define REASON_DROP_UNPARSED 12     /* no conntrack entry, and headers that do not parse */
#define REASON_DROP_FRAGMENT 13     /* an IP fragment at the hook (defragmentation bypassed) */
#define REASON_DROP_UNPROGRAMMED 14 /* from or to a pod of this node not programmed yet */
#define REASON_COUNT 15
#define REASON_SLOTS 16     /* per direction in the pinned map: room for new reasons */
#define DIRECTIONS 2
#define FAMILIES 2          /* IPv4's slots first, then IPv6's */
/* Room per endpoint in the drop counts: policy, no SYN, audit, invalid, unparsed and
 * fragment times directions, and spoofed, are 13 keys per family, but an endpoint
 * holds those it met, rarely more than four a family (the map is not preallocated:
 * room costs nothing until used). */
#define DROP_COUNTS_PER_ENDPOINT 16

/* Config slots (an array map the agent writes at every start). Slots 0-3 held the
 * connection timeouts of the TC datapath's own connection table: the map keeps its
 * shape, and 2-3 stay free. */
#define CONFIG_ENDPOINT_EVENTS_PER_SECOND 0 /* each local pod's share of the events */
#define CONFIG_ENDPOINT_EVENTS_BURST 1
#define CONFIG_EVENTS_PER_SECOND 4          /* the node's (per CPU) */
#define CONFIG_EVENTS_BURST 5
#define CONFIG_COUNT 6

/* The connection-mark bit the transit mark's iptables rule sets on a connection that
 * another node DNATed and judged (agent/dataplane/transit_mark.py: 0x01000000). */
#define TRUSTED_CTMARK 16777216

/* Address families, as the drop event's `family` says them (the IP version). */
#define FAMILY_IPV4 4
#define FAMILY_IPV6 6

/* Every address a map holds is 16 bytes, network byte order: an IPv6 address as it
 * is, an IPv4 address IPv4-mapped (::ffff:a.b.c.d, RFC 4291 2.5.5.2), so that one set
 * of maps serves both families. In the LPM tries an IPv4 prefix /n is /(96 + n): every
 * IPv4 prefix lies inside ::ffff:0:0/96, where no IPv6 pod or ipBlock address is. */
#define ADDR_BYTES 16
#define IPV4_MAPPED_BITS 96

/* LPM trie over (prefix of) a peer address. */
struct addr_key {
    __u32 prefixlen;
    __u8 addr[16];
};

struct addr_value {
    __u32 pod_identity;   /* IDENTITY_HOST, IDENTITY_WORLD or a pod identity */
    __u32 cidr_identity;  /* the longest ipBlock prefix holding the address, or 0 */
};

/* The node's pod CIDRs, of both families (an LPM trie of addr_key, value 1): an
 * address in them on an interface that is no local endpoint's is a pod not programmed
 * yet. */
#define PICKET_POD_CIDR_ENTRIES 16
/* Endpoint number of the drop events of pods not programmed yet (they have none): the
 * drop log's bucket they share. Endpoint numbers start at 1. */
#define UNPROGRAMMED_ENDPOINT 0
/* Local endpoints, by the ifindex of the pod's host-side interface. */
struct endpoint_value {
    __u32 id;
    __u32 flags;
};

/* Room per endpoint in the maps keyed by a pod's address (sources, transit,
 * transit_home): one address per family. */
#define ADDRS_PER_ENDPOINT 2

/* Transit endpoints (pods of other nodes this node DNATs outside clients to) are keyed
 * by their address, with an endpoint_value; their own node's addresses, from which
 * they are always reachable, by (endpoint, address). */
struct transit_key {
    __u8 addr[16];
};

struct transit_home_key {
    __u32 endpoint;
    __u8 addr[16];
};

/* A local pod's own source addresses: (host-side ifindex, address). A packet from a
 * pod's interface with any other source is dropped. */
struct source_key {
    __u32 ifindex;
    __u8 addr[16];
};

/* LPM trie: (endpoint, direction, identity) exactly, then protocol and port as a
 * prefix: 96 bits = any protocol, 104 = any port of one protocol, 105..120 = a port
 * range as aligned blocks, 120 = one port. All multi-byte fields big-endian. The same
 * entries serve both families: identities are per pod, not per address. */
struct policy_key {
    __u32 prefixlen;
    __u8 endpoint[4];
    __u8 direction;
    __u8 pad[3];
    __u8 identity[4];
    __u8 protocol;
    __u8 port[2];
};

/* Egress named ports: the port depends on the destination pod (one entry per
 * destination address, so per family). */
struct named_key {
    __u32 endpoint;
    __u8 daddr[16];
    __u16 port;       /* host byte order */
    __u8 protocol;
    __u8 pad;
};

/* Packets dropped (or, in audit mode, that would be) per endpoint, direction, reason
 * and family (FAMILY_IPV4, FAMILY_IPV6): the metrics name the namespace from the
 * endpoint. The agent removes an endpoint's entries when it removes the endpoint. */
struct drop_count_key {
    __u32 endpoint;
    __u8 direction;
    __u8 reason;
    __u8 family;
    __u8 pad;
};

/* A dropped connection attempt as policy judged it: the client's own address (before
 * any masquerade) and the backend's (after kube-proxy's DNAT); `service_addr` and
 * `service_port` are the address it was sent to when that differs (a ClusterIP or a
 * NodePort), else zeroes. Addresses as the maps hold them (IPv4-mapped for IPv4);
 * `family` says which (FAMILY_IPV4, FAMILY_IPV6). 80 bytes, 8-byte aligned. */
struct drop_event {
    __u64 timestamp_ns;
    __u8 saddr[16];
    __u8 daddr[16];
    __u8 service_addr[16];
    __u32 endpoint;
    __u32 ifindex;
    __u16 sport;      /* host byte order */
    __u16 dport;
    __u16 service_port;  /* host byte order */
    __u8 protocol;
    __u8 direction;
    __u8 reason;
    __u8 family;
    __u8 pad[6];
};

struct rate_state {
    __u64 tokens_milli;   /* thousandths of an event */
    __u64 last_ns;
};

#endif
