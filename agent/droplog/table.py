"""Drop records as `picket drops` shows them: which records a filter keeps, and the table.

Pure: records arrive as dicts of the fields the agent writes (as `journalctl -o json`
prints them, or as the agent's stderr fallback writes them, one JSON object a line);
reading the journal or a file is the command's business."""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from agent.droplog.events import POLICY, SPOOFED

SUPPRESSED = "suppressed"
VERDICTS = ("drop", "would-drop", SUPPRESSED)
COLUMNS = (
    "TIME",
    "NODE",
    "VERDICT",
    "DIR",
    "PROTO",
    "SOURCE",
    "DESTINATION",
    "POLICIES",
    "REPEATS",
)
# Follow mode prints rows before it has seen them all, so it cannot size columns to the
# data; these fit the usual values (a long pod name just pushes the rest of its row).
FOLLOW_WIDTHS = (19, 12, 10, 7, 5, 28, 36, 30, 7)
SEPARATOR = "  "
MISSING = "-"

# Who a record names: source, destination, and, for a forged source, the pod that sent
# it (PICKET_SENDER_*), which filters by pod or namespace find as well.
SIDES = ("SRC", "DST", "SENDER")

# A kubelet container log line (CRI format): "<RFC 3339 time> <stream> <F|P> <text>".
_CRI_LINE = re.compile(r"^(\S+) (?:stdout|stderr) [FP] (.*)$")


@dataclass(frozen=True)
class DropFilter:
    """What the user asked to see; None means any. `pod`, `policy` and `service` are
    "name" or "namespace/name"."""

    namespace: str | None = None
    pod: str | None = None
    policy: str | None = None
    node: str | None = None
    verdict: str | None = None
    service: str | None = None

    @property
    def names_a_connection(self) -> bool:
        """Whether the filter needs the connection's endpoints or policies, which a rate
        limit summary does not carry (it counts records it did not write, of any pod)."""
        return any(x is not None for x in (self.namespace, self.pod, self.policy, self.service))

    def matches(self, record: dict[str, Any]) -> bool:
        if not is_drop_record(record):
            return False
        if self.node is not None and record.get("PICKET_NODE") != self.node:
            return False
        if self.verdict is not None and record.get("PICKET_VERDICT") != self.verdict:
            return False
        if is_summary(record):
            return not self.names_a_connection
        if self.namespace is not None and self.namespace not in (
            record.get(f"PICKET_{side}_NAMESPACE") for side in SIDES
        ):
            return False
        if self.pod is not None and not _pod_matches(record, self.pod):
            return False
        if self.service is not None and not _named(record.get("PICKET_SERVICE"), self.service):
            return False
        return self.policy is None or _policy_matches(record, self.policy)


def journal_matches(drop_filter: DropFilter) -> list[str]:
    """journalctl field matches that narrow the read before Python sees it. Only exact
    single-field ones: journalctl ANDs different fields but has no OR across two fields
    short of repeating every term, so "source or destination" is left to `matches`."""
    matches = ["SYSLOG_IDENTIFIER=picket"]
    if drop_filter.node is not None:
        matches.append(f"PICKET_NODE={drop_filter.node}")
    if drop_filter.verdict is not None:
        matches.append(f"PICKET_VERDICT={drop_filter.verdict}")
    if drop_filter.service is not None and "/" in drop_filter.service:
        matches.append(f"PICKET_SERVICE={drop_filter.service}")
    return matches


def _pod_matches(record: dict[str, Any], pod: str) -> bool:
    namespace, _, name = pod.rpartition("/")
    for side in SIDES:
        if record.get(f"PICKET_{side}_POD") != name or not name:
            continue
        if not namespace or record.get(f"PICKET_{side}_NAMESPACE") == namespace:
            return True
    return False


def _named(element: object, wanted: str) -> bool:
    """`element` (namespace/name) is `wanted`, given as namespace/name or as name."""
    if not isinstance(element, str) or not element:
        return False
    return element == wanted or ("/" not in wanted and element.rpartition("/")[2] == wanted)


def _policy_matches(record: dict[str, Any], policy: str) -> bool:
    return any(_named(element, policy) for element in policy_list(record))


def policy_list(record: dict[str, Any]) -> list[str]:
    return [p.strip() for p in str(record.get("PICKET_POLICIES") or "").split(",") if p.strip()]


def is_drop_record(record: dict[str, Any]) -> bool:
    """Only records the drop log wrote: the agent may log other things as "picket"."""
    return bool(record.get("PICKET_VERDICT"))


def is_summary(record: dict[str, Any]) -> bool:
    return record.get("PICKET_VERDICT") == SUPPRESSED


def normalize(record: dict[str, Any]) -> dict[str, Any]:
    """journalctl -o json prints a field that is not valid UTF-8 as an array of byte
    values, and one that occurs more than once as an array of its values; make every
    field a string (the last value, as the agent writes each field once)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, list) and value and all(isinstance(b, int) for b in value):
            value = bytes(b & 0xFF for b in value).decode("utf-8", "replace")
        elif isinstance(value, list):
            value = _last_string(value)
        out[key] = value
    return out


def _last_string(values: list[Any]) -> str | None:
    for value in reversed(values):
        if isinstance(value, list):
            return bytes(b & 0xFF for b in value).decode("utf-8", "replace")
        if value is not None:
            return str(value)
    return None


def parse_line(line: str) -> dict[str, Any] | None:
    """One record from a line of JSON, as journalctl or the agent's stderr fallback
    writes them, also behind a kubelet (CRI) log prefix, whose time then stands in for
    the journal's. None for anything else (other log lines, partial writes)."""
    text = line.strip()
    stamp = None
    cri = _CRI_LINE.match(text)
    if cri and not text.startswith("{"):
        stamp, text = cri.group(1), cri.group(2).strip()
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    record = normalize(record)
    if stamp is not None and "__REALTIME_TIMESTAMP" not in record:
        micros = _rfc3339_micros(stamp)
        if micros is not None:
            record["__REALTIME_TIMESTAMP"] = str(micros)
    return record


