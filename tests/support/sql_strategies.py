"""Hypothesis strategies that wrap, alias and nest a masked column in SQL."""

from __future__ import annotations

from hypothesis import strategies as st

BASES = ["card_number", "c.card_number", "public.customers.card_number"]
WRAPPERS = [
    "lower({})", "upper({})", "({})", "{}::text", "CAST({} AS varchar)", "coalesce({}, 'x')", "{} || ''",
    "substr({}, 1, 8)", "concat('', {})", "reverse({})", "md5({})", "left({}, 6)", "trim({})",
    "CASE WHEN true THEN {} END", "nullif({}, '')", "greatest({}, '')", "format('%s', {})",
    "string_agg({}, ',')", "max({})", "array_agg({})::text", "json_agg({})::text", "ARRAY[{}]::text",
    "row({})::text", "json_build_object('k', {})::text", "to_jsonb({})::text", "quote_literal({})",
    "encode(convert_to({}, 'UTF8'), 'hex')", "regexp_replace({}, '1', '2')", "({} COLLATE \"C\")",
]
PLAIN_WRAPPERS = {"({})"}


@st.composite
def expressions(draw):
    base = draw(st.sampled_from(BASES))
    depth = draw(st.integers(0, 4))
    expr = base
    plain = True
    for _ in range(depth):
        wrapper = draw(st.sampled_from(WRAPPERS))
        expr = wrapper.format(expr)
        plain = plain and wrapper in PLAIN_WRAPPERS
    return expr, plain


QUERY_SHAPES = [
    ("SELECT {e} FROM customers c", False),
    ("SELECT {e} AS {a} FROM customers c", False),
    ("SELECT s.{a} FROM (SELECT {e} AS {a} FROM customers c) s", False),
    ("SELECT {a} FROM (SELECT {e} AS {a} FROM customers c) AS s({a})", False),
    ("WITH w AS (SELECT {e} AS {a} FROM customers c) SELECT {a} FROM w", False),
    ("WITH w({a}) AS (SELECT {e} FROM customers c) SELECT w.{a} FROM w", False),
    ("SELECT (SELECT {e} FROM customers c LIMIT 1) AS {a}", True),
    ("SELECT t.{a} FROM orders o, LATERAL (SELECT {e} AS {a} FROM customers c WHERE c.id = o.customer_id) t",
     False),
    ("SELECT note AS {a} FROM orders UNION ALL SELECT {e} FROM customers c", False),
    ("SELECT x.{a} FROM (SELECT {a} FROM (SELECT {e} AS {a} FROM customers c) y) x", False),
    ("SELECT {a} FROM (SELECT {e} AS {a}, id FROM customers c) s JOIN orders o ON o.id = s.id", False),
]
