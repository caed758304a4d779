"""The wire proxy's own CPU per statement, without sockets: ``ProxyConnection`` + ``EngineHooks`` + the audit
recorder (journal on, fsync batch), fed the bytes of a pgbench ``-S`` exchange.

    .venv/bin/python benchmarks/proxy_sansio.py [--dsn postgresql://postgres@127.0.0.1:55432/postgres]

The live benchmark (benchmarks/proxy.py) mixes this cost with the event loop, the kernel and whatever else
the shared machine runs; this one isolates the proxy's per-statement Python, repeatably enough to compare
two trees (run it with ``PYTHONPATH=<other checkout>/src`` for the other one). It needs a PostgreSQL only to
start the runtime (catalog): it creates a small database ``pgwarden_sansio`` there and drops it at the end.

Prints, per statement (min over rounds): the full path, and as its baseline what a proxy that reads only
message headers must do with the same bytes (``FrameReader`` on the client side, ``scan`` on the replies),
with the ratio of the two. A second figure uses a text seen before (verdict cache hit) instead of new
literals each time; a third, pgbench's prepared protocol (Bind · Execute · Sync of a statement parsed once).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgwarden.engine.config import load_config
from pgwarden.engine.principal import Channel, Principal
from pgwarden.engine.runtime import Runtime
from pgwarden.engine.session import Session
from pgwarden.wire_proxy import FrameReader, scan
from pgwarden.wire_proxy.connection import ProxyConnection
from pgwarden.wire_proxy.server import EngineHooks

DB = "pgwarden_sansio"
ROUNDS = 15
PER_ROUND = 4000


def _frame(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def _query(sql: str) -> bytes:
    return _frame(b"Q", sql.encode() + b"\0")


def _config(work: Path, dsn: str) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    (work / "pub.pem").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    config = {
        "version": 1,
        "targets": {"main": {"dsn": dsn, "search_path": ["public"]}},
        "identity": {"issuer": "https://bench", "audience": "pgwarden", "public_key_file": str(work / "pub.pem"),
                     "algorithms": ["ES256"]},
        "rules": [{"name": "bench", "match": {"groups": ["bench"]}, "target": "main",
                   "statements": {"allow": ["read"]}, "schemas": {"allow": ["public"]}}],
        "audit": {"journal_dir": str(work / "journal"), "fsync": "batch"},
        "approvals": {"store": {"sqlite": {"path": str(work / "a.db")}}},
        "proxy": {"listen": "127.0.0.1:0"},
    }
    path = work / "pgwarden.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _best(step, texts: list[bytes]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for i in range(PER_ROUND):
            step(texts[i % len(texts)])
        best = min(best, time.process_time() - started)
    return best / PER_ROUND * 1e6


async def _measure(config: Path, dsn: str) -> None:
    runtime = await Runtime.start(load_config(config))
    try:
        session = Session(runtime.gateway, Principal(subject="bench", groups=frozenset({"bench"})), "main",
                          Channel.WIRE)
        audit = runtime.recorder.start_session("bench", ("bench",), "wire", "main", "127.0.0.1", "token")
        hooks = EngineHooks(runtime, session, audit, digest=True)
        conn = ProxyConnection(hooks, status=b"I", max_message_size=1 << 26)
        with psycopg.connect(dsn) as c:
            oid = c.execute("SELECT 'pgbench_accounts'::regclass::oid").fetchone()[0]
        # what PostgreSQL answers to the statement: RowDescription, one DataRow, CommandComplete, ReadyForQuery
        reply = (_frame(b"T", struct.pack("!H", 1) + b"abalance\0" + struct.pack("!IhIhih", oid, 3, 23, 4, -1, 0))
                 + _frame(b"D", struct.pack("!HI", 1, 1) + b"0") + _frame(b"C", b"SELECT 1\0") + _frame(b"Z", b"I"))
        rng = random.Random(7)
        fresh = [_query(f"SELECT abalance FROM pgbench_accounts WHERE aid = {rng.randint(1, 100000)};")
                 for _ in range(PER_ROUND)]
        same = [_query("SELECT abalance FROM pgbench_accounts WHERE aid = 4242;")]

        def through_proxy(answer: bytes):
            """One exchange through ProxyConnection: the client's bytes in, ``answer`` as the server's."""
            def step(data: bytes) -> None:
                conn.client_data(data)
                conn.to_upstream.clear()
                conn.upstream_data(answer)
                conn.to_client.clear()
            return step

        frames = FrameReader(1 << 26)
        buf = bytearray()

        def headers_of(answer: bytes):
            """The baseline for the same exchange: only message headers read, on both sides."""
            def step(data: bytes) -> None:
                frames.feed(data)
                while frames.next_frame() is not None:
                    pass
                buf.extend(answer)
                _spans, consumed = scan(buf)
                del buf[:consumed]
            return step

        proxied, headers_only = through_proxy(reply), headers_of(reply)

        for text in fresh[:500]:
            proxied(text)  # warm the caches the way a running proxy has them
        base = _best(headers_only, fresh)
        new_literals = _best(proxied, fresh)
        cached = _best(proxied, same)

        # pgbench -M prepared: Parse once, then Bind (one text parameter) · Execute · Sync per statement
        conn.client_data(_frame(b"P", b"P0_1\0SELECT abalance FROM pgbench_accounts WHERE aid = $1;\0"
                                + struct.pack("!H", 0)) + _frame(b"D", b"SP0_1\0") + _frame(b"S", b""))
        conn.to_upstream.clear()
        row_desc = reply[:1 + struct.unpack("!I", reply[1:5])[0]]
        conn.upstream_data(_frame(b"1", b"") + _frame(b"t", struct.pack("!HI", 1, 23)) + row_desc
                           + _frame(b"Z", b"I"))
        conn.to_client.clear()
        row_reply = _frame(b"2", b"") + reply[len(row_desc):]  # BindComplete, DataRow, tag, ReadyForQuery

        def bound(aid: bytes) -> bytes:
            return (_frame(b"B", b"\0P0_1\0" + struct.pack("!HHI", 0, 1, len(aid)) + aid + struct.pack("!H", 0))
                    + _frame(b"E", b"\0" + struct.pack("!I", 0)) + _frame(b"S", b""))

        executions = [bound(str(rng.randint(1, 100000)).encode()) for _ in range(PER_ROUND)]

        prepared, prepared_headers = through_proxy(row_reply), headers_of(row_reply)

        for data in executions[:500]:
            prepared(data)
        prepared_base = _best(prepared_headers, executions)
        prepared_full = _best(prepared, executions)
        print(f"wire proxy, one pgbench -S statement (CPU per statement, min of {ROUNDS} rounds of {PER_ROUND})")
        print(f"  headers only (baseline)         {base:8.1f} µs")
        print(f"  full path, new literals         {new_literals:8.1f} µs   {new_literals / base:6.1f}x baseline")
        print(f"  full path, the same text        {cached:8.1f} µs   {cached / base:6.1f}x baseline")
        print(f"  prepared: headers only          {prepared_base:8.1f} µs")
        print(f"  prepared: Bind/Execute/Sync     {prepared_full:8.1f} µs   {prepared_full / prepared_base:6.1f}x "
              "baseline")
        audit.end()
    finally:
        await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:55432/postgres")
    args = parser.parse_args()
    info = conninfo_to_dict(args.dsn)
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    dsn = make_conninfo(args.dsn, dbname=DB)
    work = Path(tempfile.mkdtemp(prefix="pgwarden-sansio-"))
    try:
        subprocess.run([shutil.which("pgbench") or "/usr/bin/pgbench", "-h", info.get("host", "127.0.0.1"),
                        "-p", str(info.get("port", 5432)), "-U", info.get("user", "postgres"), "-i", "-q", "-s", "1",
                        DB], check=True, capture_output=True)
        asyncio.run(_measure(_config(work, dsn), dsn))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


if __name__ == "__main__":
    main()
