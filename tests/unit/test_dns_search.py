"""A pod's resolver: the names it queries, and how it walks them (pure)."""

from __future__ import annotations

import pytest

from lab.dns.search import (
    ANSWER,
    NODATA,
    NXDOMAIN,
    SERVFAIL,
    TIMEOUT,
    UNREACHABLE,
    Reply,
    candidates,
    search_list,
    walk,
)

ZONE = "cluster.local"


def test_search_list_is_what_a_kubelet_writes():
    assert search_list("x", ZONE) == ["x.svc.cluster.local", "svc.cluster.local", "cluster.local"]


def searched(name):
    return [f"{name}.x.svc.cluster.local.", f"{name}.svc.cluster.local.", f"{name}.cluster.local."]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web", [*searched("web"), "web."]),
        ("web.y", [*searched("web.y"), "web.y."]),
        # ndots 5: a name with four dots is still searched first, one with five is not.
        (
            "web.y.svc.cluster.local",
            [*searched("web.y.svc.cluster.local"), "web.y.svc.cluster.local."],
        ),
        ("a.b.c.d.e.f", ["a.b.c.d.e.f.", *searched("a.b.c.d.e.f")]),
        # A name ending in a dot is absolute: no search.
        ("web.y.svc.cluster.local.", ["web.y.svc.cluster.local."]),
    ],
)
def test_candidates(name, expected):
    assert candidates(name, "x", ZONE) == expected


@pytest.mark.parametrize("bad", ["", ".", "a..b", ".a", "a" * 64 + ".x", "a." * 127 + "b"])
def test_names_no_resolver_would_send_are_refused(bad):
    with pytest.raises(ValueError):
        candidates(bad, "x", ZONE)


def replies(table):
    asked = []

    def ask(name):
        asked.append(name)
        return table.get(name, Reply(NXDOMAIN))

    return ask, asked


NAMES = ["a.x.svc.cluster.local.", "a.svc.cluster.local.", "a.cluster.local.", "a."]


def test_walk_stops_at_the_first_answer():
    ask, asked = replies({NAMES[1]: Reply(ANSWER, ("198.19.240.5",))})
    found = walk(NAMES, ask)
    assert (found.ok, found.name, found.addresses) == (True, NAMES[1], ("198.19.240.5",))
    assert asked == NAMES[:2] and found.tried == tuple(NAMES[:2])


def test_walk_reports_nxdomain_when_no_name_exists():
    ask, asked = replies({})
    found = walk(NAMES, ask)
    assert (found.ok, found.outcome, found.addresses, asked) == (False, NXDOMAIN, (), NAMES)


@pytest.mark.parametrize("stop", [TIMEOUT, UNREACHABLE, "REFUSED"])
def test_walk_stops_at_a_timeout_or_an_unreachable_server(stop):
    ask, asked = replies({NAMES[0]: Reply(stop), NAMES[1]: Reply(ANSWER, ("198.19.240.5",))})
    found = walk(NAMES, ask)
    assert (found.outcome, asked) == (stop, NAMES[:1])


@pytest.mark.parametrize(
    ("table", "outcome"),
    [
        ({NAMES[2]: Reply(NODATA)}, NODATA),
        ({NAMES[1]: Reply(SERVFAIL)}, SERVFAIL),
        ({NAMES[1]: Reply(SERVFAIL), NAMES[3]: Reply(NODATA)}, NODATA),
    ],
)
def test_walk_goes_on_past_nodata_and_servfail_and_ranks_them_as_glibc(table, outcome):
    ask, asked = replies(table)
    assert (walk(NAMES, ask).outcome, asked) == (outcome, NAMES)
