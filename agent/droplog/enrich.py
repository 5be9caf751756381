"""Who a denied packet was between, and which policies stopped it, from the agent's
cache (pure: the caller holds whatever lock guards the cache); and the journal record.

Addresses resolve to a pod (namespace/name), to a node, or stay external. The policies
named are the ones isolating the local endpoint whose check denied the packet: the
destination's for ingress, the source's for egress. A connection kube-proxy DNATed also
names the address the client sent it to and the Service that address is a frontend of
(frontends.py); the destination is the backend pod, which the policy judged."""

from __future__ import annotations

from dataclasses import dataclass

from agent.compiler.ir import NodeIR
from agent.droplog.events import (
    FRAGMENT,
    INVALID,
    SPOOFED,
    UNPARSED,
    UNPROGRAMMED,
    WOULD_DROP,
    PacketEvent,
)
from agent.droplog.frontends import Via, via
from agent.model.annotations import drop_log_enabled
from agent.model.live import LiveState
from agent.model.objects import IPAddress

POD, NODE, EXTERNAL = "pod", "node", "external"


@dataclass(frozen=True)
class Party:
    kind: str  # pod | node | external
    ip: IPAddress
    port: int
    namespace: str = ""
    pod: str = ""

    @property
    def name(self) -> str:
        if self.kind == POD:
            return f"{self.namespace}/{self.pod}"
        return f"{self.kind} {self.ip}"

    def __str__(self) -> str:
        if not self.port:
            return self.name
        if self.kind != POD and self.ip.version == 6:
            return f"{self.kind} [{self.ip}]:{self.port}"  # the port apart from the address
        return f"{self.name}:{self.port}"


@dataclass(frozen=True)
class Description:
    src: Party
    dst: Party
    policies: tuple[str, ...]
    logged: bool  # False when the local namespace opted out (picket.io/drop-log: "off")
    via: Via | None = None  # where the client sent it, when DNAT changed that
    # A forged source: the pod behind the interface it came from (`src` is whoever
    # owns the forged address), and that interface's name
    sender: Party | None = None
    interface: str = ""


def _party(live: LiveState | None, ip: IPAddress, port: int) -> Party:
    if live is not None:
        pod = live.endpoint_pod_with_ip(ip)
        if pod is not None:
            return Party(POD, ip, port, pod.namespace, pod.name)
        if any(ip in node.addresses for node in live.nodes.values()):
            return Party(NODE, ip, port)
    return Party(EXTERNAL, ip, port)


def describe(event: PacketEvent, live: LiveState | None, ir: NodeIR | None) -> Description:
    src = _party(live, event.src_ip, event.src_port)
    dst = _party(live, event.dst_ip, event.dst_port)
    local_ip = event.dst_ip if event.direction == "ingress" else event.src_ip
    policies: tuple[str, ...] = ()
    # A transit endpoint (a pod of another node whose ingress this node judged for a
    # connection it DNATed) is named by its own policies too.
    judged = [*ir.endpoints.values(), *ir.transit.values()] if ir is not None else []
    for endpoint in judged:
        if local_ip in endpoint.ips:
            rules = endpoint.ingress if event.direction == "ingress" else endpoint.egress
            policies = rules.policies if rules is not None else ()
            break
    local = dst if event.direction == "ingress" else src
    namespace = live.namespaces.get(local.namespace) if live and local.kind == POD else None
    through = via(live, event.sent_to, event.protocol_name)
    return Description(src, dst, policies, drop_log_enabled(namespace), through)


def describe_spoofed(
    event: PacketEvent, live: LiveState | None, interface: str, owned: tuple[IPAddress, ...]
) -> Description:
    """A packet from the interface named `interface`, which routes `owned` (the sending
    pod's addresses), with a source that is none of them."""
    sender = next(
        (p for p in (_party(live, ip, 0) for ip in owned) if p.kind == POD),
        Party(EXTERNAL, owned[0] if owned else event.src_ip, 0),
    )
    namespace = live.namespaces.get(sender.namespace) if live and sender.kind == POD else None
    return Description(
        _party(live, event.src_ip, 0),
        _party(live, event.dst_ip, 0),
        (),
        drop_log_enabled(namespace),
        sender=sender,
        interface=interface,
    )


def _spoofed_message(event: PacketEvent, description: Description) -> str:
    sender = description.sender
    who = sender.name if sender is not None and sender.kind == POD else "an unknown pod"
    return (
        f"DROP spoofed {event.protocol_name} from {who} (interface "
        f"{description.interface or event.interface}) with source {event.src_ip}"
        f"{'' if description.src.kind == EXTERNAL else f' ({description.src.name})'} "
        f"-> {description.dst.name}; the source is not one of {who}'s addresses"
    )


