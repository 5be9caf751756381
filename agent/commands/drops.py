"""`picket drops`: the drop log, read back from journald (or a log file) as a table."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from agent.droplog.table import (
    FOLLOW_WIDTHS,
    VERDICTS,
    DropFilter,
    column_widths,
    format_line,
    format_table,
    header,
    journal_matches,
    parse_line,
    row,
    select,
)

DEFAULT_SINCE = "1 hour ago"
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class DropsError(Exception):
    """A failure worth one line to the user (journalctl missing or failing, bad file)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "drops",
        help="show recent denied connections from the drop log",
        description="Show the agent's drop records (journald, SYSLOG_IDENTIFIER=picket) as a "
        "table, newest last. Rate limit summaries show as rows counting what was "
        "suppressed, unless --namespace, --pod, --policy or --service narrow the view (a summary "
        "names no connection). Exit status 0, 1 when the journal cannot be read, 2 on bad usage.",
    )
    p.add_argument("--namespace", help="only connections with this source or destination namespace")
    p.add_argument("--pod", help="only connections from or to this pod: NAME or NAMESPACE/NAME")
    p.add_argument(
        "--policy", help="only connections of pods isolated by this policy: NAME or NAMESPACE/NAME"
    )
    p.add_argument(
        "--service",
        help="only connections through this Service (ClusterIP, node port, externalIP): "
        "NAME or NAMESPACE/NAME",
    )
    p.add_argument("--node", help="only records of this node's agent")
    p.add_argument("--verdict", choices=VERDICTS, help="only records with this verdict")
    p.add_argument(
        "--since",
        help=f"start of the time window, in journalctl's syntax (default: {DEFAULT_SINCE!r})",
    )
    p.add_argument(
        "-n",
        "--lines",
        type=_lines,
        default=50,
        metavar="N",
        help="show the last N matching records, or 'all' (default: 50)",
    )
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep running and print new records as they arrive (Ctrl-C ends it)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the matching records as JSON lines instead"
    )
    p.add_argument(
        "--file",
        metavar="PATH",
        help="read JSON-lines records from PATH ('-': standard input) instead of journald, "
        "e.g. an agent's container log where it had no journald and wrote to stderr; other "
        "lines are skipped",
    )
    p.set_defaults(func=run)


def _lines(text: str) -> int | None:
    if text == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"not a count of lines: {text!r}")
    return n


def run(args: argparse.Namespace) -> int:
    if args.file is not None and (args.follow or args.since is not None):
        print("picket drops: --follow and --since read the journal, not --file", file=sys.stderr)
        return EXIT_BAD_INPUT
    drop_filter = DropFilter(
        namespace=args.namespace,
        pod=args.pod,
        policy=args.policy,
        node=args.node,
        verdict=args.verdict,
        service=args.service,
    )
    # Follow mode runs until a signal; SIGTERM must unwind like Ctrl-C so the journalctl
    # child is stopped rather than left following for nobody.
    if args.follow:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _run(args, drop_filter)
    except DropsError as exc:
        print(f"picket drops: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # The reader went away (`| head`): point stdout at /dev/null so the interpreter's
        # final flush does not fail a second time, and end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace, drop_filter: DropFilter) -> int:
    if args.file is not None:
        records = select(_file_records(args.file), drop_filter, args.lines)
        _print_batch(records, args.json)
        return EXIT_OK
    started = time.time()
    since = args.since if args.since is not None else DEFAULT_SINCE
    read = ["--since", since, *journal_matches(drop_filter)]
    backlog = _JournalBacklog()
    records = select(backlog.records(read), drop_filter, args.lines)
    if not args.follow:
        _print_batch(records, args.json)
        if not records and not args.json:
            _explain_empty(since)
        return EXIT_OK
    widths = tuple(map(max, FOLLOW_WIDTHS, column_widths(row(r) for r in records)))
    if not args.json:
        print(header(widths))
    for record in records:
        _print_one(record, args.json, widths)
    sys.stdout.flush()
    # Continue exactly after the last entry the first read saw (whether or not it passed
    # the filter); with nothing seen, from the moment before it, to the whole second:
    # anything in that second is new, as the first read found nothing at all.
    start = f"--after-cursor={backlog.cursor}" if backlog.cursor else f"--since=@{int(started)}"
    for record in _journal(["--follow", "--lines=all", start, *journal_matches(drop_filter)]):
        if drop_filter.matches(record):
            _print_one(record, args.json, widths)
            sys.stdout.flush()
    return EXIT_OK


def _print_batch(records: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for record in records:
            print(json.dumps(record))
    elif records:
        print(format_table(records))


def _print_one(record: dict[str, Any], as_json: bool, widths: tuple[int, ...]) -> None:
    print(json.dumps(record) if as_json else format_line(row(record), widths))


def _explain_empty(since: str) -> None:
    note = f"no drop records since {since}"
    if not JOURNAL_SOCKET.exists():
        # Without journald the agent writes its drop records to stderr instead.
        note += f"; no journald runs here ({JOURNAL_SOCKET} is absent): try --file on the "
        note += "agent's log"
    print(f"picket drops: {note}", file=sys.stderr)


class _JournalBacklog:
    """One read of the journal so far, remembering the cursor of the last entry it saw."""

    def __init__(self) -> None:
        self.cursor: str | None = None

    def records(self, arguments: list[str]) -> Iterator[dict[str, Any]]:
        for record in _journal(arguments):
            self.cursor = record.get("__CURSOR") or self.cursor
            yield record


def _journal(arguments: list[str]) -> Iterator[dict[str, Any]]:
    """Records from `journalctl -o json`, as it prints them; DropsError if it fails."""
    command = ["journalctl", "--output=json", "--no-pager", *arguments]
    try:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
    except FileNotFoundError:
        raise DropsError("journalctl not found (use --file to read a log file)") from None
    except OSError as exc:
        raise DropsError(f"cannot run journalctl: {exc}") from None
    assert proc.stdout is not None and proc.stderr is not None
    try:
        for line in proc.stdout:
            record = parse_line(line)
            if record is not None:
                yield record
        status = proc.wait()
        if status != 0:
            message = proc.stderr.read().strip().splitlines()
            detail = message[-1] if message else f"exit status {status}"
            raise DropsError(f"journalctl failed: {detail}")
    finally:
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _file_records(path: str) -> Iterator[dict[str, Any]]:
    if path == "-":
        yield from _parsed(sys.stdin)
        return
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            yield from _parsed(stream)
    except OSError as exc:
        raise DropsError(f"cannot read {path}: {exc.strerror or exc}") from None


def _parsed(lines: IO[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        record = parse_line(line)
        if record is not None:
            yield record
