"""Drop-log records as journald holds them, shared by the `picket drops` unit tests and
the journald lab test."""

from __future__ import annotations

from datetime import UTC, datetime

# 2026-11-22 15:14:50.5 UTC, as journald writes it: microseconds since the epoch.
STAMP = str(int(datetime(2026, 11, 22, 15, 14, 50, tzinfo=UTC).timestamp()) * 1_000_000 + 500_000)


def drop(**fields: str) -> dict[str, str]:
    record = {
        "MESSAGE": "DROP ingress TCP x/a:41234 -> y/db:5432; y/db is isolated by "
        "y/default-deny, y/allow-backend; no rule admits x/a",
        "SYSLOG_IDENTIFIER": "picket",
        "PICKET_VERDICT": "drop",
        "PICKET_DIRECTION": "ingress",
        "PICKET_PROTOCOL": "TCP",
        "PICKET_SRC_NAMESPACE": "x",
        "PICKET_SRC_POD": "a",
        "PICKET_SRC_IP": "10.1.0.5",
        "PICKET_SRC_PORT": "41234",
        "PICKET_DST_NAMESPACE": "y",
        "PICKET_DST_POD": "db",
        "PICKET_DST_IP": "10.2.0.7",
        "PICKET_DST_PORT": "5432",
        "PICKET_POLICIES": "y/default-deny,y/allow-backend",
        "PICKET_NODE": "node-1",
        "PICKET_REPEATS": "3",
        "__REALTIME_TIMESTAMP": STAMP,
    }
    record.update(fields)
    return record


def to_external(**fields: str) -> dict[str, str]:
    """y/web's egress to an address outside the cluster, in audit mode."""
    return drop(
        PICKET_VERDICT="would-drop",
        PICKET_DIRECTION="egress",
        PICKET_PROTOCOL="UDP",
        PICKET_SRC_NAMESPACE="y",
        PICKET_SRC_POD="web",
        PICKET_SRC_IP="10.2.0.9",
        PICKET_SRC_PORT="5353",
        PICKET_DST_NAMESPACE="",
        PICKET_DST_POD="",
        PICKET_DST_IP="203.0.113.9",
        PICKET_DST_PORT="53",
        PICKET_DST_KIND="external",
        PICKET_POLICIES="y/egress-lock",
        PICKET_NODE="node-2",
        PICKET_REPEATS="1",
        **fields,
    )
