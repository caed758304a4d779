"""Property: however a masked column is wrapped, aliased or nested, it never comes out unmasked.

Hypothesis builds expressions around ``card_number`` (functions, casts,
operators, CASE, aggregates, sub-selects, row constructors) and queries around
those (aliases, derived tables, CTEs, views, set operations, LATERAL). For
every generated query, the verdict must either deny it or mask the output
that carries the column — keep-last only when the output is the column's
value itself, redact-whole otherwise.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.policy.verdict import Decision
from support.policies import World
from support.sql_strategies import QUERY_SHAPES, expressions

W = World()

@given(expressions(), st.sampled_from(QUERY_SHAPES), st.sampled_from(["x", "note", "id", "full_name", "y1"]))
@settings(max_examples=400, deadline=None)
def test_wrapped_masked_column_never_unmasked(expression, shape, alias) -> None:
    expr, plain = expression
    template, forced_expression = shape
    sql = template.format(e=expr, a=alias)
    verdict = W.decide(sql)
    if verdict.decision is Decision.DENY:
        return
    assert verdict.decision is Decision.ALLOW, (sql, verdict.reasons)
    masks = {m.position: m for p in verdict.plans for m in p.masks}
    assert 0 in masks, (sql, "card_number reaches output 0 unmasked")
    if not plain or forced_expression:
        assert masks[0].whole and masks[0].strategy == "redact", sql


@given(st.lists(st.sampled_from(["id", "full_name", "email", "card_number", "ssn"]), min_size=1, max_size=6),
       st.sampled_from(["c", "cust", "x"]))
@settings(max_examples=200, deadline=None)
def test_every_masked_column_masked_at_its_position(columns, alias) -> None:
    sql = "SELECT " + ", ".join(f"{alias}.{c} AS out{i}" for i, c in enumerate(columns)) + f" FROM customers {alias}"
    verdict = W.decide(sql)
    assert verdict.decision is Decision.ALLOW
    masks = {m.position: m.strategy for p in verdict.plans for m in p.masks}
    expected = {i: {"email": "hash", "card_number": "keep_last", "ssn": "redact"}[c]
                for i, c in enumerate(columns) if c in ("email", "card_number", "ssn")}
    assert masks == expected, sql
