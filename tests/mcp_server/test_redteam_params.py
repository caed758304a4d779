"""Red team of the MCP door's ``params`` (``mcp_server/_params.py`` ``bind_parameters``).

Claims attacked: a param is one SQL literal, spliced at the parser's ``ParamRef`` locations, never by text
search; it cannot change the statement's structure; the policy decides the text that runs.

Breaches (each test asserts the secure behaviour; all fixed since — placeholders are the scanner's PARAM
tokens spliced whole by character offset, a negative integer is bracketed, and the bound text must scan as
the statement with each placeholder replaced by its literal's tokens), each end to end through
``pgwarden mcp`` (SDK client, stdio) on PostgreSQL:

1. Negative integer after a minus: ``_literal`` renders ints bare, so ``SELECT id FROM rt_docs WHERE id >
   0-$1 AND tenant = 'a'`` with ``[-1]`` runs ``… id > 0--1 AND …``: ``--`` opens a comment that drops the
   tenant filter (every tenant's rows); on a writer's ``DELETE … WHERE id > 0-$1 AND tenant = 'b'`` every
   row is deleted.
2. Non-ASCII text before a placeholder: pglast's ``location`` is a character offset, the splice uses it as
   a byte offset. ``SELECT id FROM rt_docs WHERE tenant = 'a' AND body <> 'é…é zzzz' AND id = $1`` (15
   ``é``) with ``[" OR true --"]`` splices the quoted value into the earlier literal: its quotes close that
   literal and ``OR true --`` runs as SQL (every row). A shift cutting a UTF-8 sequence raises
   UnicodeDecodeError (an internal error).
3. ``$01`` is parameter 1 but the splice removes ``1 + len(str(number))`` bytes: ``SELECT $01::int`` with
   ``[5]`` runs ``SELECT 51::int``.

Held: the policy judges the spliced text, so the injections above stay within the caller's rule: an
injected DELETE through ``query`` is refused, a read-only ``execute`` write is refused, an injected UNION on
a masked column is refused/masked. Quotes, backslashes (``E''``), ``$1`` in string literals, ``E''``
strings, comments, dollar-quoted bodies and quoted identifiers left alone; ``$10`` vs ``$1``; JSON
objects/arrays as one jsonb-able literal; null, bool, floats (quoted), huge ints, U+2028/U+2029; number-like
strings stay strings (22P02); NUL and lone surrogates refused; too few / too many / unused params refused;
``explain`` binds and refuses ``analyze`` of a write. ``migrate`` takes no params. Wire door: a text value
with invalid UTF-8 (journalled with U+FFFD) is refused by the server (22021).
"""

from __future__ import annotations

import json
import re

import pglast
import psycopg
import pytest
import yaml
from pglast.visitors import Visitor

from pgwarden.mcp_server._params import bind_parameters
from support.cases import load_public_cases
from support.mcp_stdio import tool_results
from support.wire import Keys, config_data

MASK_KEY = "test-mask-key-0123456789"
SETUP = """
CREATE TABLE public.rt_docs (id int PRIMARY KEY, tenant text, body text);
INSERT INTO public.rt_docs VALUES (1, 'a', 'alpha'), (2, 'b', 'beta-other-tenant'), (3, 'a', 'gamma');
CREATE TABLE public.rt_del (id int PRIMARY KEY, tenant text);
INSERT INTO public.rt_del VALUES (1, 'a'), (2, 'b'), (3, 'a'), (4, 'b');
"""


def _shift_sql(payload_host: str = "SELECT id FROM rt_docs WHERE tenant = 'a' AND body <> '{pad}zzzz' "
               "AND id = $1") -> str:
    """A text whose non-ASCII literal moves the splice (pglast gives character offsets, the splice
    counts bytes) into the ``zzzz`` of the string literal before the placeholder."""
    for k in range(1, 200):
        sql = payload_host.format(pad="é" * k)
        data = sql.encode()
        dollar = data.index(b"$1")
        z = data.index(b"zzzz")
        if dollar - k == z:
            return sql
    raise AssertionError("no shift found")


