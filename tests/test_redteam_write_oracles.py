"""Red-team of the write-side oracles on masked columns, through both doors (psycopg via the wire proxy,
the MCP ``execute`` tool via the SDK's stdio client), for a principal allowed ``read, write``.

Claims attacked: (1) a write that assigns a masked column covered by a unique index / exclusion constraint,
or a column whose FK references a masked column, is refused (``masked_existence_probe``), so its outcome
cannot tell whether a guessed value is stored; (2) errors of writes to a table with masked columns are
scrubbed (``_writes_masked_table``); (3) harmless writes still run. A probe is a pair (right guess, wrong
guess); secure means the right guess is not answered by 23505/23P01/23503 and both answer alike. Wire
statements run in a transaction rolled back (``SET CONSTRAINTS ALL IMMEDIATE`` for deferred ones).

Breaches found (emails masked ``redact``; Z = a stored value). All fixed since, except those of triggers and
rules and the documented DELETE limit, which stay strict xfails (see PROBE_BREACHES):
- updatable view: ``INSERT INTO rt_users_v (id, email) VALUES (9, Z)`` → 23505 (a new value: ok); also
  ``UPDATE rt_users_v SET email = Z``. ``existence_probes`` resolves the view, which has no probes
  (``RELATIONS_SQL`` loads probes for r/p/f only).
- partition / inheritance child: mask on ``rt_part.email`` (parent), ``INSERT INTO rt_part_eu (…, email)``
  → 23505; same for ``rt_kid`` (child of masked ``rt_base``, own unique index), and ``COPY rt_kid … FROM
  STDIN``. ``existence_probes`` calls ``masks.find`` on the child's column, ignoring ``rel.ancestors``.
- generated column: ``email_norm GENERATED ALWAYS AS (lower(email)) STORED UNIQUE`` (both masked);
  ``INSERT (id, email) VALUES (9, upper(Z))`` → 23505. Probes list email_norm, not what it is computed from.
- triggers / rules: a BEFORE trigger copying ``email`` into a unique ``email_key``; an AFTER trigger (or a
  ``DO ALSO`` rule) on unmasked ``rt_inbox`` inserting ``payload`` into ``rt_users.email``:
  ``INSERT INTO rt_inbox VALUES (20, Z)`` → 23505.
- multi-column unique (tenant, email): ``UPDATE rt_mc SET tenant = 'b' WHERE id = 1`` → 23505 iff row 1's
  email equals a tenant-b row's: equality of redacted values. Only masked probe columns are checked.
- partial unique index ``(slot) WHERE email LIKE '%@vip.org'``: ``UPDATE rt_pi SET slot = 1 WHERE id = 2``
  → 23505 iff row 2's email matches the predicate.
- documented limit confirmed: ``DELETE FROM rt_owner WHERE id = 1`` → 23503 iff a masked FK column
  references it.
- value disclosure: a CHECK violation of ``UPDATE rt_sec_v SET note = 'boom'`` (view over masked
  ``rt_sec.secret``) or of a trigger on unmasked ``rt_cmd`` updating ``rt_sec`` prints ``Failing row
  contains (1, <secret>, boom)`` unscrubbed: ``_writes_masked_table`` checks only the statement's own
  targets. (E-mail-shaped values were caught by the email detector; a non-matching secret is not.)

False denial: ``INSERT INTO rt_def DEFAULT VALUES`` is refused (no column list is taken as ``*``).

Held: direct INSERT/UPDATE/MERGE (with and without column lists), INSERT … SELECT without a list, ON
CONFLICT ON CONSTRAINT, ``SET (a, b) = (…)`` and ``= (SELECT …)``, deferred unique, composite FK (both
parts), partitioned parent, schema-qualified and quoted names, COPY FROM with and without a list; direct
CHECK violations are scrubbed; reads of the view/partition/child are masked; harmless writes (other
columns, upsert on id, MERGE on note, view/partition writes of other columns, COPY of other columns) run.
"""

from __future__ import annotations

import os

import psycopg
import pytest
import yaml

from support.cases import load_public_cases
from support.mcp_stdio import query_outcomes, tool_results
from support.wire import Keys, RunningProxy, config_data

