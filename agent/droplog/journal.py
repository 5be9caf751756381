"""Writing drop records: journald's native protocol (python-systemd), or JSON lines on
stderr where there is no journald (a container without the host's journal socket: the
records then land in the container log, and `picket drops --file` reads them)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TextIO

log = logging.getLogger("picket.droplog")
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
IDENTIFIER = "picket"


class RecordWriter:
    def __init__(self, socket_path: Path = JOURNAL_SOCKET, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._send = None
        if socket_path.exists():
            try:
                from systemd import journal

                self._send = journal.send
            except ImportError:
                log.warning("python-systemd is missing: drop records go to stderr as JSON")
        if self._send is None:
            log.warning("no journald socket at %s: drop records go to stderr as JSON", socket_path)
        self.failures = 0

    @property
    def target(self) -> str:
        return "journald" if self._send is not None else "stderr"

    def write(self, fields: dict[str, str]) -> None:
        if self._send is not None:
            try:
                self._send(SYSLOG_IDENTIFIER=IDENTIFIER, **fields)
                return
            except OSError as exc:  # journald restarting, or its socket full: say so once
                self.failures += 1
                if self.failures == 1:
                    log.warning("journald refused a drop record (%s); using stderr meanwhile", exc)
        record = {
            "SYSLOG_IDENTIFIER": IDENTIFIER,
            "_PID": str(os.getpid()),
            "__REALTIME_TIMESTAMP": str(time.time_ns() // 1000),  # as journalctl -o json
            **fields,
        }
        self.stream.write(json.dumps(record, sort_keys=True) + "\n")
        self.stream.flush()
