"""Issue 5, items 4, 5 and 8 (pure): user overloads and operators are user code; CTEs analysed to the end."""

from __future__ import annotations

import pytest

from pgwarden.policy.catalog import Operator, Routine, merge
from pgwarden.policy.verdict import Decision
from support.policies import World, fixture_catalog

BASE = fixture_catalog()
CATALOG = merge(BASE, BASE.relations.values(), {}, search_path=["public"], version="fixture-user-code",
                complete=True,
                routines=[Routine("public", "upper", 1, 1, False, ("integer",), language="sql"),
                          Routine("public", "leak_op", 2, 2, False, ("text", "text"), language="sql"),
                          Routine("other", "lower", 1, 1, False, ("integer",), language="sql")],
                operators=[Operator("public", "|||", "text", "text", "public.leak_op"),
                           Operator("public", "+", "public.money2", "public.money2", "public.leak_op")])
W = World(catalog=CATALOG)


@pytest.mark.parametrize(("sql", "code"), [
    ("SELECT upper(1)", "function_ambiguous"),
    ("SELECT upper(full_name) FROM customers", "function_ambiguous"),
    ("SELECT public.upper(1)", "function_not_allowed"),
    ("SELECT 'a' ||| 'b'", "function_not_allowed"),
    ("SELECT 'a' OPERATOR(public.|||) 'b'", "function_not_allowed"),
    ("SELECT 1 + 1", "function_not_allowed"),  # public.+ shadows for user types; operand types unknown
    ("SELECT 1 OPERATOR(public.-) 1", "function_not_allowed"),
])
def test_user_code_behind_builtin_names_is_refused(sql: str, code: str) -> None:
    verdict = W.decide(sql)
    assert verdict.decision is Decision.DENY
    assert code in {r.code for r in verdict.reasons}, verdict.reasons


@pytest.mark.parametrize("sql", [
    "SELECT pg_catalog.upper(full_name) FROM customers",
    "SELECT upper(full_name, 1) IS NULL FROM customers",  # no user overload takes two arguments
    "SELECT lower(full_name) FROM customers",  # other.lower is not on the search_path
    "SELECT 1 OPERATOR(pg_catalog.+) 1",
    "SELECT -1",
])
def test_real_builtins_still_count_as_builtins(sql: str) -> None:
    verdict = W.decide(sql)
    assert not [r for r in verdict.reasons if r.code.startswith("function_")], verdict.reasons


def test_the_ambiguity_reason_says_how_to_call_the_builtin() -> None:
    reason = W.decide("SELECT upper('x')").reasons[0]
    assert "pg_catalog.upper" in reason.message


P = World()


def test_recursive_cte_needing_many_rounds_keeps_every_relation_and_mask() -> None:
    cols = ",".join(f"c{i}" for i in range(12))
    shifted = ",".join([f"c{11}"] + [f"c{i}" for i in range(11)])
    seed = ",".join(["ssn"] + [str(i) for i in range(11)])
    sql = (f"WITH RECURSIVE r({cols}) AS (SELECT {seed} FROM customers UNION ALL "
           f"SELECT {shifted} FROM r) SELECT c11 FROM r LIMIT 20")
    verdict = P.decide(sql)
    masks = [m for p in verdict.plans for m in p.masks]
    assert verdict.decision is Decision.DENY or any(m.source.column == "ssn" for m in masks), verdict
    denied = P.decide(sql.replace("FROM r)", "FROM r, (SELECT api_key FROM secrets) s)"))
    assert denied.decision is Decision.DENY


def test_forward_reference_in_with_recursive_resolves_to_the_later_item() -> None:
    verdict = P.decide("WITH RECURSIVE a AS (SELECT * FROM b), b AS (SELECT ssn FROM customers) SELECT * FROM a")
    masks = [m for p in verdict.plans for m in p.masks]
    assert verdict.decision is Decision.ALLOW and [m.source.column for m in masks] == ["ssn"]
    denied = P.decide("WITH RECURSIVE a AS (SELECT * FROM b), b AS (SELECT api_key FROM secrets) SELECT * FROM a")
    assert denied.decision is Decision.DENY


@pytest.mark.parametrize("sql", [
    "SELECT id FROM orders UNION SELECT customer_id FROM orders ORDER BY id",
    "BEGIN; DECLARE c CURSOR FOR SELECT id FROM orders; FETCH 1 FROM c; COMMIT",
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "SET default_transaction_read_only = on",
    "SELECT name, parameter_types FROM pg_prepared_statements",  # (its statement column is refused: it holds the rewrite)
    "SELECT attname, most_common_vals FROM pg_stats WHERE schemaname = 'public' AND tablename = 'orders'",
    " UNION ALL ".join(["SELECT id FROM orders"] * 2000),
    "SELECT " + "+".join(["id"] * 3000) + " FROM orders",
])
def test_fewer_false_denials(sql: str) -> None:
    verdict = P.decide(sql)
    assert verdict.decision is Decision.ALLOW, verdict.reasons


def test_deep_nesting_is_still_refused() -> None:
    assert P.decide("SELECT " + "lower(" * 1200 + "note" + ")" * 1200 + " FROM orders").reasons[0].code == "too_complex"