SHIFT_SQL = _shift_sql()
SHIFT_MASK_SQL = _shift_sql("SELECT full_name FROM customers WHERE full_name <> '{pad}zzzz' AND id = $1")

# name -> (tool, arguments); all in one MCP session of the read-only agent
CALLS: dict[str, tuple[str, dict]] = {
    # --- breaches
    "neg_int_comment": ("query", {"sql": "SELECT id FROM rt_docs WHERE id > 0-$1 AND tenant = 'a' ORDER BY id",
                                  "params": [-1]}),
    "shift_escape": ("query", {"sql": SHIFT_SQL, "params": [" OR true --"]}),
    "leading_zero": ("query", {"sql": "SELECT $01::int AS v", "params": [5]}),
    # --- held
    "quote": ("query", {"sql": "SELECT $1::text AS v", "params": ["a'b; DROP TABLE rt_docs; --"]}),
    "backslash": ("query", {"sql": "SELECT $1::text AS v", "params": ["a\\'b\\\\c' OR '1'='1"]}),
    "in_string": ("query", {"sql": "SELECT 'x$1y' AS a, E'\\\\$1' AS e, $1::text AS b", "params": ["q'"]}),
    "in_comments": ("query", {"sql": "SELECT /* $1 */ $1::text AS b -- $1\n", "params": ["q"]}),
    "in_dollar": ("query", {"sql": "SELECT $$ $1 $$ AS a, $t$ '$1' $t$ AS c, $1::text AS b", "params": ["q"]}),
    "in_ident": ("query", {"sql": 'SELECT $1::text AS "$1"', "params": ["q"]}),
    "ten": ("query", {"sql": "SELECT $1::text || '|' || $10::text AS v",
                      "params": ["one", "2", "3", "4", "5", "6", "7", "8", "9", "ten"]}),
    "jsonb": ("query", {"sql": "SELECT $1::jsonb ->> 'k' AS v", "params": [{"k": "it's \\ \u2028 é"}]}),
    "array": ("query", {"sql": "SELECT $1::jsonb AS v", "params": [[1, "a'", None, {"x": [True]}]]}),
    "null": ("query", {"sql": "SELECT $1::text IS NULL AS v", "params": [None]}),
    "bool": ("query", {"sql": "SELECT $1::bool AS v", "params": [True]}),
    "float": ("query", {"sql": "SELECT $1::float8 AS v", "params": [-1.5]}),
    "huge_int": ("query", {"sql": "SELECT $1::numeric::text AS v", "params": [10**30]}),
    "neg_int_cast": ("query", {"sql": "SELECT ($1)::int AS v", "params": [-7]}),
    "numberish": ("query", {"sql": "SELECT id FROM rt_docs WHERE id = $1::int", "params": ["1; DROP TABLE rt_docs"]}),
    "u2028": ("query", {"sql": "SELECT $1::text AS v", "params": ["a\u2028b\u2029c\nd"]}),
    "nul": ("query", {"sql": "SELECT $1::text AS v", "params": ["a\x00b"]}),
    "too_few": ("query", {"sql": "SELECT $1::text, $2::text", "params": ["a"]}),
    "too_many": ("query", {"sql": "SELECT $1::text", "params": ["a", "b"]}),
    "unused": ("query", {"sql": "SELECT 1", "params": ["a"]}),
    "ro_write": ("execute", {"sql": "UPDATE rt_docs SET body = $1 WHERE id = 1", "params": ["pwned"]}),
    "ro_write_in_query": ("query", {"sql": "SELECT $1::text", "params": ["x'); DELETE FROM rt_docs; --"]}),
    "ro_write_shift": ("query", {"sql": SHIFT_SQL, "params": ["; DELETE FROM rt_docs --"]}),
    "mask_shift": ("query", {"sql": SHIFT_MASK_SQL, "params": [" UNION ALL SELECT ssn FROM customers --"]}),
    "mask_param": ("query", {"sql": "SELECT id FROM customers WHERE ssn = $1", "params": ["000"]}),
    "explain": ("explain", {"sql": "SELECT id FROM rt_docs WHERE id = $1", "params": [1]}),
    "explain_write": ("explain", {"sql": "DELETE FROM rt_docs WHERE id = $1", "params": [1], "analyze": True}),
}

