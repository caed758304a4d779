"""Red-team of ``read_only_required`` (StatementPlan.user_code) and of the wire proxy's re-description of a
portal executed after other work ran upstream (``ProxyConnection._ran`` / ``_Portal.checked``).

The claims under attack:

* under a rule that may write, a read that runs user code runs inside the door's own ``BEGIN READ ONLY``
  block, and where the door cannot open one it is refused (``read_only_required``, 55000) — so a write
  hidden behind a read never runs without the approval writes need;
* a portal is re-described before an Execute when anything could have run upstream since it was last
  known, so a function that CLOSEs it and OPENs another query under its name cannot get rows past the old
  portal's (passthrough) screen.

``user_code`` is set only where the *text* calls an allowed user function or operator (policy/_checks.py
``_function`` / ``_operator``). PostgreSQL runs user code in many more places. Breaches found (each test
asserts the secure behaviour; all fixed since — casts are matched by the parser's type names and judged by
a literal's type, domains whose CHECK calls a user function are in the catalog, ``read_only_required`` is
checked at Bind, Bind counts as work that may swap a portal, and a parameter declared of a user type makes
a statement user code):

* a domain's CHECK constraint calling a user function runs on any cast to the domain (``'x'::dom``) or on
  a Bind parameter of the domain type: the analysis sees no function at all (the function need not even be
  in functions.allow), so the read is not user code and runs unwrapped inside the client's transaction or
  beside transaction control — through both doors;
* a user cast function (``CREATE CAST … WITH FUNCTION``) reached through a cast whose target the parser
  names differently from ``format_type`` (``::int4`` / ``::integer`` parse to ``int4``, the catalog lists
  ``integer``) is never matched by ``_cast``: not refused, not user code — through both doors;
* under ``functions.allow: ['*']`` a cast matched in ``_cast`` returns early without setting ``user_code``;
* a non-volatile allowed function is run by the planner at Bind (constant folding) — it may call a
  VOLATILE one that writes — while ``read_only_required`` is checked only at Execute: Bind + Sync inside
  the client's transaction, then COMMIT, and the write stands;
* ``_ran`` counts Query and Execute only, but Bind runs code too (the planner's constant folding of an
  IMMUTABLE function): a function run at Bind that CLOSEs a portal and OPENs a cursor under its name gets
  its rows out under the old portal's passthrough screen, unredacted.

Held (ordinary tests): functions in a view's body, SQL ``EXECUTE`` of a prepared statement, and a portal
swapped by an allowed function in a simple Query in between.
"""

from __future__ import annotations

import os

import psycopg
import pytest
import yaml

from pgwarden.wire_proxy import Bind, Describe, Execute, Parse
from support.cases import load_public_cases
from support.mcp_stdio import query_outcomes
from support.wire import Keys, RawClient, RunningProxy, config_data
from support.wire import frame_codes as _codes
from support.wire import frame_errors as _errors
from support.wire import frame_ready as _ready
from support.wire import frame_rows as _rows
from support.wire import sync as _sync

CARD = "4111111111111111"
EMAIL = "quinn.redteam@example.org"
MASK_KEY = "test-mask-key-0123456789"

