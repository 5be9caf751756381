"""`picket drops` without a journal: which records the filters keep, how rows read, and
the command on a log file (the agent's stderr fallback)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.cli import main
from agent.droplog.table import (
    COLUMNS,
    DropFilter,
    endpoint,
    format_table,
    journal_matches,
    normalize,
    parse_line,
    row,
    select,
)
from tests.support.drops import STAMP, drop, to_external


def summary(count: str = "17", node: str = "node-1") -> dict[str, str]:
    return {
        "MESSAGE": f"drop log: {count} denied connections not logged in the last 10 s "
        "(budget 100/s, burst 200); 0 packet events lost in capture",
        "SYSLOG_IDENTIFIER": "picket",
        "PICKET_VERDICT": "suppressed",
        "PICKET_SUPPRESSED": count,
        "PICKET_LOST": "0",
        "PICKET_NODE": node,
        "__REALTIME_TIMESTAMP": STAMP,
    }


RECORDS = [drop(), to_external(), summary()]


def kept(**criteria: str) -> list[dict[str, str]]:
    return [r for r in RECORDS if DropFilter(**criteria).matches(r)]


# --- filters -------------------------------------------------------------------------


def test_no_filter_keeps_every_drop_record_but_not_other_picket_logs():
    assert kept() == RECORDS
    assert not DropFilter().matches({"SYSLOG_IDENTIFIER": "picket", "MESSAGE": "started"})


def test_namespace_matches_either_side():
    assert kept(namespace="x") == [RECORDS[0]]
    assert kept(namespace="y") == RECORDS[:2]
    assert kept(namespace="z") == []


@pytest.mark.parametrize(
    ("pod", "expected"),
    [("db", [0]), ("y/db", [0]), ("x/db", []), ("a", [0]), ("x/a", [0]), ("web", [1]), ("", [])],
)
def test_pod_matches_either_side_by_name_or_namespace_and_name(pod, expected):
    assert kept(pod=pod) == [RECORDS[i] for i in expected]


def test_an_address_that_is_no_pod_is_not_matched_by_an_empty_pod_name():
    # The external peer has PICKET_DST_POD="" and a namespace of "": "/" must not match.
    assert kept(pod="/") == []


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("allow-backend", [0]),
        ("y/allow-backend", [0]),
        ("z/allow-backend", []),
        ("allow", []),  # whole names only
        ("egress-lock", [1]),
    ],
)
def test_policy_matches_an_element_of_the_list(policy, expected):
    assert kept(policy=policy) == [RECORDS[i] for i in expected]


def test_node_and_verdict():
    assert kept(node="node-1") == [RECORDS[0], RECORDS[2]]
    assert kept(verdict="would-drop") == [RECORDS[1]]
    assert kept(verdict="suppressed") == [RECORDS[2]]
    assert kept(node="node-2", verdict="drop") == []


def test_summaries_are_left_out_when_the_filter_names_a_connection():
    # A summary counts records of any pod: under --namespace it would claim drops that
    # may be another namespace's.
    for criteria in ({"namespace": "x"}, {"pod": "a"}, {"policy": "allow-backend"}):
        assert summary() not in kept(**criteria)
    assert summary() in kept(node="node-1")


def test_journal_matches_narrow_only_by_exact_single_fields():
    assert journal_matches(DropFilter()) == ["SYSLOG_IDENTIFIER=picket"]
    assert journal_matches(DropFilter(node="n1", verdict="drop", namespace="x", pod="a")) == [
        "SYSLOG_IDENTIFIER=picket",
        "PICKET_NODE=n1",
        "PICKET_VERDICT=drop",
    ]


def test_select_keeps_the_last_n_after_filtering_in_order():
    records = [drop(PICKET_SRC_PORT=str(p)) for p in range(1000, 1010)]
    records.insert(5, to_external())
    chosen = select(records, DropFilter(namespace="x"), 3)
    assert [r["PICKET_SRC_PORT"] for r in chosen] == ["1007", "1008", "1009"]
    assert len(select(records, DropFilter(), None)) == 11
    assert select(records, DropFilter(), 0) == []


def spoofed_record() -> dict[str, str]:
    """x/b forging x/a's address towards y/db, as the agent writes it."""
    return drop(
        PICKET_REASON="spoofed",
        PICKET_DIRECTION="egress",
        PICKET_PROTOCOL="UDP",
        PICKET_POLICIES="",
        PICKET_SENDER_NAMESPACE="x",
        PICKET_SENDER_POD="b",
        PICKET_SENDER_INTERFACE="veth-x-b",
        PICKET_SRC_PORT="0",
        PICKET_DST_PORT="0",
    )


