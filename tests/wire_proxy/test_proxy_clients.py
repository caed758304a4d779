"""Real clients through the running proxy against real PostgreSQL: psycopg, asyncpg, psql."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time

import psycopg
import pytest

from support.wire import Keys, RunningProxy

PSQL = shutil.which("psql") or "/usr/bin/psql"


def agent(proxy: RunningProxy, keys: Keys, **kw) -> psycopg.Connection:
    return psycopg.connect(proxy.dsn(keys.token()), autocommit=True, **kw)


def dba(proxy: RunningProxy, keys: Keys, **kw) -> psycopg.Connection:
    return psycopg.connect(proxy.dsn(keys.token("dana", ("dba",)), user="dana"), **kw)


# ---- psycopg ------------------------------------------------------------------------------------


def test_simple_query_masks_and_denial_keeps_session(proxy: RunningProxy, keys: Keys) -> None:
    with agent(proxy, keys) as conn:
        rows = conn.execute("SELECT id, card_number, ssn, email FROM customers ORDER BY id").fetchall()
        assert rows[0][1] == "************1111" and rows[0][2] == "[masked]" and rows[0][3].startswith("h:")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute("SELECT * FROM secrets")
        assert str(info.value).startswith("pgwarden:")
        assert info.value.diag.message_hint and "allows" in info.value.diag.message_hint
        with pytest.raises(psycopg.Error):
            conn.execute("DELETE FROM customers")
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert conn.execute("SELECT current_setting('application_name')").fetchone() == ("pgwarden:agent",)


def test_extended_binary_cursor_prepared_and_server_side(proxy: RunningProxy, keys: Keys) -> None:
    with agent(proxy, keys) as conn:
        assert conn.execute("SELECT %s::int + 1", [41]).fetchone() == (42,)
        assert conn.execute("SELECT card_number FROM customers WHERE id = %s", [1]).fetchone() == ("************1111",)
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT id, customer_id FROM orders ORDER BY id LIMIT 2")
            assert len(cur.fetchall()) == 2
        for _ in range(7):  # psycopg prepares after 5 runs
            assert conn.execute("SELECT full_name FROM customers WHERE id = %s", [2], prepare=True).fetchone()
        with conn.transaction(), conn.cursor("big") as cur:
            cur.execute("SELECT g FROM generate_series(1, 1000) g")
            assert len(cur.fetchmany(10)) == 10
            assert len(cur.fetchall()) == 990


def test_binary_results_are_screened_or_refused(proxy: RunningProxy, keys: Keys) -> None:
    """Binary text columns are read and screened like text ones (a masked column arrives masked, a card
    in free text redacted); a type whose binary form the gateway cannot read is refused, the session goes on."""
    with agent(proxy, keys) as conn:
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT full_name, card_number, 'x 4111111111111111'::text FROM customers WHERE id = %s", [1])
            _, card, note = cur.fetchone()
            assert card == "************1111" and note == "x [masked:card]"
        with conn.cursor(binary=True) as cur, pytest.raises(psycopg.Error) as info:
            cur.execute("SELECT ARRAY[full_name] FROM customers WHERE id = %s", [1])
        assert "binary" in str(info.value) and "text format" in (info.value.diag.message_hint or "")
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_pipeline_with_a_denial_inside(proxy: RunningProxy, keys: Keys) -> None:
    with agent(proxy, keys) as conn:
        with conn.pipeline():
            a = conn.execute("SELECT 1")
            b = conn.execute("SELECT %s::text", ["x"])
        assert a.fetchone() == (1,) and b.fetchone() == ("x",)
        with pytest.raises(psycopg.Error), conn.pipeline():
            conn.execute("SELECT 1")
            conn.execute("SELECT * FROM secrets WHERE id = %s", [1])
            conn.execute("SELECT 3")
        assert conn.execute("SELECT 4").fetchone() == (4,)


def test_copy_out_is_masked_and_copy_in_is_governed(proxy: RunningProxy, keys: Keys) -> None:
    with agent(proxy, keys) as conn:
        with conn.cursor() as cur, cur.copy("COPY (SELECT id, card_number FROM customers ORDER BY id) TO STDOUT") as cp:
            data = b"".join(bytes(b) for b in cp)
        assert b"4111111111111111" not in data and b"************1111" in data
        with pytest.raises(psycopg.Error), conn.cursor() as cur, cur.copy("COPY customers FROM STDIN") as cp:
            cp.write_row((99, "x", "x", "x", "x"))
    with dba(proxy, keys) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY orders (id, customer_id, amount, note) FROM STDIN") as cp:
                cp.write_row((900, 1, 1.5, "copied"))
            assert cur.execute("SELECT note FROM orders WHERE id = 900").fetchone() == ("copied",)
        conn.rollback()


def test_cancel_reaches_the_right_backend(proxy: RunningProxy, keys: Keys) -> None:
    with agent(proxy, keys) as conn, agent(proxy, keys) as other:
        timer = threading.Timer(0.5, conn.cancel_safe)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(10)")
        assert time.monotonic() - started < 5
        assert other.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SELECT 5").fetchone() == (5,)


def test_dba_writes_in_a_transaction(proxy: RunningProxy, keys: Keys) -> None:
    with dba(proxy, keys) as conn:
        conn.execute("UPDATE orders SET note = 'x' WHERE id = 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.rollback()


def test_wrong_user_bad_token_unknown_target(proxy: RunningProxy, keys: Keys) -> None:
    with pytest.raises(psycopg.OperationalError, match="contradicts"):
        psycopg.connect(proxy.dsn(keys.token(), user="somebody"))
    with pytest.raises(psycopg.OperationalError, match="token refused"):
        psycopg.connect(proxy.dsn("not-a-token"))
    with pytest.raises(psycopg.OperationalError, match="no target"):
        psycopg.connect(proxy.dsn(keys.token(), target="nope"))
    with pytest.raises(psycopg.OperationalError, match="default_transaction_read_only"):
        psycopg.connect(proxy.dsn(keys.token(), options="-c default_transaction_read_only=off"))
    with pytest.raises(psycopg.OperationalError, match=r"search_path|not allowed|cannot"):
        psycopg.connect(proxy.dsn(keys.token(), options="-c search_path=evil"))


def test_approval_notice_then_approved_runs(proxy: RunningProxy, keys: Keys) -> None:
    notices: list[str] = []
    with agent(proxy, keys) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        runtime = proxy.runtime
        assert runtime is not None and runtime.broker is not None

        def approve() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                pending = proxy.call(runtime.broker.list("pending"))
                if pending:
                    proxy.call(runtime.broker.approve(pending[0].id, "dana", ["dba"]))
                    return
                time.sleep(0.1)

        t = threading.Thread(target=approve)
        t.start()
        conn.execute("CREATE TABLE approved_by_dana (id int)")
        t.join()
        assert any("waiting for approval" in n for n in notices)
    with dba(proxy, keys) as conn:
        assert conn.execute("SELECT count(*) FROM approved_by_dana").fetchone() == (0,)
        conn.execute("DROP TABLE approved_by_dana")
        conn.commit()


def test_approval_denied_and_cancel_withdraws(proxy: RunningProxy, keys: Keys) -> None:
    runtime = proxy.runtime
    assert runtime is not None and runtime.broker is not None
    with agent(proxy, keys) as conn:
        def deny() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                pending = proxy.call(runtime.broker.list("pending"))
                if pending:
                    proxy.call(runtime.broker.deny(pending[0].id, "dana", ["dba"], "not today"))
                    return
                time.sleep(0.1)

        t = threading.Thread(target=deny)
        t.start()
        with pytest.raises(psycopg.Error, match=r"denied|not today"):
            conn.execute("CREATE TABLE never_made (id int)")
        t.join()
        timer = threading.Timer(0.5, conn.cancel_safe)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("CREATE TABLE never_made_2 (id int)")
        assert conn.execute("SELECT 1").fetchone() == (1,)
    statuses = [r.status.value for r in proxy.call(runtime.broker.list())]
    assert "withdrawn" in statuses and "denied" in statuses


# ---- asyncpg ------------------------------------------------------------------------------------


def test_asyncpg_binary_protocol_prepared_executemany(proxy: RunningProxy, keys: Keys) -> None:
    asyncpg = pytest.importorskip("asyncpg")

    async def go() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=proxy.port, user="dana", database="main",
                                     password=keys.token("dana", ("dba",)), ssl=False)
        try:
            assert await conn.fetchval("SELECT 1 + $1::int", 1) == 2
            stmt = await conn.prepare("SELECT id, customer_id FROM orders WHERE id = $1")
            for i in (1, 2):
                row = await stmt.fetchrow(i)
                assert row["id"] == i
            async with conn.transaction():
                await conn.executemany("INSERT INTO orders (id, customer_id, amount, note) VALUES ($1, 1, $2, 'm')",
                                       [(700 + i, i * 1.0) for i in range(20)])
                assert await conn.fetchval("SELECT count(*)::int FROM orders WHERE id >= 700") == 20
                raise asyncpg.exceptions.ReadOnlySQLTransactionError("roll back")  # any error rolls back
        except asyncpg.exceptions.ReadOnlySQLTransactionError:
            pass
        finally:
            await conn.close()
        conn = await asyncpg.connect(host="127.0.0.1", port=proxy.port, user="agent", database="main",
                                     password=keys.token(), ssl=False)
        try:
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM secrets")
            assert await conn.fetchval("SELECT count(*)::int FROM customers") >= 1
        finally:
            await conn.close()

    asyncio.run(go())


# ---- psql ---------------------------------------------------------------------------------------


def _psql(proxy: RunningProxy, keys: Keys, *args: str, user: str = "agent", groups=("ai-agents",),
          stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PGPASSWORD": keys.token(user, groups), "PGSSLMODE": "disable"}
    return subprocess.run([PSQL, "-h", "127.0.0.1", "-p", str(proxy.port), "-U", user, "-d", "main", "-X",
                           "-v", "ON_ERROR_STOP=0", *args], capture_output=True, text=True, env=env, input=stdin,
                          timeout=60)


def test_psql_meta_commands(proxy: RunningProxy, keys: Keys, tmp_path) -> None:
    out = _psql(proxy, keys, "-c", "\\dt", "-c", "\\d customers", "-c", "\\l", "-c", "\\x",
                "-c", "SELECT id, card_number FROM customers WHERE id = 1")
    assert "customers" in out.stdout, out.stderr
    assert "card_number" in out.stdout
    assert "************1111" in out.stdout and "4111111111111111" not in out.stdout + out.stderr
    target = tmp_path / "c.csv"
    out = _psql(proxy, keys, "-c", f"\\copy (SELECT id, ssn FROM customers) TO '{target}' CSV")
    assert target.exists(), out.stderr
    assert "078-05-1120" not in target.read_text()


def test_psql_cancel_with_sigint(proxy: RunningProxy, keys: Keys) -> None:
    import signal

    env = {**os.environ, "PGPASSWORD": keys.token(), "PGSSLMODE": "disable"}
    p = subprocess.Popen([PSQL, "-h", "127.0.0.1", "-p", str(proxy.port), "-U", "agent", "-d", "main", "-X",
                          "-c", "SELECT pg_sleep(20)"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         text=True)
    time.sleep(1.5)
    started = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=15)
    assert time.monotonic() - started < 10
    assert "cancel" in err.lower()
