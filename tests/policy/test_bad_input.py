"""Bad input gets a clear verdict, never an exception: malformed, deep, huge or random text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.policy.verdict import Decision
from support.policies import World

W = World()


@pytest.mark.parametrize(("sql", "code"), [
    ("SELECT " + "(" * 3000 + "1" + ")" * 3000, None),  # PostgreSQL's own parser copes or refuses
    ("SELECT " + "lower(" * 1200 + "card_number" + ")" * 1200 + " FROM customers", "too_complex"),
    ("SELECT * FROM " + "(SELECT * FROM " * 400 + "customers" + ") s" * 400, "too_complex"),
    ("SELECT 1 -- " + "x" * (1 << 20), "too_large"),
    ("SELECT 'a\x00b'", "nul_character"),
    ("SELECT 1\x00; DROP TABLE orders", "nul_character"),
    ("\x00\x01\x02", "nul_character"),
    (";;;", "empty"),
    ("SELECT $$unterminated", "syntax_error"),
    ("SELECT 1 /* unterminated comment", "syntax_error"),
])
def test_bad_text_is_refused_with_a_reason(sql: str, code: str | None) -> None:
    verdict = W.decide(sql)
    if code is None:
        assert verdict.decision in (Decision.ALLOW, Decision.DENY)
        return
    assert verdict.decision is Decision.DENY
    assert verdict.reasons[0].code == code, verdict.reasons
    assert len(verdict.reasons[0].message) < 2000  # the reason does not echo a megabyte back


@given(st.text(max_size=300))
@settings(max_examples=500, deadline=None)
def test_any_text_gets_a_verdict(text: str) -> None:
    verdict = W.decide(text)
    assert verdict.decision in (Decision.ALLOW, Decision.DENY, Decision.NEEDS_APPROVAL)
    if verdict.decision is Decision.DENY:
        assert verdict.reasons


SQLISH = st.lists(st.sampled_from([
    "SELECT", "*", "FROM", "customers", "c", ",", "(", ")", "card_number", "ssn", "AS", "x", "WHERE", "1", "=",
    "JOIN", "ON", "true", "UNION", "WITH", "LATERAL", "row_to_json", "c.*", ";", "DELETE", "orders", "'s'",
    "ORDER", "BY", "GROUP", "VALUES", "INSERT", "INTO", "SET", "ROLE", "COPY", "TO", "STDOUT", "EXPLAIN",
]), max_size=25).map(" ".join)


@given(SQLISH)
@settings(max_examples=1500, deadline=None)
def test_sql_shaped_noise_never_leaks_card_numbers_unmasked(sql: str) -> None:
    """Whatever parses: if an output derives from card_number, it is masked or the text denied."""
    verdict = W.decide(sql)
    if verdict.decision is not Decision.ALLOW:
        return
    from pgwarden.policy.sql import analyse
    analysis = analyse(sql, W.catalog)
    for index, st_ in enumerate(analysis.statements):
        masked = {m.position for m in verdict.plans[index].masks}
        for position, out in enumerate(st_.outputs):
            if any(s.column in ("card_number", "ssn", "email") and s.table == "customers" for s in out.sources):
                assert position in masked, (sql, position)