def test_a_forged_source_is_found_by_its_sender_too():
    record = spoofed_record()
    assert DropFilter(pod="x/b").matches(record)
    assert DropFilter(pod="x/a").matches(record)  # whom it posed as
    assert not DropFilter(pod="x/c").matches(record)
    assert DropFilter(namespace="x").matches(drop(**{**record, "PICKET_SRC_NAMESPACE": "w"}))


def test_a_forged_source_row_names_the_sender_and_whom_it_posed_as():
    cells = row(spoofed_record(), UTC)
    assert cells[5:8] == ["x/b as x/a", "y/db", "(spoofed source)"]
    unknown = drop(**{**spoofed_record(), "PICKET_SENDER_POD": "", "PICKET_SRC_POD": ""})
    assert row(unknown, UTC)[5] == "veth-x-b as 10.1.0.5"


def test_an_untracked_packets_row_says_why_before_the_policies():
    cells = row(drop(PICKET_REASON="unparsed", PICKET_SRC_PORT="0", PICKET_DST_PORT="0"), UTC)
    assert cells[5:8] == ["x/a", "y/db", "(unparsed) y/default-deny,y/allow-backend"]
    assert row(drop(PICKET_REASON="policy"), UTC)[7] == "y/default-deny,y/allow-backend"


# --- rows and the table ------------------------------------------------------------


def test_a_pod_to_pod_row():
    assert row(drop(), UTC) == [
        "2026-11-22 15:14:50",
        "node-1",
        "drop",
        "ingress",
        "TCP",
        "x/a:41234",
        "y/db:5432",
        "y/default-deny,y/allow-backend",
        "3",
    ]


def test_addresses_that_are_no_pods_show_as_ip_and_port():
    assert endpoint(to_external(), "DST") == "203.0.113.9:53"
    node_peer = drop(PICKET_SRC_POD="", PICKET_SRC_NAMESPACE="", PICKET_SRC_KIND="node")
    assert endpoint(node_peer, "SRC") == "10.1.0.5:41234"


def test_portless_protocols_show_no_port():
    icmp = drop(PICKET_PROTOCOL="ICMP", PICKET_SRC_PORT="0", PICKET_DST_PORT="0")
    assert row(icmp, UTC)[4:7] == ["ICMP", "x/a", "y/db"]


def test_missing_fields_show_as_dashes_and_repeats_default_to_one():
    bare = {"PICKET_VERDICT": "drop"}
    assert row(bare, UTC) == ["-", "-", "drop", "-", "-", "-", "-", "-", "1"]


def test_time_is_local_by_default():
    expected = datetime.fromtimestamp(int(STAMP) / 1e6).strftime("%Y-%m-%d %H:%M:%S")
    assert row(drop())[0] == expected


def test_the_table_aligns_columns_and_a_summary_says_how_many_were_suppressed():
    lines = format_table(RECORDS, UTC).splitlines()
    assert lines[0].split() == list(COLUMNS)
    assert len(lines) == 4
    # Every column starts where its heading does.
    for heading in ("SOURCE", "DESTINATION", "POLICIES", "REPEATS"):
        start = lines[0].index(heading)
        assert lines[1][start - 2 : start] == "  "
        assert lines[1][start] != " "
        assert lines[2][start] != " "
    assert lines[1].split() == " ".join(row(drop(), UTC)).split()
    assert lines[3].split()[:4] == ["2026-11-22", "15:14:50", "node-1", "suppressed"]
    assert lines[3].endswith("17 denied connections not logged (rate limit)")


def test_a_summary_says_what_the_capture_lost_when_it_lost_any():
    assert row({**summary("5"), "PICKET_LOST": "3"}, UTC)[3] == (
        "5 denied connections not logged (rate limit); 3 packet events lost in capture"
    )
    assert row({"PICKET_VERDICT": "suppressed"}, UTC)[3] == (
        "? denied connections not logged (rate limit)"
    )


