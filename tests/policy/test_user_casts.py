"""Casts that run user code: user cast functions and domains whose CHECK calls a user function.

The catalog lists types as ``format_type`` spells them (``integer``, ``double precision``,
``public.mood``); the parser names a cast's target as PostgreSQL stores it (``x::integer`` and
``CAST(x AS integer)`` both parse to ``int4``). A cast is judged by its target and, for a literal, by the
literal's own type: a string literal is read by the type's input function (no cast runs), a literal of the
target type needs no cast. A cast to a checked domain runs the CHECK whatever it converts, NULL included.
"""

from __future__ import annotations

import dataclasses

import pytest

from pgwarden.policy.decision import Decider
from support.policies import World, fixture_catalog, public_policy
from support.policies import test_mask_key as mask_keys


def _world(**rule_functions) -> World:
    catalog = dataclasses.replace(
        fixture_catalog(), version="casts-1",
        user_cast_types=frozenset({"integer", "public.mood", "double precision[]", "public.checked"}),
        checked_domains=frozenset({"public.checked"}))
    world = World(catalog=catalog)
    if rule_functions:
        policy = public_policy()
        rules = [r.model_copy(update={"functions": r.functions.model_copy(update=rule_functions)})
                 if r.name == "ai-agents" else r for r in policy.rules]
        world.policy = policy.model_copy(update={"rules": rules})
        world.decider = Decider(world.policy, version="test-star", mask_key=mask_keys)
    return world


@pytest.mark.parametrize("sql", [
    "SELECT id::int4 FROM orders",
    "SELECT CAST(id AS integer) FROM orders",
    "SELECT id::pg_catalog.int4 FROM orders",
    "SELECT note::mood FROM orders",
    "SELECT 1::public.mood",  # an int4 literal: the int4 → mood cast runs
    "SELECT note::float8 FROM orders",  # double precision[] lists the type too (fail closed)
    "SELECT 'x'::public.checked",  # a domain's CHECK runs on a literal as on anything
    "SELECT NULL::checked",
    "SELECT 1.5::int4",  # a numeric literal is cast
])
def test_casts_that_run_user_code_are_refused(sql: str) -> None:
    verdict = _world().decide(sql)
    assert not verdict.allowed, sql
    assert [r.code for r in verdict.reasons] == ["function_not_allowed"], verdict.reasons


@pytest.mark.parametrize("sql", [
    "SELECT 1::int4",  # already int4: no cast
    "SELECT '7'::integer",  # read by int4in
    "SELECT 'calm'::public.mood",  # read by enum_in
    "SELECT id::text FROM orders",  # no user cast involves text
])
def test_casts_that_run_no_user_code_pass(sql: str) -> None:
    verdict = _world().decide(sql)
    assert verdict.allowed, (sql, verdict.reasons)
    assert not verdict.runs_user_code


def test_the_shape_cache_does_not_carry_a_literal_casts_verdict_to_another_literal() -> None:
    world = _world()
    assert not world.decide("SELECT 1::public.mood").allowed
    assert world.decide("SELECT 'calm'::public.mood").allowed
    assert not world.decide("SELECT 2::public.mood").allowed


def test_a_rule_allowing_all_functions_marks_such_a_cast_as_user_code() -> None:
    world = _world(allow=["*"])
    for sql in ("SELECT id::int4 FROM orders", "SELECT 'x'::public.checked"):
        verdict = world.decide(sql)
        assert verdict.allowed, (sql, verdict.reasons)
        assert verdict.runs_user_code, sql
    assert not world.decide("SELECT '7'::integer").runs_user_code