MASK_KEY = "test-mask-key-0123456789"
Z = "zed@example.org"
SECRET = "q7x9plover"  # a masked value no content detector recognises

SETUP = f"""
CREATE TABLE public.rt_users (id int PRIMARY KEY, email text UNIQUE, tenant text, note text);
INSERT INTO public.rt_users VALUES (1, '{Z}', 'a', 'n1'), (2, 'amy@example.org', 'b', 'n2');
CREATE VIEW public.rt_users_v AS SELECT id, email, note FROM public.rt_users;

CREATE TABLE public.rt_part (region text, id int, email text, UNIQUE (region, email)) PARTITION BY LIST (region);
CREATE TABLE public.rt_part_eu PARTITION OF public.rt_part FOR VALUES IN ('eu');
INSERT INTO public.rt_part VALUES ('eu', 1, '{Z}');

CREATE TABLE public.rt_base (id int, email text);
CREATE TABLE public.rt_kid (extra int) INHERITS (public.rt_base);
CREATE UNIQUE INDEX rt_kid_email ON public.rt_kid (email);
INSERT INTO public.rt_kid VALUES (1, '{Z}', 0);

CREATE TABLE public.rt_gen (id int PRIMARY KEY, email text,
    email_norm text GENERATED ALWAYS AS (lower(email)) STORED UNIQUE);
INSERT INTO public.rt_gen (id, email) VALUES (1, '{Z}');

CREATE TABLE public.rt_trg (id int PRIMARY KEY, email text, email_key text UNIQUE);
CREATE FUNCTION public.rt_trg_fill() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN NEW.email_key := lower(NEW.email); RETURN NEW; END $$;
CREATE TRIGGER rt_trg_fill BEFORE INSERT OR UPDATE ON public.rt_trg
  FOR EACH ROW EXECUTE FUNCTION public.rt_trg_fill();
INSERT INTO public.rt_trg (id, email) VALUES (1, '{Z}');

CREATE TABLE public.rt_inbox (id int PRIMARY KEY, payload text);
CREATE FUNCTION public.rt_inbox_fwd() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO public.rt_users (id, email) VALUES (NEW.id, NEW.payload); RETURN NEW; END $$;
CREATE TRIGGER rt_inbox_fwd AFTER INSERT ON public.rt_inbox FOR EACH ROW EXECUTE FUNCTION public.rt_inbox_fwd();

CREATE TABLE public.rt_outbox (id int PRIMARY KEY, payload text);
CREATE RULE rt_outbox_fwd AS ON INSERT TO public.rt_outbox
  DO ALSO INSERT INTO public.rt_users (id, email) VALUES (NEW.id, NEW.payload);

CREATE TABLE public.rt_mc (id int PRIMARY KEY, tenant text, email text, UNIQUE (tenant, email));
INSERT INTO public.rt_mc VALUES (1, 'a', '{Z}'), (2, 'b', '{Z}'), (3, 'c', 'amy@example.org');

CREATE TABLE public.rt_pi (id int PRIMARY KEY, slot int, email text);
CREATE UNIQUE INDEX rt_pi_vip ON public.rt_pi (slot) WHERE email LIKE '%@vip.org';
INSERT INTO public.rt_pi VALUES (1, 1, 'zed@vip.org'), (2, 2, 'amy@vip.org'), (3, 3, 'bob@plain.org');

CREATE TABLE public.rt_acct (tenant text, email text, PRIMARY KEY (tenant, email));
INSERT INTO public.rt_acct VALUES ('a', '{Z}');
CREATE TABLE public.rt_acct_ref (id int PRIMARY KEY, tenant text, email text,
    FOREIGN KEY (tenant, email) REFERENCES public.rt_acct);

CREATE TABLE public.rt_def (id serial PRIMARY KEY, email text UNIQUE, note text DEFAULT 'd');

CREATE TABLE public.rt_owner (id int PRIMARY KEY, email text UNIQUE);
INSERT INTO public.rt_owner VALUES (1, '{Z}'), (2, 'amy@example.org');
CREATE TABLE public.rt_link (id int PRIMARY KEY, owner_email text REFERENCES public.rt_owner (email));
INSERT INTO public.rt_link VALUES (1, '{Z}');

CREATE TABLE public.rt_sec (id int PRIMARY KEY, secret text, note text CHECK (note IS DISTINCT FROM 'boom'));
INSERT INTO public.rt_sec VALUES (1, 'hunter2-{SECRET}', 'n');
CREATE VIEW public.rt_sec_v AS SELECT id, secret, note FROM public.rt_sec;
CREATE TABLE public.rt_cmd (id int PRIMARY KEY, note text);
CREATE FUNCTION public.rt_cmd_fwd() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN UPDATE public.rt_sec SET note = NEW.note WHERE id = NEW.id; RETURN NEW; END $$;
CREATE TRIGGER rt_cmd_fwd AFTER INSERT ON public.rt_cmd FOR EACH ROW EXECUTE FUNCTION public.rt_cmd_fwd();

CREATE TABLE public.rt_dfr (id int PRIMARY KEY, email text UNIQUE DEFERRABLE INITIALLY DEFERRED);
INSERT INTO public.rt_dfr VALUES (1, '{Z}');
"""