def test_a_summary_alone_with_short_verdicts_still_fits_its_column():
    lines = format_table([drop(), summary()], UTC).splitlines()
    start = lines[0].index("DIR")
    assert lines[2].split()[3] == "suppressed"
    assert lines[2][start - 2 : start] == "  " and lines[1][start - 2 : start] == "  "


# --- parsing lines -------------------------------------------------------------------


def test_parse_line_takes_json_objects_and_skips_the_rest():
    assert parse_line(json.dumps(drop())) == drop()
    for line in ("", "agent starting", "{not json", "[1, 2]", '"text"'):
        assert parse_line(line) is None


def test_parse_line_reads_kubelet_container_logs_and_takes_their_time():
    record = {k: v for k, v in drop().items() if k != "__REALTIME_TIMESTAMP"}
    line = f"2026-11-22T15:14:50.500000123Z stderr F {json.dumps(record)}"
    parsed = parse_line(line)
    assert parsed is not None
    assert parsed["__REALTIME_TIMESTAMP"] == STAMP
    assert parse_line("2026-11-22T15:14:50Z stdout F plain text") is None


def test_normalize_decodes_journalctl_arrays():
    record = normalize({"MESSAGE": [104, 105], "PICKET_NODE": ["a", "b"], "X": "y"})
    assert record == {"MESSAGE": "hi", "PICKET_NODE": "b", "X": "y"}


# --- the command on a file -----------------------------------------------------------


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent.log"
    lines = ["picket agent starting on node-1", *(json.dumps(r) for r in RECORDS), "{trunc"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["drops", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_file_table(capsys, log_file):
    code, out, err = run(capsys, "--file", str(log_file))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == list(COLUMNS)
    assert [line.split()[3] for line in lines[1:]] == ["drop", "would-drop", "suppressed"]


def test_file_filters_lines_and_json(capsys, log_file):
    code, out, _ = run(capsys, "--file", str(log_file), "--pod", "y/web", "--json")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [to_external()]
    code, out, _ = run(capsys, "--file", str(log_file), "-n", "1", "--json")
    assert [json.loads(line) for line in out.splitlines()] == [summary()]


def test_file_errors(capsys, tmp_path):
    code, out, err = run(capsys, "--file", str(tmp_path / "missing.log"))
    assert (code, out) == (1, "")
    assert err.strip().splitlines() == [
        f"picket drops: cannot read {tmp_path / 'missing.log'}: No such file or directory"
    ]
    code, _, err = run(capsys, "--file", str(tmp_path), "--follow")
    assert code == 2 and "--follow and --since read the journal" in err


def test_missing_journalctl_is_one_line_and_exit_1(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    code, out, err = run(capsys)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "picket drops: journalctl not found (use --file to read a log file)"
    ]


def test_failing_journalctl_is_one_line_and_exit_1(capsys, monkeypatch, tmp_path):
    fake = tmp_path / "journalctl"
    fake.write_text("#!/bin/sh\necho 'Failed to parse timestamp: soon' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    code, out, err = run(capsys, "--since", "soon")
    assert (code, out) == (1, "")
    assert err.splitlines() == ["picket drops: journalctl failed: Failed to parse timestamp: soon"]


def test_journalctl_is_asked_for_picket_records_with_cheap_matches(capsys, monkeypatch, tmp_path):
    # A stand-in journalctl that records its arguments and prints one record.
    args_file = tmp_path / "args"
    fake = tmp_path / "journalctl"
    fake.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {args_file}\ncat <<\'EOF\'\n{json.dumps(drop())}\nEOF\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    code, out, _ = run(capsys, "--node", "node-1", "--namespace", "x")
    assert code == 0
    assert out.splitlines()[1].split() == " ".join(row(drop())).split()
    argv = args_file.read_text().splitlines()
    assert argv[:2] == ["--output=json", "--no-pager"]
    assert argv[argv.index("--since") + 1] == "1 hour ago"
    assert "SYSLOG_IDENTIFIER=picket" in argv and "PICKET_NODE=node-1" in argv
    assert not any(a.startswith("PICKET_SRC_NAMESPACE") for a in argv)
