"""The rule's ``max_rows`` through the wire door: a result is cut at that many rows, whatever the protocol.

The agent rule of examples/public_cases.yaml keeps the default (1000 rows). The client gets the first 1000
rows, a WARNING notice saying the result was cut, and a CommandComplete whose count is the rows it received;
the session goes on. The audit record counts what was sent.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from support.wire import Keys, RawClient, RunningProxy, config_data

LIMIT = 1000
BIG = "SELECT g FROM generate_series(1, 5000) g"


def _agent(proxy: RunningProxy, keys: Keys, notices: list[str]) -> psycopg.Connection:
    conn = psycopg.connect(proxy.dsn(keys.token()), autocommit=True)
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    return conn


@pytest.mark.parametrize("mode", ["simple", "extended", "binary", "prepared"])
def test_a_result_is_cut_at_max_rows(proxy: RunningProxy, keys: Keys, mode: str) -> None:
    notices: list[str] = []
    with _agent(proxy, keys, notices) as conn:
        if mode == "simple":
            cur = psycopg.ClientCursor(conn)  # a simple Query message
            rows = cur.execute(BIG).fetchall()
            assert cur.statusmessage == f"SELECT {LIMIT}"
        elif mode == "binary":
            with conn.cursor(binary=True) as cur:
                rows = cur.execute("SELECT g FROM generate_series(1, %s) g", [5000]).fetchall()
        else:
            prepare = mode == "prepared"
            for _ in range(3 if prepare else 1):
                cur = conn.execute("SELECT g FROM generate_series(1, %s) g", [5000], prepare=prepare)
                rows = cur.fetchall()
                assert cur.statusmessage == f"SELECT {LIMIT}"
        assert [r[0] for r in rows] == list(range(1, LIMIT + 1))
        assert any(f"cut at {LIMIT} rows" in n for n in notices)
        assert conn.execute("SELECT 7").fetchone() == (7,)  # the session goes on
        # a result inside the limit is untouched, with no notice
        notices.clear()
        assert len(conn.execute("SELECT g FROM generate_series(1, 10) g").fetchall()) == 10
        assert not notices


def test_simple_query_tag_and_notice_bytes(proxy: RunningProxy, keys: Keys) -> None:
    """Over the raw protocol: exactly LIMIT DataRows, then the notice, CommandComplete 'SELECT 1000', and
    the next statement of the same text is counted afresh."""
    client = RawClient(proxy.port, keys.token())
    try:
        replies = client.query(f"{BIG}; SELECT g FROM generate_series(1, 3) g")
        kinds = [k for k, _ in replies]
        assert kinds.count(ord("D")) == LIMIT + 3
        tags = [body for k, body in replies if k == ord("C")]
        assert tags == [b"SELECT 1000\0", b"SELECT 3\0"]
        first_done = kinds.index(ord("C"))
        assert kinds[first_done - 1] == ord("N")
    finally:
        client.close()


def test_a_server_side_cursor_pages_past_the_limit(proxy: RunningProxy, keys: Keys) -> None:
    """max_rows is per statement: each FETCH is one, so a cursor pages through a large result."""
    notices: list[str] = []
    with _agent(proxy, keys, notices) as conn, conn.transaction(), conn.cursor("pages") as cur:
        cur.itersize = 500
        cur.execute(BIG)
        assert sum(1 for _ in cur) == 5000
    assert not notices


def test_asyncpg_fetch_is_cut(proxy: RunningProxy, keys: Keys) -> None:
    asyncpg = pytest.importorskip("asyncpg")

    async def run() -> tuple[int, int]:
        conn = await asyncpg.connect(host="127.0.0.1", port=proxy.port, user="agent", database="main",
                                     password=keys.token(), ssl=False)
        try:
            rows = await conn.fetch("SELECT g FROM generate_series(1, $1::int) g", 5000)
            small = await conn.fetch("SELECT g FROM generate_series(1, $1::int) g", 5)
            return len(rows), len(small)
        finally:
            await conn.close()

    assert asyncio.run(run()) == (LIMIT, 5)


@pytest.mark.parametrize(("options", "header"), [
    ("", False), ("(FORMAT csv)", False), ("(FORMAT csv, HEADER)", True), ("CSV HEADER", True),
    ("(FORMAT csv, HEADER false)", False), ("(FORMAT csv, HEADER 1)", True),
])
def test_copy_out_is_cut_at_max_rows(proxy: RunningProxy, keys: Keys, options: str, header: bool) -> None:
    """COPY … TO STDOUT is a result too: the client gets max_rows data rows (a csv header line is not a row),
    the notice, and 'COPY 1000'."""
    notices: list[str] = []
    with _agent(proxy, keys, notices) as conn:
        cur = conn.cursor()
        with cur.copy(f"COPY (SELECT g, 'v' || g FROM generate_series(1, 5000) g) TO STDOUT {options}") as copy:
            lines = b"".join(bytes(chunk) for chunk in copy).decode().splitlines()
        assert cur.rowcount == LIMIT  # (psycopg reads it from CommandComplete's tag)
        if header:
            assert lines[0] == "g,?column?"
            lines = lines[1:]
        sep = "\t" if not options else ","
        assert lines == [f"{i}{sep}v{i}" for i in range(1, LIMIT + 1)]
        assert any(f"cut at {LIMIT} rows" in n for n in notices)
        assert conn.execute("SELECT 7").fetchone() == (7,)
        notices.clear()
        with cur.copy("COPY (SELECT g FROM generate_series(1, 10) g) TO STDOUT") as copy:
            assert len(b"".join(bytes(c) for c in copy).splitlines()) == 10
        assert cur.rowcount == 10 and not notices


def test_copy_out_cut_over_the_raw_protocol(proxy: RunningProxy, keys: Keys) -> None:
    client = RawClient(proxy.port, keys.token())
    try:
        replies = client.query("COPY (SELECT g FROM generate_series(1, 3000) g) TO STDOUT; SELECT 1")
        kinds = [k for k, _ in replies]
        assert kinds.count(ord("d")) == LIMIT
        assert [body for k, body in replies if k == ord("C")] == [b"COPY 1000\0", b"SELECT 1\0"]
        assert kinds[kinds.index(ord("c")) + 1] == ord("N")  # CopyDone, the notice, then CommandComplete
    finally:
        client.close()


def test_binary_copy_out_is_cut_and_keeps_its_trailer(cases_db_module: str, tmp_path, keys: Keys) -> None:
    """Binary COPY (allowed only where nothing is screened: here a policy without content detectors) is cut
    at max_rows with its trailer kept, so the client still reads a well-formed COPY BINARY stream."""
    data = config_data(cases_db_module, tmp_path, keys)  # its own journal and approvals store
    data.setdefault("masking", {})["detectors"] = {"enabled": False}
    p = RunningProxy(data, tmp_path)
    try:
        with psycopg.connect(p.dsn(keys.token()), autocommit=True) as conn:
            cur = conn.cursor()
            with cur.copy("COPY (SELECT g FROM generate_series(1, 3000) g) TO STDOUT (FORMAT binary)") as copy:
                copy.set_types(["int4"])
                rows = list(copy.rows())
            assert [r[0] for r in rows] == list(range(1, LIMIT + 1))
            assert cur.rowcount == LIMIT
            assert conn.execute("SELECT 7").fetchone() == (7,)
    finally:
        p.close()


def test_asyncpg_copy_from_query_is_cut(proxy: RunningProxy, keys: Keys) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    import io

    async def run() -> tuple[str, list[bytes]]:
        conn = await asyncpg.connect(host="127.0.0.1", port=proxy.port, user="agent", database="main",
                                     password=keys.token(), ssl=False)
        try:
            out = io.BytesIO()
            status = await conn.copy_from_query("SELECT g FROM generate_series(1, 4000) g", output=out,
                                                format="csv", header=True)
            assert await conn.fetchval("SELECT 7") == 7
            return status, out.getvalue().splitlines()
        finally:
            await conn.close()

    status, lines = asyncio.run(run())
    assert status == f"COPY {LIMIT}"
    assert lines[0] == b"g" and lines[1:] == [str(i).encode() for i in range(1, LIMIT + 1)]