# Why a packet without a connection was dropped, as the record says it.
UNTRACKED_WHY = {
    INVALID: "conntrack holds no connection for it (INVALID: a bad checksum, TCP flags "
    "no state admits, an ICMP error of no connection, ...)",
    UNPARSED: "its headers do not parse (truncated or malformed), so no rule can judge it",
    FRAGMENT: "an IP fragment reached the check without its datagram (reassembly bypassed)",
}


def message(event: PacketEvent, description: Description) -> str:
    if event.reason == SPOOFED:
        return _spoofed_message(event, description)
    src, dst = description.src, description.dst
    local, peer = (dst, src) if event.direction == "ingress" else (src, dst)
    if event.reason == UNPROGRAMMED:
        # The agent may not know the pod yet either: then it is the address's.
        address = event.dst_ip if event.direction == "ingress" else event.src_ip
        who = local.name if local.kind == POD else f"the pod at {address}"
        return (
            f"DROP {event.direction} unprogrammed {event.protocol_name} {src} -> {dst}; "
            f"{who} is not programmed yet (a new pod, or one started while the agent was "
            f"down): its traffic is dropped until its policy is in place"
        )
    isolated = ", ".join(description.policies) or "policies no longer known"
    if event.reason in UNTRACKED_WHY:
        return (
            f"DROP {event.direction} {event.reason} {event.protocol_name} {src} -> {dst}; "
            f"{local.name} is isolated by {isolated}; {UNTRACKED_WHY[event.reason]}"
        )
    protocol = event.protocol_name
    where = f" on {event.dst_port}/{protocol}" if event.dst_port else ""
    through = f" {description.via}" if description.via is not None else ""
    text = (
        f"{'WOULD-DROP' if event.verdict == WOULD_DROP else 'DROP'} {event.direction} "
        f"{protocol} {src} -> {dst}{through}; {local.name} is isolated by {isolated}; "
        f"no rule admits {peer.name}{where}"
    )
    return text + (" (audit mode: let through)" if event.verdict == WOULD_DROP else "")


def record_fields(
    event: PacketEvent, description: Description, repeats: int, node: str
) -> dict[str, str]:
    """One journal record: MESSAGE and the PICKET_* fields (docs/droplog.md)."""
    fields = {
        "MESSAGE": message(event, description),
        "PICKET_VERDICT": event.verdict,
        "PICKET_REASON": event.reason,
        "PICKET_DIRECTION": event.direction,
        "PICKET_PROTOCOL": event.protocol_name,
        "PICKET_POLICIES": ",".join(description.policies),
        "PICKET_NODE": node,
        "PICKET_REPEATS": str(repeats),
    }
    for side, party in (("SRC", description.src), ("DST", description.dst)):
        fields[f"PICKET_{side}_KIND"] = party.kind
        fields[f"PICKET_{side}_NAMESPACE"] = party.namespace
        fields[f"PICKET_{side}_POD"] = party.pod
        fields[f"PICKET_{side}_IP"] = str(party.ip)
        fields[f"PICKET_{side}_PORT"] = str(party.port)
    if description.sender is not None:  # only forged sources
        fields["PICKET_SENDER_NAMESPACE"] = description.sender.namespace
        fields["PICKET_SENDER_POD"] = description.sender.pod
        fields["PICKET_SENDER_INTERFACE"] = description.interface
    if description.via is not None:  # only DNATed connections: direct ones stay as they were
        fields["PICKET_SERVICE"] = description.via.service
        fields["PICKET_SERVICE_IP"] = str(description.via.ip)
        fields["PICKET_SERVICE_PORT"] = str(description.via.port)
        fields["PICKET_SERVICE_FRONTEND"] = description.via.frontend
    return fields


def summary_fields(
    suppressed: int,
    lost: int,
    period: float,
    budget: str,
    node: str,
    by_namespace: dict[str, int] | None = None,
) -> dict[str, str]:
    """What the budget held back (in all, and by the namespace whose share it was) and
    the capture lost since the last summary. `budget` says what the budget is."""
    ranked = sorted((by_namespace or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    whose = ", ".join(f"{ns or '(no namespace)'} {n}" for ns, n in ranked[:SUMMARY_NAMESPACES])
    more = len(ranked) - SUMMARY_NAMESPACES
    whose += f" and {more} more namespaces" if more > 0 else ""
    return {
        "MESSAGE": (
            f"drop log: {suppressed} denied connections not logged in the last {period:.0f} s "
            f"({budget}){f': {whose}' if whose else ''}; {lost} packet events lost in capture"
        ),
        "PICKET_VERDICT": "suppressed",
        "PICKET_SUPPRESSED": str(suppressed),
        "PICKET_SUPPRESSED_NAMESPACES": ",".join(f"{ns}={n}" for ns, n in ranked),
        "PICKET_LOST": str(lost),
        "PICKET_NODE": node,
    }


SUMMARY_NAMESPACES = 5  # named in a summary's message; the field has them all
