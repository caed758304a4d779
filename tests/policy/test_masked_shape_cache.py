"""Masked verdicts in the shape cache: the same statement with other literals gets its splices placed
in its own text, exactly where a full analysis would place them.

The shape cache (pg_query's normalisation) shares a verdict between texts that differ only in their
literals; a masked verdict carries character offsets (its splices), which move when a literal
changes length. These tests prime a Decider with one text of a shape, decide other texts of the
same shape through it, and compare with a Decider that has no shape cache: same decision, same
plans, the same upstream text and splices, and error positions mapped back the same way.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from pgwarden.policy.decision import Decider
from pgwarden.policy.sql import resplice, shape_key, splice_template
from pgwarden.policy.verdict import Verdict
from support import policies as support

AGENT = {"subject": "agent", "groups": frozenset({"ai-agents"})}

# {n}: an integer, {s}: a string's body (quotes doubled by the test), {m}: a list of integers
SHAPES = [
    "SELECT id, email, card_number FROM customers WHERE id = {n}",
    "SELECT c.id, lower(c.email) FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.amount > '{s}'",
    "SELECT count(*) FROM customers WHERE card_number LIKE '{s}%' AND id <> {n}",
    "SELECT row_to_json(c) FROM customers c WHERE c.id IN (SELECT customer_id FROM orders WHERE id = {n})",
    "WITH x AS (SELECT * FROM customers WHERE id = {n}) SELECT x.email, '{s}' AS tag FROM x",
    "SELECT * FROM ONLY customers WHERE full_name = '{s}'",
    "SELECT * FROM ONLY (customers) WHERE full_name = '{s}' LIMIT {n}",
    "SELECT email FROM public.customers AS pc WHERE pc.id = {n} OR pc.full_name = '{s}'",
    'SELECT "email" FROM "public"."customers" WHERE "id" = {n}',
    "SELECT email FROM public . customers WHERE id = {n}",
    "TABLE customers LIMIT {n}",
    "COPY (SELECT email, ssn FROM customers WHERE id = {n}) TO STDOUT",
    "SELECT a.email, b.ssn FROM customers a, customers b WHERE a.id = b.id AND a.id = {n} AND b.ssn = '{s}'",
    "SELECT email FROM customers WHERE id IN ({m})",
    "SELECT email FROM customers WHERE full_name = E'{s}' AND id = {n}",
    "SELECT email FROM customers WHERE id = {n}::int AND full_name <> 'x' || '{s}'",
    "SELECT email, DATE '2024-01-{n2}' FROM customers WHERE id = {n}",
    "SELECT email FROM customers -- a comment with 'quotes' and {n}\nWHERE id = {n}",
    "SELECT email /* id = {n} */ FROM customers WHERE id = {n} AND full_name = '{s}'\n",
    "SELECT email FROM customers WHERE full_name = '{s}'\n'{s}'",
    "SELECT email FROM customers WHERE id = {n}.5 AND id > -{n}",
    "UPDATE orders SET note = '{s}' FROM customers c WHERE c.id = orders.customer_id AND c.card_number LIKE '{s}'",
]

_strings = hs.text(alphabet="abc xyz'%_\\-", max_size=12)
_ints = hs.integers(min_value=-10**12, max_value=10**12)


def _fill(shape: str, n: int, s: str, m: list[int]) -> str:
    n2 = f"{abs(n) % 28 + 1:02d}"
    return shape.format(n=n, s=s.replace("'", "''"), m=", ".join(map(str, m)) or "0", n2=n2)


def _same(shaped: Verdict, fresh: Verdict, sql: str) -> None:
    assert shaped == fresh, sql
    assert shaped.upstream_text == fresh.upstream_text, sql
    assert shaped.splices == fresh.splices, sql
    assert shaped.effects == fresh.effects, sql
    if fresh.upstream_text is not None:
        for position in range(1, len(fresh.upstream_text) + 2, 7):
            assert shaped.client_position(position) == fresh.client_position(position), (sql, position)


class _Pair:
    def __init__(self) -> None:
        self.catalog = support.fixture_catalog()
        policy = support.public_policy()
        self.shaped = Decider(policy, version="t", mask_key=support.test_mask_key)
        self.fresh = Decider(policy, version="t", mask_key=support.test_mask_key, shape_cache=False)

    def check(self, sql: str) -> Verdict:
        fresh = self.fresh.decide(sql, catalog=self.catalog, **AGENT)
        shaped = self.shaped.decide(sql, catalog=self.catalog, **AGENT)
        _same(shaped, fresh, sql)
        return shaped


PAIR = _Pair()


@pytest.mark.parametrize("shape", SHAPES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=_ints, s=_strings, m=hs.lists(_ints, max_size=5), n_b=_ints, s_b=_strings,
       m_b=hs.lists(_ints, max_size=5))
def test_a_shape_hit_rewrites_exactly_as_a_full_analysis(shape, n, s, m, n_b, s_b, m_b) -> None:
    PAIR.check(_fill(shape, n, s, m))
    PAIR.check(_fill(shape, n_b, s_b, m_b))


def test_masked_verdicts_are_served_from_the_shape_cache() -> None:
    w = support.World()
    first = w.decide("SELECT id, email, card_number FROM customers WHERE id = 1 AND full_name = 'a'")
    assert first.upstream_text is not None
    size = len(w.decider._cache)
    for i, name in enumerate(["", "bob", "it''s a much longer name", "x" * 300]):
        sql = f"SELECT id, email, card_number FROM customers WHERE id = {-i * 12345} AND full_name = '{name}'"
        v = w.decide(sql)
        assert v.plans is first.plans, sql  # from the shape cache: a full analysis builds its own plans
        assert v.upstream_text.endswith(f"WHERE id = {-i * 12345} AND full_name = '{name}'")
        assert v.client_position(len(v.upstream_text)) == len(sql)
        assert w.decide(sql) is v  # kept under its exact text
    assert len(w.decider._cache) == size + 4  # one exact entry per text, no new shape entry


def test_texts_that_cannot_be_split_plainly_are_analysed() -> None:
    w = support.World()
    first = w.decide("SELECT email FROM customers WHERE full_name = 'a'")
    # an escape string, a string continued on the next line, a boolean, an exponent: no plain split,
    # so a full analysis (new plans) — still the same shape to pg_query
    for sql in ["SELECT email FROM customers WHERE full_name = E'a\\'b'",
                "SELECT email FROM customers WHERE full_name = 'a'\n'b'",
                "SELECT email FROM customers WHERE full_name = 1e5",
                "SELECT email FROM customers WHERE full_name = true"]:
        assert shape_key(sql) == shape_key("SELECT email FROM customers WHERE full_name = 'a'"), sql
        v = w.decide(sql)
        assert v.plans is not first.plans, sql
        assert v.upstream_text is not None and v.upstream_text.endswith(sql.split("= ", 1)[1]), sql


def test_a_template_refuses_what_it_cannot_place() -> None:
    sql = "SELECT email FROM customers WHERE id = 5"
    normalized = shape_key(sql)
    verdict = support.World().decide(sql)
    template = splice_template(sql, normalized, verdict.splices)
    assert template is not None
    assert resplice(template, "SELECT email FROM customers WHERE id = 123456") is not None
    for other in ["SELECT email FROM customers WHERE id = $1",  # a parameter: never split
                  "SELECT email FROM customers WHERE id = 5é",  # not ASCII
                  "SELECT email FROM customers WHERE id = 5 ",  # not the same segments
                  "SELECT email FROM customers WHERE id = 0x1F",
                  "SELECT email FROM customers WHERE id = 1_000",
                  "SELECT email FROM customers WHERE id = - 5",
                  "SELECT email FROM customers WHERE id = 5.",
                  "SELECT email FROM customers WHERE id = '5'--"]:
        assert resplice(template, other) is None, other
    # the stored text itself must split plainly, and a splice may never cover a constant
    assert splice_template("SELECT email FROM customers WHERE id = $1", "SELECT email FROM customers WHERE id = $1",
                           ()) is None
    over = verdict.splices[0]._replace(start=sql.index("5"), end=len(sql))
    assert splice_template(sql, normalized, (over,)) is None


# Shapes whose texts split plainly (the others: COPY is literal-dependent, IN lists of other lengths
# are other shapes, E'' strings and continued strings are not plain, comments are kept in the shape)
SERVED = [s for i, s in enumerate(SHAPES) if i in {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16}]


@pytest.mark.parametrize("shape", SERVED)
def test_plain_masked_shapes_are_served_from_the_shape_cache(shape: str) -> None:
    pair = _Pair()
    first = pair.check(_fill(shape, 1, "a", [1]))
    assert first.upstream_text is not None
    for n, s in [(-123456, "a longer one, it's"), (7, ""), (10**11, "%_\\")]:
        again = pair.check(_fill(shape, n, s, [1]))
        assert again.plans is first.plans, shape  # served by the shape cache, yet equal to a full analysis


def test_a_text_with_a_dollar_sign_has_no_shape_key() -> None:
    """pg_query numbers its placeholders after the client's own: these two would share a key although
    one has a parameter where the other has a literal (and the reverse)."""
    assert shape_key("SELECT '$1', 5") is None and shape_key("SELECT $1, '$2'") is None
    assert shape_key("SELECT $$x$$, 1") is None
    assert shape_key("SELECT a FROM t WHERE id = 5") == "SELECT a FROM t WHERE id = $1"