SETUP = f"""
CREATE TABLE public.rt_ledger (id int PRIMARY KEY, note text);
INSERT INTO public.rt_ledger VALUES (1, 'a'), (2, 'b'), (3, 'c');
CREATE TABLE public.rt_secrets (id int PRIMARY KEY, card text, mail text);
INSERT INTO public.rt_secrets SELECT g, 'card {CARD}', 'mail {EMAIL}' FROM generate_series(1, 20) g;
-- the hidden write
CREATE FUNCTION public.rt_erase() RETURNS boolean LANGUAGE sql VOLATILE
  AS $$ DELETE FROM public.rt_ledger WHERE id = 3; SELECT true $$;
-- a domain whose CHECK runs it (on any cast to the domain, or Bind input of a parameter of its type)
CREATE DOMAIN public.rt_checked AS text CHECK (public.rt_erase());
-- an enum with user casts to and from int4 that run it
CREATE TYPE public.rt_mood AS ENUM ('calm', 'angry');
CREATE FUNCTION public.rt_mood_int(public.rt_mood) RETURNS int4 LANGUAGE sql VOLATILE
  AS $$ DELETE FROM public.rt_ledger WHERE id = 3; SELECT 1 $$;
CREATE CAST (public.rt_mood AS int4) WITH FUNCTION public.rt_mood_int(public.rt_mood);
CREATE FUNCTION public.rt_int_mood(int4) RETURNS public.rt_mood LANGUAGE sql VOLATILE
  AS $$ DELETE FROM public.rt_ledger WHERE id = 3; SELECT 'calm'::public.rt_mood $$;
CREATE CAST (int4 AS public.rt_mood) WITH FUNCTION public.rt_int_mood(int4);
CREATE TABLE public.rt_moods (id int PRIMARY KEY, mood public.rt_mood);
INSERT INTO public.rt_moods VALUES (1, 'calm');
-- an IMMUTABLE wrapper the planner folds at Bind; it calls the VOLATILE writer
CREATE FUNCTION public.rt_folded() RETURNS int LANGUAGE plpgsql IMMUTABLE
  AS $$ BEGIN PERFORM public.rt_erase(); RETURN 1; END $$;
-- an IMMUTABLE portal swapper (folded at Bind) and a VOLATILE one (runs at Execute)
CREATE FUNCTION public.rt_swap_at_plan(c text) RETURNS int LANGUAGE plpgsql IMMUTABLE
  AS $$ DECLARE r refcursor := c; BEGIN CLOSE r; OPEN r FOR SELECT card, mail FROM public.rt_secrets ORDER BY id;
        RETURN 1; END $$;
CREATE FUNCTION public.rt_swap(c text) RETURNS int LANGUAGE plpgsql VOLATILE
  AS $$ DECLARE r refcursor := c; BEGIN CLOSE r; OPEN r FOR SELECT card, mail FROM public.rt_secrets ORDER BY id;
        RETURN 1; END $$;
CREATE VIEW public.rt_audited AS SELECT id, note, public.rt_erase() AS seen FROM public.rt_ledger;
ANALYZE;
"""


@pytest.fixture(scope="module")
def rt(make_db_module, tmp_path_factory, keys: Keys):
    os.environ.setdefault("PGWARDEN_MASK_KEY", MASK_KEY)
    dsn = make_db_module(load_public_cases().fixture_sql + "\n" + SETUP)
    directory = tmp_path_factory.mktemp("redteam-user-code")
    data = config_data(dsn, directory, keys)
    for rule in data["rules"]:
        if rule["name"] == "dba":
            # rt_mood_int, rt_int_mood are NOT allowed: no text may reach them
            rule["functions"] = {"allow": ["public.rt_erase", "public.rt_folded"]}
            rule["approval"] = {"required_for": ["write"], "approvers": ["dba"]}
        if rule["name"] == "ai-agents":
            rule["functions"] = {"allow": ["public.rt_swap_at_plan", "public.rt_swap"]}
            rule["max_rows"] = 5
    data["rules"].append({"name": "rt-star", "match": {"groups": ["rt-star"]}, "target": "main",
                          "statements": {"allow": ["read", "write", "transaction"]}, "schemas": {"allow": ["*"]},
                          "functions": {"allow": ["*"]},
                          "approval": {"required_for": ["write"], "approvers": ["dba"]}})
    proxy = RunningProxy(data, directory)
    # the MCP server is a process of its own: a journal of its own (one writer per journal)
    config = directory / "pgwarden.yaml"
    config.write_text(yaml.safe_dump({**data, "audit": {"journal_dir": str(directory / "mcp-journal")}}))
    try:
        yield proxy, config, dsn
    finally:
        proxy.close()


# ---- helpers ----------------------------------------------------------------------------------------------


def _dba(proxy: RunningProxy, keys: Keys, group: str = "dba") -> RawClient:
    return RawClient(proxy.port, keys.token("dana", (group,)), user="dana")


