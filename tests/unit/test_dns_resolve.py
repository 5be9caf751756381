"""What `lab resolve` makes of a DNS response to an A or an AAAA query (pure)."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rrset

from lab.dns.resolve import QUERY_TYPES, reply_of
from lab.dns.search import ANSWER, NODATA, Reply

NAME = "web.z.svc.cluster.local."


def response(family, *records, rcode=dns.rcode.NOERROR):
    query = dns.message.make_query(NAME, QUERY_TYPES[family])
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    for rdtype, address in records:
        reply.answer.append(dns.rrset.from_text(NAME, 5, "IN", rdtype, address))
    return reply


def test_an_aaaa_query_answers_the_ipv6_addresses():
    got = response(6, ("AAAA", "2001:2:0:ff00::50"), ("AAAA", "2001:2:0:ff00::51"))
    assert reply_of(got, QUERY_TYPES[6]) == Reply(
        ANSWER, ("2001:2:0:ff00::50", "2001:2:0:ff00::51")
    )


def test_records_of_the_other_type_are_no_answer():
    assert reply_of(response(6, ("A", "198.19.240.50")), QUERY_TYPES[6]) == Reply(NODATA)
    assert reply_of(response(4, ("AAAA", "2001:2:0:ff00::50")), QUERY_TYPES[4]) == Reply(NODATA)
    assert reply_of(response(4, ("A", "198.19.240.50")), QUERY_TYPES[4]) == Reply(
        ANSWER, ("198.19.240.50",)
    )


def test_a_response_code_is_the_outcome():
    assert reply_of(response(6, rcode=dns.rcode.NXDOMAIN), QUERY_TYPES[6]) == Reply("NXDOMAIN")