# a writer deletes tenant b's rows above an id taken from data: 0-$1 with $1 = -1 is "id > 1" …
DBA_DELETE = ("execute", {"sql": "DELETE FROM rt_del WHERE id > 0-$1 AND tenant = 'b'", "params": [-1]})


@pytest.fixture(scope="module")
def door(make_db_module, tmp_path_factory):
    dsn = make_db_module(load_public_cases().fixture_sql + "\n" + SETUP)
    directory = tmp_path_factory.mktemp("redteam-params")
    keys = Keys(directory)
    data = config_data(dsn, directory, keys)
    config = directory / "pgwarden.yaml"
    config.write_text(yaml.safe_dump({**data, "audit": {"journal_dir": str(directory / "mcp-journal")}}))
    names = list(CALLS)
    out = tool_results(config, keys.token("agent", ("ai-agents",)), [CALLS[n] for n in names], mask_key=MASK_KEY)
    (dba_delete,) = tool_results(config, keys.token("dana", ("dba",)), [DBA_DELETE], mask_key=MASK_KEY)
    return dsn, {**dict(zip(names, out, strict=True)), "dba_delete": dba_delete}


def _string_constants(text: str) -> list[str]:
    found: list[str] = []

    class _V(Visitor):
        def visit_String(self, ancestors, node) -> None:
            found.append(node.sval)

    _V()(pglast.parse_sql(text))
    return found


def _body(text: str) -> dict:
    return json.loads(re.sub(r"^[^{]*", "", text, count=1))


def _ok(results: dict, name: str) -> dict:
    is_error, text = results[name]
    assert not is_error, (name, text)
    return _body(text)


def _rows(results: dict, name: str) -> list:
    return _ok(results, name)["rows"]


# ---------------------------------------------------------------------------------------------------- breaches


def test_a_negative_number_after_a_minus_stays_a_number(door) -> None:
    assert bind_parameters("SELECT 2-$1", [-1]) != "SELECT 2--1"
    _, results = door
    # meant: id > 0 - (-1) AND tenant = 'a' -> only row 3; ran: id > 0 -> every tenant's rows
    assert _rows(results, "neg_int_comment") == [["3"]]


def test_a_negative_number_cannot_widen_a_delete(door) -> None:
    dsn, results = door
    with psycopg.connect(dsn) as conn:
        left = conn.execute("SELECT id, tenant FROM rt_del ORDER BY id").fetchall()
    # meant: id > 0 - (-1) AND tenant = 'b' -> rows 2 and 4; the injection deleted every row
    assert left == [(1, "a"), (3, "a")], (results["dba_delete"], left)


def test_a_string_param_cannot_escape_its_quotes_after_non_ascii_text(door) -> None:
    spliced = bind_parameters(SHIFT_SQL, [" OR true --"])
    assert " OR true --" in _string_constants(spliced), spliced  # the value stays one string literal
    _, results = door
    is_error, text = results["shift_escape"]
    # meant: id = ' OR true --' -> an invalid integer (an error) or no row; ran: WHERE … OR true -> every row
    assert is_error or _body(text)["rows"] == [], text


def test_a_zero_padded_placeholder_is_replaced_whole(door) -> None:
    _, results = door
    is_error, text = results["leading_zero"]
    assert is_error or _body(text)["rows"] == [["5"]], text


# ---------------------------------------------------------------------------------------------------- held