MASKED = ["public.rt_users.email", "public.rt_part.email", "public.rt_base.email", "public.rt_gen.email",
          "public.rt_gen.email_norm", "public.rt_trg.email", "public.rt_trg.email_key", "public.rt_mc.email",
          "public.rt_pi.email", "public.rt_acct.email", "public.rt_def.email", "public.rt_link.owner_email",
          "public.rt_dfr.email", "public.rt_sec.secret"]

ORACLE = {"23505", "23P01", "23503"}

# (name, statement with the right guess / the row that conflicts, the same with a wrong guess / a row that
# does not). Secure: the right guess is not answered by a constraint error, and both answer alike.
PROBES = [
    ("view", f"INSERT INTO rt_users_v (id, email) VALUES (9, '{Z}')",
     "INSERT INTO rt_users_v (id, email) VALUES (10, 'nobody@example.org')"),
    ("view_update", f"UPDATE rt_users_v SET email = '{Z}' WHERE id = 2",
     "UPDATE rt_users_v SET email = 'nobody2@example.org' WHERE id = 2"),
    ("partition", f"INSERT INTO rt_part_eu (region, id, email) VALUES ('eu', 9, '{Z}')",
     "INSERT INTO rt_part_eu (region, id, email) VALUES ('eu', 10, 'nobody@example.org')"),
    ("inheritance_child", f"INSERT INTO rt_kid (id, email, extra) VALUES (9, '{Z}', 0)",
     "INSERT INTO rt_kid (id, email, extra) VALUES (10, 'nobody@example.org', 0)"),
    ("generated_column", f"INSERT INTO rt_gen (id, email) VALUES (9, '{Z.upper()}')",
     "INSERT INTO rt_gen (id, email) VALUES (10, 'NOBODY@example.org')"),
    ("trigger_same_table", f"INSERT INTO rt_trg (id, email) VALUES (9, '{Z.upper()}')",
     "INSERT INTO rt_trg (id, email) VALUES (10, 'NOBODY@example.org')"),
    ("trigger_other_table", f"INSERT INTO rt_inbox (id, payload) VALUES (20, '{Z}')",
     "INSERT INTO rt_inbox (id, payload) VALUES (21, 'nobody3@example.org')"),
    ("rule_other_table", f"INSERT INTO rt_outbox (id, payload) VALUES (30, '{Z}')",
     "INSERT INTO rt_outbox (id, payload) VALUES (31, 'nobody4@example.org')"),
    ("multi_column_unique", "UPDATE rt_mc SET tenant = 'b' WHERE id = 1",
     "UPDATE rt_mc SET tenant = 'b' WHERE id = 3"),
    ("partial_unique_predicate", "UPDATE rt_pi SET slot = 1 WHERE id = 2",
     "UPDATE rt_pi SET slot = 1 WHERE id = 3"),
    ("composite_fk", f"INSERT INTO rt_acct_ref VALUES (1, 'a', '{Z}')",
     "INSERT INTO rt_acct_ref VALUES (2, 'a', 'nobody@example.org')"),
    ("composite_fk_unmasked_part", f"INSERT INTO rt_acct_ref (id, tenant, email) VALUES (3, 'b', '{Z}')",
     "INSERT INTO rt_acct_ref (id, tenant, email) VALUES (4, 'a', 'nobody@example.org')"),
    ("insert_select_no_list", f"INSERT INTO rt_users SELECT 9, '{Z}', 'a', 'n'",
     "INSERT INTO rt_users SELECT 10, 'nobody@example.org', 'a', 'n'"),
    ("on_conflict_on_constraint", f"INSERT INTO rt_users (id, email) VALUES (9, '{Z}') "
     "ON CONFLICT ON CONSTRAINT rt_users_email_key DO UPDATE SET note = 'hit'",
     "INSERT INTO rt_users (id, email) VALUES (10, 'nobody@example.org') "
     "ON CONFLICT ON CONSTRAINT rt_users_email_key DO UPDATE SET note = 'hit'"),
    ("multi_assign", f"UPDATE rt_users SET (note, email) = ('x', '{Z}') WHERE id = 2",
     "UPDATE rt_users SET (note, email) = ('x', 'nobody@example.org') WHERE id = 2"),
    ("multi_assign_subselect", f"UPDATE rt_users SET (note, email) = (SELECT 'x', '{Z}') WHERE id = 2",
     "UPDATE rt_users SET (note, email) = (SELECT 'x', 'nobody@example.org') WHERE id = 2"),
    ("merge_update", f"MERGE INTO rt_users u USING (VALUES (2)) v (id) ON u.id = v.id "
     f"WHEN MATCHED THEN UPDATE SET email = '{Z}'",
     "MERGE INTO rt_users u USING (VALUES (2)) v (id) ON u.id = v.id "
     "WHEN MATCHED THEN UPDATE SET email = 'nobody@example.org'"),
    ("merge_insert_no_list", f"MERGE INTO rt_users u USING (VALUES (9)) v (id) ON u.id = v.id "
     f"WHEN NOT MATCHED THEN INSERT VALUES (9, '{Z}', 'a', 'n')",
     "MERGE INTO rt_users u USING (VALUES (10)) v (id) ON u.id = v.id "
     "WHEN NOT MATCHED THEN INSERT VALUES (10, 'nobody@example.org', 'a', 'n')"),
    ("partition_parent", f"INSERT INTO rt_part (region, id, email) VALUES ('eu', 9, '{Z}')",
     "INSERT INTO rt_part (region, id, email) VALUES ('eu', 10, 'nobody5@example.org')"),
    ("deferred_unique", f"INSERT INTO rt_dfr VALUES (9, '{Z}')",
     "INSERT INTO rt_dfr VALUES (10, 'nobody@example.org')"),
    ("delete_referenced_parent", "DELETE FROM rt_owner WHERE id = 1", "DELETE FROM rt_owner WHERE id = 2"),
    ("schema_qualified", f"INSERT INTO public.rt_users (id, email) VALUES (9, '{Z}')",
     "INSERT INTO public.rt_users (id, email) VALUES (10, 'nobody@example.org')"),
    ("quoted_identifiers", f'INSERT INTO "rt_users" ("id", "email") VALUES (9, \'{Z}\')',
     'INSERT INTO "rt_users" ("id", "email") VALUES (10, \'nobody@example.org\')'),
]