def _rfc3339_micros(stamp: str) -> int | None:
    # Container runtimes write nanoseconds; datetime takes at most microseconds.
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", stamp)
    if not m:
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    fraction = (m.group(2) or "")[:6].ljust(6, "0")
    try:
        when = datetime.fromisoformat(f"{m.group(1)}.{fraction}{zone}")
    except ValueError:
        return None
    return int(when.timestamp()) * 1_000_000 + when.microsecond


def format_time(record: dict[str, Any], tz: tzinfo | None = None) -> str:
    """The journal's receive time in local time (or `tz`); records from a file written by
    the stderr fallback have none."""
    try:
        micros = int(record["__REALTIME_TIMESTAMP"])
    except (KeyError, TypeError, ValueError):
        return MISSING
    return datetime.fromtimestamp(micros / 1_000_000, tz).strftime("%Y-%m-%d %H:%M:%S")


def destination(record: dict[str, Any]) -> str:
    """The destination's `endpoint`, and the Service (or the address, when no Service
    was known) a DNATed connection went through: "y/b:80 via y/web"."""
    where = endpoint(record, "DST")
    if record.get("PICKET_SERVICE"):
        return f"{where} via {record['PICKET_SERVICE']}"
    if record.get("PICKET_SERVICE_IP"):
        port = str(record.get("PICKET_SERVICE_PORT") or "")
        address = record["PICKET_SERVICE_IP"] + ("" if port in ("", "0") else f":{port}")
        return f"{where} via {address}"
    return where


def endpoint(record: dict[str, Any], side: str) -> str:
    """ns/pod:port for a pod, ip:port otherwise; no port for protocols without one."""
    pod = record.get(f"PICKET_{side}_POD") or ""
    namespace = record.get(f"PICKET_{side}_NAMESPACE") or ""
    address = f"{namespace}/{pod}" if pod else record.get(f"PICKET_{side}_IP") or MISSING
    port = str(record.get(f"PICKET_{side}_PORT") or "")
    if port in ("", "0"):
        return address
    return f"{address}:{port}"


def row(record: dict[str, Any], tz: tzinfo | None = None) -> list[str]:
    """The table cells of one record. A summary's cells after VERDICT are one sentence,
    which `format_table` lets run across the remaining columns."""
    head = [format_time(record, tz), record.get("PICKET_NODE") or MISSING]
    verdict = record.get("PICKET_VERDICT") or MISSING
    if is_summary(record):
        return [*head, verdict, summary_text(record)]
    reason = record.get("PICKET_REASON") or POLICY
    policies = ",".join(policy_list(record)) or MISSING
    if reason == SPOOFED:
        policies = "(spoofed source)"
    elif reason != POLICY:  # dropped without a connection: say why before whose pod
        policies = f"({reason}) {policies}"
    return [
        *head,
        verdict,
        record.get("PICKET_DIRECTION") or MISSING,
        record.get("PICKET_PROTOCOL") or MISSING,
        source(record),
        destination(record),
        policies,
        str(record.get("PICKET_REPEATS") or "1"),
    ]


def source(record: dict[str, Any]) -> str:
    """The source's `endpoint`; for a forged source, the pod that sent it and whom it
    posed as: "x/b as x/a" (or as an address no pod has)."""
    claimed = endpoint(record, "SRC")
    if record.get("PICKET_REASON") != SPOOFED:
        return claimed
    sender = record.get("PICKET_SENDER_POD") or ""
    namespace = record.get("PICKET_SENDER_NAMESPACE") or ""
    who = f"{namespace}/{sender}" if sender else record.get("PICKET_SENDER_INTERFACE") or "?"
    return f"{who} as {claimed}"


def summary_text(record: dict[str, Any]) -> str:
    """What a summary counts: connections the drop log's budget held back, and packet
    events the capture lost (when there were any)."""
    text = f"{record.get('PICKET_SUPPRESSED') or '?'} denied connections not logged (rate limit)"
    lost = str(record.get("PICKET_LOST") or "0")
    return text if lost == "0" else f"{text}; {lost} packet events lost in capture"


def column_widths(rows: Iterable[Sequence[str]]) -> tuple[int, ...]:
    widths = [len(c) for c in COLUMNS]
    for cells in rows:
        # A summary's last cell is a sentence running across the columns left: it sizes
        # none of them, but its first cells (VERDICT "suppressed") size theirs.
        sized = cells if len(cells) == len(COLUMNS) else cells[:-1]
        widths[: len(sized)] = [max(w, len(c)) for w, c in zip(widths, sized, strict=False)]
    return tuple(widths)


def format_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    padded = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False)]
    return SEPARATOR.join([*padded, cells[-1]]).rstrip()


def header(widths: Sequence[int]) -> str:
    return format_line(COLUMNS, widths)


def format_table(records: Iterable[dict[str, Any]], tz: tzinfo | None = None) -> str:
    """Header and one line per record, in the order given (the journal's: newest last)."""
    rows = [row(r, tz) for r in records]
    widths = column_widths(rows)
    return "\n".join([header(widths), *(format_line(cells, widths) for cells in rows)])


def select(
    records: Iterable[dict[str, Any]], drop_filter: DropFilter, last: int | None
) -> list[dict[str, Any]]:
    """The records the filter keeps, only the `last` of them (None: all)."""
    # A deque, so an hour of a busy node's journal is never all in memory at once.
    return list(deque((r for r in records if drop_filter.matches(r)), maxlen=last))