@pytest.mark.parametrize(("name", "expected"), [
    ("quote", [["a'b; DROP TABLE rt_docs; --"]]),
    ("backslash", [["a\\'b\\\\c' OR '1'='1"]]),
    ("in_string", [["x$1y", "\\$1", "q'"]]),
    ("in_comments", [["q"]]),
    ("in_dollar", [[" $1 ", " '$1' ", "q"]]),
    ("in_ident", [["q"]]),
    ("ten", [["one|ten"]]),
    ("jsonb", [["it's \\ \u2028 é"]]),
    ("null", [["t"]]),
    ("bool", [["t"]]),
    ("float", [["-1.5"]]),
    ("huge_int", [[str(10**30)]]),
    ("neg_int_cast", [["-7"]]),
    ("u2028", [["a\u2028b\u2029c\nd"]]),
    ("ro_write_in_query", [["x'); DELETE FROM rt_docs; --"]]),
    ("mask_param", []),
])
def test_a_param_is_one_value(door, name: str, expected: list) -> None:
    _, results = door
    assert _rows(results, name) == expected


def test_json_params_become_one_jsonb_value(door) -> None:
    _, results = door
    assert json.loads(_rows(results, "array")[0][0]) == [1, "a'", None, {"x": [True]}]


@pytest.mark.parametrize(("name", "code"), [
    ("numberish", "22P02"), ("too_few", "parameters_missing"), ("too_many", "parameters_extra"),
    ("unused", "parameters_unused"), ("ro_write", "statement_class_denied"),
    # (since the splice is by character offset the shifted text is one value, which is no integer)
    ("ro_write_shift", "22P02"), ("explain_write", "statement_class_denied"),
])
def test_refused(door, name: str, code: str) -> None:
    _, results = door
    is_error, text = results[name]
    assert is_error, text
    body = _body(text)
    assert code in (body.get("sqlstate"), body.get("error")), text


def test_a_nul_byte_is_refused(door) -> None:
    _, results = door
    assert results["nul"][0]


def test_the_read_only_rule_and_the_data_survive(door) -> None:
    dsn, _ = door
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT id, body FROM rt_docs ORDER BY id").fetchall() == [
            (1, "alpha"), (2, "beta-other-tenant"), (3, "gamma")]


def test_an_injected_union_on_a_masked_column_stays_masked(door) -> None:
    """The shift above turns a param into SQL, but the policy decides the spliced text: ssn is masked."""
    dsn, results = door
    with psycopg.connect(dsn) as conn:
        ssns = [r[0] for r in conn.execute("SELECT ssn FROM customers WHERE ssn IS NOT NULL")]
    _, text = results["mask_shift"]
    assert ssns and not any(s in text for s in ssns), text


def test_explain_binds_params(door) -> None:
    _, results = door
    assert "(id = 1)" in " ".join(_ok(results, "explain")["plan"])


def test_unit_splice_checks() -> None:
    assert bind_parameters("SELECT 1", None) == "SELECT 1"
    assert bind_parameters("SELECT $1", ["a\\b"]) == "SELECT E'a\\\\b'"
    assert bind_parameters("SELECT $1 /* $1 */ -- $1", ["x"]) == "SELECT 'x' /* $1 */ -- $1"
    assert bind_parameters("SELECT $1", [float("nan")]) == "SELECT 'nan'"
    with pytest.raises(Exception):  # noqa: B017 - a lone surrogate must not become text
        bind_parameters("SELECT $1", ["\ud800"])


# ---------------------------------------------------------------------------------------------------- wire door


def test_wire_an_invalid_utf8_text_value_is_refused_not_recorded_as_run(make_db_module, tmp_path) -> None:
    """``text_forms`` renders invalid UTF-8 with U+FFFD, a value other than the bytes bound: held because
    the server refuses such a value (22021), so no statement runs with bytes the journal does not show."""
    from support.wire import RawClient, RunningProxy

    dsn = make_db_module(load_public_cases().fixture_sql)
    keys = Keys(tmp_path)
    proxy = RunningProxy(config_data(dsn, tmp_path, keys), tmp_path)
    try:
        client = RawClient(proxy.port, keys.token())
        reply = client.extended("SELECT $1::text AS v /* rt-utf8 */", (b"ab\xffcd",))
        client.close()
    finally:
        proxy.close()
    errors = [p for t, p in reply if t == ord("E")]
    assert errors and b"22021" in errors[0], reply
    assert not [p for t, p in reply if t == ord("D")]
