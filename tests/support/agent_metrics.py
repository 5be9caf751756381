"""A lab agent's own /metrics, read straight from its node (the Prometheus lab test
scrapes through Debian's Prometheus; these are point reads for one counter)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from lab.config import LabNode


def node_of(node_name: str) -> LabNode:
    """The lab node called `node_name` ("node-2")."""
    return LabNode(int(node_name.rpartition("-")[2]))


def metric_sum(node: LabNode, name: str, **labels: str) -> float:
    """The sum of `name`'s samples on `node`'s agent whose labels include `labels`
    (0 when there are none yet)."""
    with urllib.request.urlopen(node.metrics_url, timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total
