"""Anti-spoofing, as rendered (pure): which (address, interface) pairs each backend
allows a pod to send from, and that the check comes before anything else."""

from __future__ import annotations

from agent.compiler.compile import compile_node
from agent.dataplane import source_check
from agent.dataplane.ebpf import codec
from agent.dataplane.ebpf.entries import MapDelta
from agent.dataplane.ebpf.writes import EndpointWrites, ordered_writes
from agent.dataplane.iptables_render import FORWARD_CHAIN, render
from tests.support.builders import model_cluster, state_of

VETHS = {f"{ns}/{pod}": f"veth-{ns}-{pod}" for ns in "xyz" for pod in "abc"}


def test_each_local_pod_may_send_only_from_its_own_addresses_on_its_own_interface():
    ir = compile_node(state_of(model_cluster()), "node-1")
    links, sources = source_check.render_sets(ir, VETHS)
    local = {ref: VETHS[ref] for ref in ir.endpoints}
    assert local and len(local) < len(VETHS)  # the other node's pods are not ours
    assert sources.members == {
        f"{ip},{VETHS[ref]}" for ref, e in ir.endpoints.items() for ip in e.ips if ip.version == 4
    }
    assert links.members == {
        f"{half},{ifname}" for ifname in local.values() for half in ("0.0.0.0/1", "128.0.0.0/1")
    }
    assert {links.kind, sources.kind} == {"hash:net,iface"}


def test_no_pod_wired_yet_means_no_sets_and_no_rule():
    ir = compile_node(state_of(model_cluster()), "node-1")
    assert source_check.render_sets(ir, {}) == []
    assert not any(source_check.LINKS_SET in r for r in render(ir, {}).chains[FORWARD_CHAIN])


def test_the_check_is_the_first_rule_for_every_pod_selected_or_not():
    ir = compile_node(state_of(model_cluster()), "node-1")  # no policy selects anyone
    chains = render(ir, VETHS, nflog_group=7).chains
    assert chains[FORWARD_CHAIN][0] == source_check.forward_rule()
    assert chains[FORWARD_CHAIN][0].endswith(f"-j {source_check.CHAIN}")
    # The forged packet is logged (the drop log names the sender), then dropped.
    assert chains[source_check.CHAIN] == [
        '-j NFLOG --nflog-group 7 --nflog-prefix "picket spoofed"',
        "-j DROP",
    ]


def test_ebpf_writes_a_pods_sources_before_its_endpoint_and_deletes_them_after():
    key = codec.source_key(7, "198.18.1.5")
    put = ordered_writes(MapDelta(), EndpointWrites(put={7: (300, 1)}, sources_put=[key]))
    names = [name for name, _, _ in put]
    assert names.index("picket_sources") < names.index("picket_endpoints")
    gone = ordered_writes(MapDelta(), EndpointWrites(delete=[7], sources_delete=[key]))
    assert [(n, v) for n, _, v in gone] == [("picket_endpoints", None), ("picket_sources", None)]
