"""A running wire proxy for tests: the engine and ProxyServer on an event loop in a background thread, a
key pair for tokens, and DSNs for clients (psql, psycopg, asyncpg, pgbench)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from psycopg.conninfo import conninfo_to_dict

from pgwarden.engine.config import parse_config
from pgwarden.engine.runtime import Runtime
from pgwarden.wire_proxy.server import ProxyServer

REPO = Path(__file__).resolve().parents[2]
ISSUER = "https://id.example.test"
AUDIENCE = "pgwarden"


class Keys:
    def __init__(self, directory: Path) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.public_file = directory / "public.pem"
        self.public_file.write_bytes(self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def token(self, sub: str = "agent", groups: tuple[str, ...] = ("ai-agents",), **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600, "groups": list(groups)}
        body.update(claims)
        return jwt.encode(body, self.private, algorithm="ES256")


def config_data(dsn: str, directory: Path, keys: Keys, *, policy: str = "public_cases.yaml",
                proxy: dict | None = None, audit: dict | None = None) -> dict:
    data = yaml.safe_load((REPO / "examples" / policy).read_text())
    data["targets"]["main"]["dsn"] = dsn
    data["targets"]["main"].pop("password", None)
    data["identity"] = {"issuer": ISSUER, "audience": AUDIENCE, "public_key_file": str(keys.public_file),
                        "algorithms": ["ES256"]}
    data["proxy"] = {"listen": "127.0.0.1:0", **(proxy or {})}
    data["audit"] = {"journal_dir": str(directory / "journal"), **(audit or {})}
    data["approvals"] = {"store": {"sqlite": {"path": str(directory / "approvals.db")}}, "poll_interval": 50}
    return data


class RunningProxy:
    """The proxy on its own loop in a thread; ``dsn(token)`` for clients."""

    def __init__(self, data: dict, directory: Path, *, digest: bool = True) -> None:
        self.config = parse_config(yaml.safe_dump(data), "test", base_dir=REPO / "examples")
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.runtime: Runtime | None = None
        self.server: ProxyServer | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._digest = digest
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("proxy did not start")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.runtime = await Runtime.start(self.config)
            self.server = ProxyServer(self.runtime, digest=self._digest)
            await self.server.start()

        try:
            self.loop.run_until_complete(start())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def call(self, coro, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def dsn(self, token: str, user: str = "agent", target: str = "main", **extra: str) -> str:
        parts = {"host": "127.0.0.1", "port": str(self.port), "dbname": target, "user": user, "password": token,
                 "sslmode": "disable", **extra}
        return " ".join(f"{k}={_q(v)}" for k, v in parts.items())

    def url(self, token: str, user: str = "agent", target: str = "main") -> str:
        return f"postgresql://{user}:{token}@127.0.0.1:{self.port}/{target}"

    def close(self) -> None:
        async def stop() -> None:
            if self.server is not None:
                await self.server.close()
            if self.runtime is not None:
                await self.runtime.close()

        try:
            self.call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


def _q(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def admin_params(dsn: str) -> dict:
    return conninfo_to_dict(dsn)


class RawClient:
    """A protocol-level client over a plain socket: every byte the proxy sends is kept."""

    def __init__(self, port: int, token: str, user: str = "agent", database: str = "main",
                 params: dict | None = None, minor: int = 0, timeout: float = 20) -> None:
        import socket

        from pgwarden.wire_proxy import FrameReader, StartupMessage, encode

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.received = bytearray()
        self.frames = FrameReader(1 << 30)
        startup = {"user": user, "database": database, **(params or {})}
        self.sock.sendall(encode(StartupMessage(startup, 3, minor)))
        self.startup = self.read_until({ord("R")})
        if self.startup[-1][0] == ord("R") and self.startup[-1][1][:4] == b"\0\0\0\x03":
            from pgwarden.wire_proxy import PasswordMessage

            self.sock.sendall(encode(PasswordMessage(token.encode() + b"\0")))
            self.startup += self.read_until({ord("Z")})

    def read_until(self, kinds: set[int], fatal_ends: bool = True) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        while True:
            for frame in self.frames:
                out.append((frame.type, frame.payload))
                if frame.type in kinds or (fatal_ends and frame.type == ord("E") and b"SFATAL" in frame.payload):
                    # keep what follows for the next read
                    return out
            data = self.sock.recv(1 << 16)
            if not data:
                return out
            self.received += data
            self.frames.feed(data)

    def send(self, *msgs) -> None:
        from pgwarden.wire_proxy import encode

        self.sock.sendall(b"".join(encode(x) for x in msgs))

    def query(self, sql: str) -> list[tuple[int, bytes]]:
        from pgwarden.wire_proxy import Query

        self.send(Query(sql))
        return self.read_until({ord("Z")})

    def extended(self, sql: str, params: tuple = ()) -> list[tuple[int, bytes]]:
        from pgwarden.wire_proxy import Bind, Describe, Execute, Parse, Sync

        self.send(Parse("", sql), Bind("", "", (), params, ()), Describe("P", ""), Execute("", 0), Sync())
        return self.read_until({ord("Z")})

    def close(self) -> None:
        with __import__("contextlib").suppress(OSError):
            self.sock.close()


def journal_records(journal_dir: Path) -> list[dict]:
    """Every complete record of a journal a running gateway may be appending to: a line still being
    written (no newline yet) is left for the next read."""
    import json

    out = []
    for f in sorted(Path(journal_dir).glob("journal-*.jsonl")):
        *lines, _tail = f.read_bytes().split(b"\n")
        out.extend(json.loads(line) for line in lines if line)
    return out


# ---- reading raw replies (RawClient frames: (type, payload)) ------------------------------------------------


def sync(c: RawClient, *msgs) -> list[tuple[int, bytes]]:
    """Send ``msgs`` and a Sync; the replies up to its ReadyForQuery."""
    from pgwarden.wire_proxy import Sync

    c.send(*msgs, Sync())
    return c.read_until({ord("Z")})


def frame_rows(frames) -> list[bytes]:
    """The DataRow payloads."""
    return [bytes(b) for k, b in frames if k == ord("D")]


def frame_errors(frames) -> list[str]:
    """The ErrorResponse payloads, as text (fields separated by NUL)."""
    return [bytes(b).decode("utf-8", "replace") for k, b in frames if k == ord("E")]


def frame_codes(frames) -> list[str]:
    """The SQLSTATE of each ErrorResponse."""
    return [f[1:] for e in frame_errors(frames) for f in e.split("\0") if f.startswith("C")]


def frame_ready(frames) -> list[bytes]:
    """The status byte of each ReadyForQuery."""
    return [bytes(b) for k, b in frames if k == ord("Z")]


def outcome(proxy: RunningProxy, token: str, sql: str, *, user: str) -> str:
    """``sql`` through the proxy as ``user`` (psycopg, autocommit): ``"ok"``, or the error's SQLSTATE."""
    import psycopg

    with psycopg.connect(proxy.dsn(token, user=user), autocommit=True) as conn:
        try:
            conn.execute(sql.encode())
        except psycopg.Error as exc:
            return exc.diag.sqlstate or "?"
        return "ok"
