"""A lab agent's own /metrics, read straight from its node (the Prometheus lab test
scrapes through Debian's Prometheus; these are point reads for one counter). The agent
reads the dataplane on a timer: `fresh_sum` waits for a reading taken after a moment."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from lab.config import LabNode


def node_of(node_name: str) -> LabNode:
    """The lab node called `node_name` ("node-2")."""
    return LabNode(int(node_name.rpartition("-")[2]))


READING = "picket_dataplane_reading_timestamp_seconds"


def fresh_sum(node: LabNode, name: str, after: float, timeout: float = 20, **labels: str) -> float:
    """`metric_sum` once the agent's dataplane reading was taken after `after` (a
    time.time()), so that it counts what happened before then."""
    deadline = time.monotonic() + timeout
    while True:
        text = _scrape(node)
        if _sum(text, READING) > after or time.monotonic() > deadline:
            return _sum(text, name, **labels)
        time.sleep(0.5)


def metric_sum(node: LabNode, name: str, **labels: str) -> float:
    """The sum of `name`'s samples on `node`'s agent whose labels include `labels`
    (0 when there are none yet)."""
    return _sum(_scrape(node), name, **labels)


def readyz(node: LabNode) -> tuple[int, str]:
    """`node`'s agent's /readyz: the status and the reason it gives."""
    url = node.metrics_url.rsplit("/", 1)[0] + "/readyz"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()
    except OSError as exc:  # not serving (yet)
        return 0, str(exc)


def _scrape(node: LabNode) -> str:
    with urllib.request.urlopen(node.metrics_url, timeout=10) as response:
        return response.read().decode()


def _sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total
