"""The lab kube-proxy's whole render, as golden files: for each case in
tests/unit/golden/kubeproxy/*.yaml (Services and EndpointSlices, as an operator would
write them) and each node, the iptables-restore text it applies, the status file it
writes and the problems it logs. Regenerate after a deliberate change with

    PICKET_REGENERATE=1 .venv/bin/python -m pytest tests/unit/test_kubeproxy_golden.py

and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from lab.kubeproxy.objects import service_ports, slice_endpoints
from lab.kubeproxy.render import NodeContext, render, restore_text

CASES = Path(__file__).parent / "golden" / "kubeproxy"
INPUTS = sorted(CASES.glob("*.yaml"))
NODES = {"node-1": "198.18.1.0/24", "node-2": "198.18.2.0/24"}


def rendered(case: Path, node: str) -> str:
    docs = [d for d in yaml.safe_load_all(case.read_text()) if d]
    services = [d for d in docs if d["kind"] == "Service"]
    slices = [d for d in docs if d["kind"] == "EndpointSlice"]
    ports, problems = service_ports(services)
    rules = render(ports, slice_endpoints(slices, node), NodeContext(node, NODES[node]))
    status = json.dumps({"services": rules.programmed}, indent=1, sort_keys=True)
    return (
        f"# {case.name} on {node} (pod CIDR {NODES[node]}): iptables-restore --noflush\n"
        f"{restore_text(rules)}"
        f"# status file\n{status}\n"
        f"# problems logged\n" + "".join(f"{p}\n" for p in problems)
    )


@pytest.mark.parametrize("node", sorted(NODES))
@pytest.mark.parametrize("case", INPUTS, ids=[p.stem for p in INPUTS])
def test_golden(case: Path, node: str) -> None:
    path = CASES / f"{case.stem}.{node}.restore"
    text = rendered(case, node)
    if os.environ.get("PICKET_REGENERATE"):
        path.write_text(text)
    assert text == path.read_text()


def test_every_golden_file_is_tested() -> None:
    outputs = {f"{case.stem}.{node}.restore" for case in INPUTS for node in NODES}
    assert {p.name for p in CASES.iterdir()} == outputs | {p.name for p in INPUTS}
