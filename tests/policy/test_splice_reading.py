"""The splices of the mask rewrite, found without the lexer for plainly written references, are exactly
the ones the lexer finds (``scanned_splices``); anything not plain goes to the lexer.

Every text below is decided with a spy in place of ``splices_for``: whenever the plain reading
answers, it must equal the lexer's answer, whatever the whitespace, comments, quoting, case, ONLY,
TABLE, parentheses or aliases around the reference.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from pgwarden.policy import decision
from pgwarden.policy.sql import _rewrite
from support import policies as support

TEXTS = [
    "SELECT * FROM customers", "SELECT * FROM ONLY customers", "SELECT * FROM ONLY (customers)",
    "SELECT * FROM only customers c", "TABLE customers", "TABLE ONLY customers", "SELECT * FROM customers*",
    "SELECT * FROM public.customers", 'SELECT * FROM "public"."customers"', "SELECT * FROM public . customers",
    "SELECT * FROM public/**/.customers", "SELECT * FROM -- c\ncustomers", "SELECT * FROM ONLY -- x\ncustomers",
    "SELECT * FROM ONLY/* x */customers", "SELECT * FROM\ncustomers", "SELECT * FROM customers\n",
    "SELECT * FROM (customers)", "SELECT * FROM (customers c JOIN orders o ON true)",
    "SELECT * FROM customers, customers x", 'SELECT * FROM customers"c"', 'SELECT * FROM customers "c"',
    "SELECT * FROM Customers", 'SELECT * FROM "customers" AS "C"', "SELECT * FROM customers;SELECT 1",
    "WITH c AS (SELECT * FROM customers) SELECT * FROM c", "SELECT (SELECT email FROM customers LIMIT 1)",
    "SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers)", "SELECT * FROM customers\tAS\tc",
    "COPY customers TO STDOUT", "COPY customers (email) TO STDOUT", "COPY (SELECT * FROM customers) TO STDOUT",
    "SELECT * FROM customers TABLESAMPLE SYSTEM (10)", "SELECT * FROM LATERAL (SELECT * FROM customers) x",
    "SELECT 'é', * FROM customers", "SELECT * FROM (ONLY customers)", "SELECT * FROM ONLY(customers)x",
    "SELECT * FROM customers JOIN customers c2 USING (id)", "SELECT * FROM customers WHERE email = 'FROM customers'",
    "SELECT * FROM customer_cards", "SELECT * FROM ONLY public.customers AS c WHERE c.id = 1",
    "SELECT * FROM x.customers", "SELECT email FROM customers UNION SELECT email FROM ONLY customers",
]


def _both(calls: list[tuple[str, bool]]):
    """A splices_for that finds the splices both ways, asserts they agree, and notes which answered."""
    def both(sql, items):
        plain = _rewrite._plain_splices(sql, items)
        scanned = _rewrite.scanned_splices(sql, items)
        if plain is not None:
            assert plain == scanned, sql
        calls.append((sql, plain is not None))
        return scanned
    return both


@pytest.fixture
def spy(monkeypatch):
    calls: list[tuple[str, bool]] = []
    monkeypatch.setattr(decision, "splices_for", _both(calls))
    return calls


@pytest.mark.parametrize("sql", TEXTS)
def test_plain_reading_agrees_with_the_lexer(spy, sql: str) -> None:
    w = support.World()
    w.decide(sql)
    w.decide(sql, "alice", ["dba"])


def test_plain_references_are_read_without_the_lexer(spy) -> None:
    w = support.World()
    plain = ["SELECT * FROM customers", "SELECT * FROM ONLY customers", "SELECT * FROM ONLY (customers)",
             "TABLE customers", 'SELECT c.email FROM "public"."customers" AS c WHERE c.id = 1',
             "SELECT o.id, c.full_name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 1"]
    for sql in plain:
        assert w.decide(sql).upstream_text is not None, sql
    assert spy and all(fast for _, fast in spy), spy
    for sql in ["SELECT * FROM\ncustomers", "SELECT * FROM customers*", "COPY customers TO STDOUT",
                "SELECT * FROM public/**/.customers"]:
        spy.clear()
        w.decide(sql)
        assert spy and not any(fast for _, fast in spy), sql


_GAP = hs.sampled_from([" ", "  ", "\t", "\n", " /* c */ ", "/*ONLY*/", " -- ONLY\n", "\n\t", " --\n"])
_TIGHT = hs.sampled_from(["", " ", "\n", "/**/", " -- x\n"])


@settings(max_examples=300, deadline=None)
@given(data=hs.data())
def test_any_spacing_and_comments_agree_with_the_lexer(data) -> None:
    w = support.World()
    only = data.draw(hs.sampled_from(["", "ONLY", "only", "ONLY (", "TABLE", "TABLE ONLY"]))
    schema = data.draw(hs.sampled_from(["", "public", '"public"', "PUBLIC"]))
    name = data.draw(hs.sampled_from(["customers", '"customers"', "Customers", "customer_cards"]))
    alias = data.draw(hs.sampled_from(["", "c", "AS c", '"c"', "AS \"x y\""]))
    tail = data.draw(hs.sampled_from(["", "WHERE id = 1", ", orders", "JOIN orders o ON true", ";"]))
    head = "" if only.startswith("TABLE") else "SELECT * FROM"
    gap = [data.draw(_GAP) for _ in range(6)]
    qualified = name if not schema else schema + data.draw(_TIGHT) + "." + data.draw(_TIGHT) + name
    words = [head, only, qualified + (")" if only.endswith("(") else ""),
             "" if only.startswith("TABLE") else alias, "" if only.startswith("TABLE") else tail]
    sql = ""
    for i, word in enumerate(x for x in words if x):
        sql += (gap[i] if sql else "") + word
    original = decision.splices_for
    decision.splices_for = _both([])
    try:
        w.decide(sql)
    finally:
        decision.splices_for = original