def _ledger(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM public.rt_ledger").fetchone()[0]


def _restore(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.rt_ledger VALUES (3, 'c') ON CONFLICT DO NOTHING")


def _wire_text(c: RawClient, sql: str) -> list[str]:
    """Run ``sql`` as one simple Query, then COMMIT whatever transaction it left open."""
    r = c.query(sql)
    if _ready(r) != [b"I"]:
        c.query("COMMIT")
    return _codes(r)


# A hidden write that must never stand: each text runs outside any READ ONLY block the door could open
# (transaction control in the text), so only a refusal (55000) or the analysis denying it keeps it out.
_UNSEEN = {
    "domain-check": "BEGIN; SELECT 'x'::public.rt_checked; COMMIT",
    "cast-to-int4": "BEGIN; SELECT mood::int4 FROM public.rt_moods; COMMIT",
    "cast-to-integer": "BEGIN; SELECT CAST(mood AS integer) FROM public.rt_moods; COMMIT",
}


# ---- breach: a domain CHECK / a user cast is user code the analysis never sees ---------------------------


@pytest.mark.parametrize("how", list(_UNSEEN))
def test_wire_hidden_user_code_beside_transaction_control(rt, keys: Keys, how: str) -> None:
    proxy, _, dsn = rt
    c = _dba(proxy, keys)
    try:
        codes = _wire_text(c, _UNSEEN[how])
        written = _ledger(dsn) != 3
    finally:
        c.close()
        _restore(dsn)
    assert not written, f"{how}: the hidden write committed unapproved ({codes})"


@pytest.mark.parametrize("how", list(_UNSEEN))
def test_mcp_hidden_user_code_beside_transaction_control(rt, keys: Keys, how: str) -> None:
    _, config, dsn = rt
    try:
        answer = query_outcomes(config, keys.token("dana", ("dba",)), [_UNSEEN[how]], mask_key=MASK_KEY)
        written = _ledger(dsn) != 3
    finally:
        _restore(dsn)
    assert not written, f"{how}: the hidden write committed unapproved through the MCP door ({answer})"


def test_wire_domain_typed_bind_parameter_in_the_clients_transaction(rt, keys: Keys) -> None:
    """The text is ``SELECT $1::public.rt_checked``: no function in it; the domain's CHECK runs when Bind
    reads the parameter, inside the client's transaction, which then commits."""
    proxy, _, dsn = rt
    c = _dba(proxy, keys)
    try:
        assert _ready(c.query("BEGIN")) == [b"T"]
        r = _sync(c, Parse("", "SELECT $1::public.rt_checked"), Bind("", "", (), (b"x",), ()), Execute("", 0))
        c.query("COMMIT")
        written = _ledger(dsn) != 3
    finally:
        c.close()
        _restore(dsn)
    assert not written, f"the domain CHECK's write committed unapproved ({_codes(r)})"


def test_wire_star_rule_cast_is_not_user_code(rt, keys: Keys) -> None:
    """functions.allow ['*']: ``_cast`` matches the user cast to rt_mood and returns before setting
    user_code, so ``BEGIN; SELECT 1::public.rt_mood; COMMIT`` is not refused."""
    proxy, _, dsn = rt
    c = _dba(proxy, keys, "rt-star")
    try:
        # the same rule flags a call of the function itself
        assert _wire_text(c, "BEGIN; SELECT public.rt_int_mood(1); COMMIT") == ["55000"]
        codes = _wire_text(c, "BEGIN; SELECT 1::public.rt_mood; COMMIT")
        written = _ledger(dsn) != 3
    finally:
        c.close()
        _restore(dsn)
    assert not written, f"the cast function's write committed unapproved ({codes})"


# ---- breach: code run at Bind, before the Execute that read_only_required guards ---------------------------


def test_wire_bind_folds_an_allowed_immutable_function_before_the_refusal(rt, keys: Keys) -> None:
    """``SELECT public.rt_folded()`` is user code (refused at Execute inside the client's transaction), but the
    planner runs the IMMUTABLE function at Bind; it calls the VOLATILE writer. Bind + Sync, then COMMIT."""
    proxy, _, dsn = rt
    c = _dba(proxy, keys)
    try:
        assert _ready(c.query("BEGIN")) == [b"T"]
        r = _sync(c, Parse("", "SELECT public.rt_folded()"), Bind("", "", (), (), ()))
        c.query("COMMIT")
        written = _ledger(dsn) != 3
    finally:
        c.close()
        _restore(dsn)
    assert not written, f"the write run at Bind committed unapproved ({_codes(r)})"


# ---- breach: a portal swapped by code run at Bind is not described again ----------------------------------


def test_portal_swapped_at_bind_runs_under_the_stale_screen(rt, keys: Keys) -> None:
    proxy, _, _ = rt
    c = RawClient(proxy.port, keys.token())
    try:
        out = _sync(c, Parse("h", "SELECT 1::int4 AS x"), Bind("p", "h", (), (), ()), Execute("p", 1),
                    # planning the unnamed statement at Bind runs rt_swap_at_plan('p'): portal p is now
                    # a cursor over rt_secrets
                    Parse("", "SELECT public.rt_swap_at_plan('p')"), Bind("", "", (), (), ()),
                    Execute("p", 0))
    finally:
        c.close()
    text = b"".join(_rows(out)).decode("utf-8", "replace")
    assert CARD not in text and EMAIL not in text, "detector-findable values went out under a stale screen"


# ---- what held --------------------------------------------------------------------------------------------


def test_view_body_function_is_user_code(rt, keys: Keys) -> None:
    """A function called in a view's body is in the analysis (view lineage): reading the view inside the
    client's transaction is refused; on its own it runs wrapped and the write fails."""
    proxy, _, dsn = rt
    c = _dba(proxy, keys)
    try:
        assert _wire_text(c, "BEGIN; SELECT * FROM public.rt_audited; COMMIT") == ["55000"]
        assert _ready(c.query("BEGIN")) == [b"T"]
        r = c.query("TABLE public.rt_audited")
        assert _codes(r) == ["55000"]
        c.query("ROLLBACK")
        assert _codes(c.query("SELECT * FROM public.rt_audited")) == ["25006"]
    finally:
        c.close()
    assert _ledger(dsn) == 3


def test_sql_execute_of_prepared_user_code_inside_a_transaction_is_refused(rt, keys: Keys) -> None:
    proxy, _, dsn = rt
    c = _dba(proxy, keys)
    try:
        assert not _errors(c.query("PREPARE rt_pp AS SELECT public.rt_erase()"))
        assert _ready(c.query("BEGIN")) == [b"T"]
        assert _codes(c.query("EXECUTE rt_pp")) == ["55000"]
        c.query("ROLLBACK")
        assert _codes(c.query("EXECUTE rt_pp")) == ["25006"]  # on its own: wrapped
        # and through the protocol, Parse of 'EXECUTE rt_pp' inside the transaction
        assert _ready(c.query("BEGIN")) == [b"T"]
        r = _sync(c, Parse("", "EXECUTE rt_pp"), Bind("", "", (), (), ()), Execute("", 0))
        assert "55000" in _codes(r)
        c.query("ROLLBACK")
    finally:
        c.close()
    assert _ledger(dsn) == 3


def test_portal_swapped_by_a_query_in_between_is_described_again(rt, keys: Keys) -> None:
    """Execute with a row limit, a simple Query whose allowed function swaps the portal, Execute again:
    the re-Describe sees two text columns where the plan has one int4 and the rows are withheld."""
    proxy, _, _ = rt
    c = RawClient(proxy.port, keys.token())
    try:
        assert not _errors(c.query("BEGIN"))
        assert not _errors(_sync(c, Parse("h", "SELECT 1::int4 AS x"), Bind("p", "h", (), (), ()),
                                 Describe("P", "p"), Execute("p", 1)))
        assert not _errors(c.query("SELECT public.rt_swap('p')"))
        out = _sync(c, Execute("p", 0))
        c.query("ROLLBACK")
    finally:
        c.close()
    text = b"".join(_rows(out)).decode("utf-8", "replace")
    assert CARD not in text and EMAIL not in text
    assert "XX000" in _codes(out), _errors(out)


def test_unseen_user_code_sent_on_its_own_is_refused(rt, keys: Keys) -> None:
    """Sent alone, the casts that run user code are now seen by the analysis: a cast to a domain whose CHECK
    calls a user function, and a cast a user cast function performs, are refused (function_not_allowed,
    42501) for a rule that does not allow all functions — before anything reaches PostgreSQL. (The READ
    ONLY block held for them too, before they were seen: 25006.) Literals a cast reads with the type's
    input function, or that already have the target type, are not concerned."""
    proxy, _, dsn = rt
    c = _dba(proxy, keys)
    try:
        for sql in ("SELECT 'x'::public.rt_checked", "SELECT NULL::public.rt_checked",
                    "SELECT mood::int4 FROM public.rt_moods", "SELECT CAST(mood AS integer) FROM public.rt_moods",
                    "SELECT 1::public.rt_mood"):
            r = c.query(sql)
            assert _codes(r) == ["42501"], sql
            assert _ready(r) == [b"I"], sql
        r = _sync(c, Parse("", "SELECT $1::public.rt_checked"), Bind("", "", (), (b"x",), ()), Execute("", 0))
        assert _codes(r) == ["42501"]
        for sql in ("SELECT 1::int4", "SELECT '7'::integer", "SELECT 'calm'::public.rt_mood"):
            assert not _errors(c.query(sql)), sql
    finally:
        c.close()
    assert _ledger(dsn) == 3
