"""The planned maps as text for people (`picket compile --backend ebpf`) and golden
files (pure): identities, then each map's entries (interfaces aside: the endpoint map is
keyed by ifindex on the node; here by pod)."""

from __future__ import annotations

from agent.dataplane.ebpf.planner import EbpfPlanner
from agent.dataplane.ebpf_layout import DIR_EGRESS


def plan_text(planner: EbpfPlanner) -> str:
    state = planner.state
    lines = ["# identities (pods with equal namespace and pod labels share one)"]
    for key, number in sorted(planner.identities.by_thing.items(), key=lambda kv: kv[1]):
        namespace = dict(key[0]).get("kubernetes.io/metadata.name", "?")
        labels = ",".join(f"{k}={v}" for k, v in key[1]) or "(no labels)"
        lines.append(f"{number:>8}  namespace {namespace}, pods {labels}")
    for prefix, number in sorted(planner.prefixes.by_thing.items(), key=lambda kv: kv[1]):
        lines.append(f"{number:>8}  ipBlock prefix {prefix}")
    lines.append("# address map (LPM): prefix -> pod identity, prefix identity")
    for (address, bits), (pod, cidr) in sorted(state.addresses.items()):
        lines.append(f"{address}/{bits} -> {pod}, {cidr}")
    lines.append("# endpoint map: pod (ifindex on the node) -> endpoint id, flags")
    for ref, (number, flags) in sorted(state.endpoints.items()):
        lines.append(f"{ref} -> {number}, flags {flags}")
    lines.append("# policy map (LPM): endpoint, direction, identity, protocol/port block")
    for e in sorted(state.policy):
        block = "any" if e.protocol is None else f"{e.protocol}/{e.port}/{e.bits}"
        direction = "egress" if e.direction == DIR_EGRESS else "ingress"
        lines.append(f"{e.endpoint} {direction} {e.identity} {block}  (prefixlen {e.prefixlen})")
    lines.append("# named map: endpoint, destination, protocol, port")
    lines += [f"{e} {ip} {proto} {port}" for e, ip, proto, port in sorted(state.named)]
    return "\n".join(lines)