# Statements whose error text prints a stored row of a table with a masked column (CHECK violation:
# "Failing row contains (…)"); the masked value must not appear in what either door returns.
LEAKS = [
    ("view_check_violation", "UPDATE rt_sec_v SET note = 'boom' WHERE id = 1"),
    ("trigger_check_violation", "INSERT INTO rt_cmd VALUES (1, 'boom')"),
    ("direct_check_violation", "UPDATE rt_sec SET note = 'boom' WHERE id = 1"),
]


def _breach(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


# Still open (documented in docs/security.md, Limits): code the server runs on a write — a trigger or a rule —
# is invisible to the analysis; and DELETE of a row a masked foreign key references. The rest of the breaches
# found here are fixed: views are followed to their base columns, masks of a parent hold for its partitions and
# children, a unique group (index, exclusion constraint) counts all its columns — predicate and generated-from
# ones included — and errors of writes through views or into tables with triggers or rules are scrubbed.
PROBE_BREACHES = {
    "trigger_same_table": _breach("BREACH: a BEFORE trigger copies the written masked column into a masked "
                                  "unique column: 23505 vs ok"),
    "trigger_other_table": _breach("BREACH: INSERT into an unmasked table whose trigger inserts the value into "
                                   "a masked unique column: 23505 vs ok"),
    "rule_other_table": _breach("BREACH: INSERT into an unmasked table whose DO ALSO rule inserts into a masked "
                                "unique column: 23505 vs ok"),
    "delete_referenced_parent": _breach("BREACH (documented limit): DELETE of a parent row fails 23503 exactly "
                                        "when a masked FK column references it"),
}
LEAK_BREACHES: dict = {}

HARMLESS = [
    ("insert_other_columns", "INSERT INTO rt_users (id, note) VALUES (50, 'x')"),
    ("update_other_column", "UPDATE rt_users SET note = 'y' WHERE id = 2"),
    ("multi_assign_other_columns", "UPDATE rt_users SET (note, tenant) = ('z', 'q') WHERE id = 2"),
    ("insert_select_other_columns", "INSERT INTO rt_users (id, note) SELECT 51, 'x'"),
    ("upsert_on_id", "INSERT INTO rt_users (id, note) VALUES (2, 'u') ON CONFLICT (id) DO UPDATE SET note = "
     "excluded.note"),
    ("merge_update_note", "MERGE INTO rt_users u USING (VALUES (2)) v (id) ON u.id = v.id "
     "WHEN MATCHED THEN UPDATE SET note = 'm'"),
    ("delete_by_id", "DELETE FROM rt_users WHERE id = 99"),
    ("default_values", "INSERT INTO rt_def DEFAULT VALUES"),
    ("partition_other_columns", "INSERT INTO rt_part_eu (region, id) VALUES ('eu', 52)"),
    ("view_other_columns", "INSERT INTO rt_users_v (id, note) VALUES (53, 'v')"),
]


@pytest.fixture(scope="module")
def outcomes(make_db_module, tmp_path_factory):
    os.environ.setdefault("PGWARDEN_MASK_KEY", MASK_KEY)
    dsn = make_db_module(load_public_cases().fixture_sql + "\n" + SETUP)
    directory = tmp_path_factory.mktemp("redteam-write-oracles")
    keys = Keys(directory)
    data = config_data(dsn, directory, keys)
    data["rules"].insert(0, {"name": "writer", "match": {"groups": ["writers"]}, "target": "main",
                             "statements": {"allow": ["read", "write"]}, "schemas": {"allow": ["public"]}})
    data["masking"]["columns"] += [{"column": c, "strategy": "redact"} for c in MASKED]
    proxy = RunningProxy(data, directory)
    config = directory / "pgwarden.yaml"
    config.write_text(yaml.safe_dump({**data, "audit": {"journal_dir": str(directory / "mcp-journal")}}))
    token = keys.token("wren", ("writers",))
    texts = [t for _, r, w in PROBES for t in (r, w)] + [t for _, t in HARMLESS]
    try:
        wire = {t: _wire(proxy, token, t) for t in texts}
        for _, sql in LEAKS:
            wire["text:" + sql] = _wire_text(proxy, token, sql)
        wire["copy_list"] = _copy(proxy, token, "COPY rt_users (id, email) FROM STDIN", f"9\t{Z}\n")
        wire["copy_list_wrong"] = _copy(proxy, token, "COPY rt_users (id, email) FROM STDIN",
                                        "10\tnobody@example.org\n")
        wire["copy_all"] = _copy(proxy, token, "COPY rt_users FROM STDIN", f"9\t{Z}\ta\tn\n")
        wire["copy_kid"] = _copy(proxy, token, "COPY rt_kid (id, email, extra) FROM STDIN", f"9\t{Z}\t0\n")
        wire["copy_kid_wrong"] = _copy(proxy, token, "COPY rt_kid (id, email, extra) FROM STDIN",
                                       "10\tnobody@example.org\t0\n")
        wire["copy_note"] = _copy(proxy, token, "COPY rt_users (id, note) FROM STDIN", "60\tc\n")
        mcp = dict(zip(texts, query_outcomes(config, token, texts, mask_key=MASK_KEY, tool="execute"),
                       strict=True))
        calls = [("execute", {"sql": sql}) for _, sql in LEAKS]
        for (_, sql), (_, text) in zip(LEAKS, tool_results(config, token, calls, mask_key=MASK_KEY), strict=True):
            mcp["text:" + sql] = text
        yield wire, mcp
    finally:
        proxy.close()


def _wire(proxy: RunningProxy, token: str, sql: str) -> str:
    """The outcome of ``sql`` in a transaction rolled back afterwards (COMMIT for deferred constraints)."""
    with psycopg.connect(proxy.dsn(token, user="wren")) as conn:
        try:
            conn.execute(sql.encode())
            conn.execute(b"SET CONSTRAINTS ALL IMMEDIATE")
        except psycopg.Error as exc:
            conn.rollback()
            return exc.diag.sqlstate or "?"
        conn.rollback()
        return "ok"


def _wire_text(proxy: RunningProxy, token: str, sql: str) -> str:
    """Everything the server's error says through the proxy (message, detail, hint, context)."""
    with psycopg.connect(proxy.dsn(token, user="wren")) as conn:
        try:
            conn.execute(sql.encode())
        except psycopg.Error as exc:
            d = exc.diag
            return " | ".join(str(x) for x in (d.message_primary, d.message_detail, d.message_hint, d.context))
        finally:
            conn.rollback()
        return "ok"


def _copy(proxy: RunningProxy, token: str, sql: str, rows: str) -> str:
    with psycopg.connect(proxy.dsn(token, user="wren")) as conn:
        try:
            with conn.cursor() as cur, cur.copy(sql.encode()) as copy:
                copy.write(rows)
        except psycopg.Error as exc:
            conn.rollback()
            return exc.diag.sqlstate or "?"
        conn.rollback()
        return "ok"


def _answers(right: str, wrong: str) -> bool:
    return right in ORACLE or (right != wrong and "ok" in (right, wrong))


@pytest.mark.parametrize("name,right,wrong", [pytest.param(*p, marks=PROBE_BREACHES[p[0]])
                                              if p[0] in PROBE_BREACHES else p for p in PROBES],
                         ids=[p[0] for p in PROBES])
def test_a_write_does_not_tell_whether_a_masked_value_is_stored(outcomes, name, right, wrong) -> None:
    wire, mcp = outcomes
    for door, got in (("wire", wire), ("mcp", mcp)):
        assert not _answers(got[right], got[wrong]), (door, got[right], got[wrong])


@pytest.mark.parametrize("name,sql", HARMLESS, ids=[h[0] for h in HARMLESS])
def test_a_write_that_leaves_masked_unique_columns_alone_runs(outcomes, name, sql) -> None:
    wire, mcp = outcomes
    assert (wire[sql], mcp[sql]) == ("ok", "ok")


@pytest.mark.parametrize("right,wrong", [
    ("copy_list", "copy_list_wrong"), ("copy_all", "copy_list_wrong"), ("copy_kid", "copy_kid_wrong")])
def test_copy_from_does_not_tell_whether_a_masked_value_is_stored(outcomes, right, wrong) -> None:
    wire, _ = outcomes
    assert not _answers(wire[right], wire[wrong]), (wire[right], wire[wrong])


def test_copy_from_of_other_columns_runs(outcomes) -> None:
    wire, _ = outcomes
    assert wire["copy_note"] == "ok"


@pytest.mark.parametrize("name,sql", [pytest.param(*leak, marks=LEAK_BREACHES[leak[0]]) if leak[0] in LEAK_BREACHES
                                      else leak for leak in LEAKS], ids=[x[0] for x in LEAKS])
def test_an_error_of_a_write_does_not_print_a_masked_value(outcomes, name, sql) -> None:
    wire, mcp = outcomes
    assert SECRET not in wire["text:" + sql], wire["text:" + sql]
    assert SECRET not in mcp["text:" + sql], mcp["text:" + sql]
