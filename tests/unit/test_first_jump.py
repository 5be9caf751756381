"""Picket's jump must be the first rule of the chain it hooks (pure: the decision from
`iptables -S` output, and the one transaction that repairs it)."""

from __future__ import annotations

from agent.dataplane.first_jump import misplaced, repair_text
from agent.dataplane.iptables_render import JUMP_RULE

OURS = '-A FORWARD -m comment --comment "picket: NetworkPolicy" -j PICKET-FORWARD'


def listing(*rules: str) -> str:
    return "\n".join(["-P FORWARD ACCEPT", *rules]) + "\n"


def test_first_and_alone_is_fine():
    assert misplaced(listing(OURS, "-A FORWARD -j KUBE-FORWARD"), JUMP_RULE) is None


def test_a_rule_in_front_is_named():
    found = misplaced(listing("-A FORWARD -j ACCEPT", OURS), JUMP_RULE)
    assert found == "behind `-A FORWARD -j ACCEPT`"


def test_missing_and_duplicated():
    assert misplaced(listing("-A FORWARD -j ACCEPT"), JUMP_RULE) == "missing"
    assert misplaced(listing(), JUMP_RULE) == "missing"
    assert misplaced(listing(OURS, OURS), JUMP_RULE) == "there more than once"


def test_another_chains_rules_and_a_lookalike_do_not_count():
    lookalike = '-A FORWARD -m comment --comment "picket: NetworkPolicy" -j ACCEPT'
    assert misplaced(listing(lookalike, OURS), JUMP_RULE) == f"behind `{lookalike}`"
    other_chain = '-A INPUT -m comment --comment "picket: NetworkPolicy" -j PICKET-FORWARD'
    assert misplaced(other_chain + "\n", JUMP_RULE) == "missing"


def test_the_repair_deletes_every_copy_and_inserts_one_first_in_one_transaction():
    text = repair_text("mangle", JUMP_RULE, 2)
    rule = '-m comment --comment "picket: NetworkPolicy" -j PICKET-FORWARD'
    assert text.splitlines() == [
        "*mangle",
        f"-D FORWARD {rule}",
        f"-D FORWARD {rule}",
        f"-I FORWARD 1 {rule}",
        "COMMIT",
    ]
