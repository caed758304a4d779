"""Upstream, in one place: pinned connections to a target, pooled, verified, cancellable, streamed.

What a connection pins comes from the verdict's :class:`~pgwarden.policy.verdict.PinnedSettings`
and the target, nowhere else. :func:`startup_parameters` turns them into the parameters of the
start-up packet — the only place a client's ``RESET`` cannot undo — so both doors pin the same
thing: the psycopg door through a libpq conninfo, the wire proxy by writing them into its own
StartupMessage. Besides the policy's pins (``default_transaction_read_only``, timeouts,
``search_path``, the rule's role), every connection pins how the server *reads text*:
``client_encoding=UTF8``, ``standard_conforming_strings=on`` and ``backslash_quote=off``. The
analysis parsed the text as UTF-8 with standard strings; a database or role configured otherwise
(``ALTER DATABASE … SET standard_conforming_strings = off``, a ``GBK`` client encoding in which a
``\\`` can end a character) would make the server see other statements inside what the gateway
judged a harmless literal. Start-up parameters outrank database and role settings, and
:func:`verify_text_semantics` checks the server's ParameterStatus afterwards, refusing a
connection that does not agree.

:class:`Upstream` keeps one ``psycopg_pool.AsyncConnectionPool`` per (target, login, role,
read-only): connections are opened in the background and reused, so a tool call does not pay
for a connection on its hot path. A returned connection is reset (rollback, ``RESET ALL``,
prepared statements, cursors, listeners, advisory locks and temp tables dropped) before anyone
else gets it. :func:`execute` runs one text over a borrowed connection in libpq's chunked-rows
mode and yields its results as events, so a caller holds at most one chunk of rows at a time
whatever the size of the result, and can stop reading (``max_rows``) without buffering the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.generators import fetch
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from pgwarden.errors import UnavailableError
from pgwarden.policy.verdict import PinnedSettings

from .config import Target

__all__ = [
    "CHUNK_ROWS",
    "TEXT_SEMANTICS",
    "Command",
    "CopyOutData",
    "CopyOutStart",
    "Login",
    "ResultEnd",
    "ResultStart",
    "Rows",
    "ServerError",
    "Upstream",
    "UpstreamUnavailable",
    "execute",
    "startup_parameters",
    "verify_text_semantics",
]

# How the server must read text for the analysis to hold (see the module docstring).
TEXT_SEMANTICS: Mapping[str, str] = {
    "client_encoding": "UTF8",
    "standard_conforming_strings": "on",
    "backslash_quote": "off",
}
CHUNK_ROWS = 256  # rows per libpq chunk: big enough to amortise, small enough to keep memory flat
IDLE_IN_TRANSACTION_MS = 60_000


class UpstreamUnavailable(UnavailableError):
    """The target cannot be reached, refused the gateway's login, or read text another way."""


@dataclass(frozen=True, slots=True)
class Login:
    """Who the gateway logs in as: the target's own user, or a rule's least-privilege login."""

    user: str | None = None
    password: str | None = None


def _quote_ident(name: str) -> str:
    if name.replace("_", "").isalnum() and name == name.lower() and not name[0].isdigit():
        return name
    return '"' + name.replace('"', '""') + '"'


def _options_value(value: str) -> str:
    # libpq's options: spaces separate arguments, backslash escapes them.
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def pinned_gucs(settings: PinnedSettings) -> dict[str, str]:
    """The settings a connection for ``settings`` pins, as GUC name → value."""
    gucs = {
        "search_path": ",".join(_quote_ident(s) for s in settings.search_path),
        "statement_timeout": str(settings.statement_timeout_ms),
        "lock_timeout": str(settings.lock_timeout_ms),
        "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS),
        "standard_conforming_strings": TEXT_SEMANTICS["standard_conforming_strings"],
        "backslash_quote": TEXT_SEMANTICS["backslash_quote"],
    }
    if settings.role:
        gucs["role"] = settings.role
    if settings.read_only:
        gucs["default_transaction_read_only"] = "on"
    return gucs


def startup_parameters(settings: PinnedSettings, *, application_name: str | None = None) -> dict[str, str]:
    """Start-up packet parameters (besides user/database) pinning ``settings``.

    ``options`` carries the GUCs as ``-c name=value`` so that ``RESET`` returns to them;
    ``client_encoding`` and ``application_name`` are start-up parameters of their own.
    """
    options = " ".join(f"-c {name}={_options_value(value)}" for name, value in pinned_gucs(settings).items())
    return {
        "client_encoding": TEXT_SEMANTICS["client_encoding"],
        "application_name": _truncate_name(application_name or settings.application_name),
        "options": options,
    }


def _truncate_name(name: str) -> str:
    # PostgreSQL cuts application_name at 63 bytes; cut it ourselves at a character boundary.
    return name.encode()[:63].decode(errors="ignore")


def conninfo(target: Target, settings: PinnedSettings, login: Login | None = None, *,
             application_name: str | None = None) -> str:
    """A libpq conninfo string for ``target`` pinned to ``settings``."""
    params: dict[str, Any] = dict(startup_parameters(settings, application_name=application_name))
    params["connect_timeout"] = max(1, target.connect_timeout // 1000)
    existing = conninfo_to_dict(target.dsn).get("options")
    if existing:
        # The target's own options come first: ours, later on the command line, win.
        params["options"] = f"{existing} {params['options']}"
    if login is not None:
        if login.user:
            params["user"] = login.user
        if login.password is not None:
            params["password"] = login.password
    return make_conninfo(target.dsn, **params)


def verify_text_semantics(conn: psycopg.AsyncConnection | psycopg.Connection) -> None:
    """Refuse a connection whose server does not read text as the analysis did."""
    for name, expected in (("client_encoding", "UTF8"), ("standard_conforming_strings", "on")):
        actual = conn.info.parameter_status(name)
        if actual != expected:
            raise UpstreamUnavailable(
                "upstream_text_semantics",
                f"the target reports {name}={actual!r} where the gateway pinned {expected!r}; it would read "
                "statements differently from the gateway's analysis, so it is not used. Ask its administrator "
                f"to remove the override of {name} (ALTER ROLE/DATABASE … RESET {name})")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- pools ------------------------------------------------------------------------------------------


_RESET = (b"RESET ALL; CLOSE ALL; DEALLOCATE ALL; UNLISTEN *; SELECT pg_catalog.pg_advisory_unlock_all(); "
          b"DISCARD TEMP; DISCARD SEQUENCES")


async def _configure(conn: psycopg.AsyncConnection) -> None:
    verify_text_semantics(conn)


async def _reset(conn: psycopg.AsyncConnection) -> None:
    # Whatever the last borrower left behind is gone before the next one gets the connection.
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        await conn.rollback()
    # application_name survives the reset (in the same round trip): the next borrower is most often the
    # same principal, whose borrow then needs no set_config of its own (`_set_application_name` checks
    # the reported value on every borrow and corrects it for anyone else).
    name = conn.info.parameter_status("application_name")
    keep = b""
    if name and name != "pgwarden":
        keep = b"; SELECT pg_catalog.set_config('application_name', " + \
            sql.Literal(name).as_bytes(conn) + b", false)"
    await conn.execute(_RESET + keep)


class Upstream:
    """Connection pools per (target, login, role, read-only) for one gateway."""

    def __init__(self, *, min_size: int = 1, max_size: int = 16, timeout_s: float = 10.0) -> None:
        self._pools: dict[tuple, AsyncConnectionPool] = {}
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.min_size = min_size
        self.max_size = max_size
        self.timeout_s = timeout_s

    async def pool(self, target_name: str, target: Target, settings: PinnedSettings,
                   login: Login | None = None) -> AsyncConnectionPool:
        # application_name names the principal; it is set per borrow (see `connection`), not per pool.
        # Pools belong to the event loop that opened them (a CLI or a test may run several loops in
        # turn); the loop itself is kept, not its id, which a later loop may reuse.
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._pools = {}  # a finished loop's pools cannot be used (or closed) from this one
            self._lock = asyncio.Lock()
            self._loop = loop
        key = (target_name, target.dsn, login, settings.role, settings.read_only, settings.statement_timeout_ms,
               settings.lock_timeout_ms, settings.search_path)
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        async with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = AsyncConnectionPool(
                    conninfo(target, settings, login, application_name="pgwarden"),
                    kwargs={"autocommit": True}, min_size=self.min_size, max_size=self.max_size,
                    open=False, configure=_configure, reset=_reset, timeout=self.timeout_s,
                    name=f"pgwarden:{target_name}:{settings.role or '-'}:{'ro' if settings.read_only else 'rw'}",
                    reconnect_timeout=30.0)
                await pool.open(wait=False)
                self._pools[key] = pool
        return pool

    @contextlib.asynccontextmanager
    async def connection(self, target_name: str, target: Target, settings: PinnedSettings,
                         login: Login | None = None) -> AsyncIterator[psycopg.AsyncConnection]:
        """Borrow a pinned connection; it is reset and returned when the block ends."""
        pool = await self.pool(target_name, target, settings, login)
        try:
            async with pool.connection() as conn:
                await _set_application_name(conn, settings.application_name)
                yield conn
        except PoolTimeout:
            raise UpstreamUnavailable(
                "upstream_unavailable",
                f"could not get a connection to target {target_name!r} within {self.timeout_s:g} s; the target "
                "may be down or refusing the gateway's login. Try again later") from None
        except psycopg.OperationalError as exc:
            if not _is_connection_error(exc):
                raise
            raise UpstreamUnavailable(
                "upstream_unavailable",
                f"the connection to target {target_name!r} failed: {first_line(exc)}; try again") from None

    async def close(self) -> None:
        if self._loop is not asyncio.get_running_loop():
            self._pools = {}
            return
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close(timeout=5.0)


def _is_connection_error(exc: psycopg.Error) -> bool:
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


async def _set_application_name(conn: psycopg.AsyncConnection, name: str) -> None:
    name = _truncate_name(name)
    if conn.info.parameter_status("application_name") != name:
        await conn.execute(b"SELECT pg_catalog.set_config('application_name', %s, false)", (name,))


async def connect(target: Target, settings: PinnedSettings, login: Login | None = None, *,
                  target_name: str = "target", application_name: str | None = None) -> psycopg.AsyncConnection:
    """One unpooled pinned connection (for a statement released by an approver, or tools)."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            conninfo(target, settings, login, application_name=application_name), autocommit=True)
    except psycopg.Error as exc:
        raise UpstreamUnavailable("upstream_unavailable",
                                  f"could not connect to target {target_name!r}: {first_line(exc)}") from None
    try:
        verify_text_semantics(conn)
    except UpstreamUnavailable:
        await conn.close()
        raise
    return conn


# -- executing a text ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """One column of a result, as RowDescription describes it."""

    name: str
    type_oid: int
    table_oid: int
    attnum: int
    format: int = 0


@dataclass(frozen=True, slots=True)
class ResultStart:
    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class Rows:
    rows: list[list[bytes | None]]


@dataclass(frozen=True, slots=True)
class ResultEnd:
    status: str  # command status, e.g. "SELECT 3"


@dataclass(frozen=True, slots=True)
class Command:
    status: str  # a statement without rows: "UPDATE 1", "SET", "BEGIN"…


@dataclass(frozen=True, slots=True)
class CopyOutStart:
    format: int


@dataclass(frozen=True, slots=True)
class CopyOutData:
    data: bytes


@dataclass(frozen=True, slots=True)
class ServerError:
    """PostgreSQL raised an error; the text after it did not run."""

    diag: psycopg.errors.Diagnostic
    sqlstate: str


def _fields(res: pq.abc.PGresult) -> tuple[Field, ...]:
    return tuple(
        Field((res.fname(i) or b"").decode(errors="replace"), res.ftype(i), res.ftable(i), res.ftablecol(i),
              res.fformat(i))
        for i in range(res.nfields))


def _rows(res: pq.abc.PGresult) -> list[list[bytes | None]]:
    width = res.nfields
    get = res.get_value
    return [[get(r, c) for c in range(width)] for r in range(res.ntuples)]


async def execute(conn: psycopg.AsyncConnection, text: bytes, *, params: Sequence[bytes | None] | None = None,
                  param_types: Sequence[int] = ()) -> AsyncIterator[object]:
    """Run ``text`` and yield its results as events.

    Without ``params`` it is a simple query (one or more statements); with them, one statement
    with ``$n`` parameters in text form (``param_types``: their type OIDs, 0 or missing for unknown).

    Rows arrive in chunks of at most :data:`CHUNK_ROWS`. A caller that stops iterating early
    leaves the connection busy: it must :func:`cancel_and_drain` it (``Session`` does).
    Values are PostgreSQL's text form, as bytes, or None for NULL.
    """
    pgconn = conn.pgconn
    async with conn.lock:
        if params is None:
            pgconn.send_query(text)
        else:
            types = [*param_types[:len(params)], *[0] * (len(params) - len(param_types))] if param_types else None
            pgconn.send_query_params(text, list(params), types)
        if not pgconn.set_chunked_rows_mode(CHUNK_ROWS):  # pragma: no cover - libpq < 17
            pgconn.set_single_row_mode()
        started = False
        while True:
            res = await conn.wait(fetch(pgconn))
            if res is None:
                return
            status = res.status
            if status == pq.ExecStatus.TUPLES_CHUNK or status == pq.ExecStatus.SINGLE_TUPLE:
                if not started:
                    started = True
                    yield ResultStart(_fields(res))
                yield Rows(_rows(res))
            elif status == pq.ExecStatus.TUPLES_OK:
                if not started:
                    yield ResultStart(_fields(res))
                started = False
                yield ResultEnd((res.command_status or b"").decode(errors="replace"))
            elif status == pq.ExecStatus.COMMAND_OK or status == pq.ExecStatus.EMPTY_QUERY:
                yield Command((res.command_status or b"").decode(errors="replace"))
            elif status == pq.ExecStatus.COPY_OUT:
                yield CopyOutStart(res.binary_tuples)
                while (data := await conn.wait(_copy_chunk(pgconn))) is not None:
                    yield CopyOutData(data)
                # The COPY's own result (COMMAND_OK "COPY n") follows through fetch().
            elif status == pq.ExecStatus.COPY_IN:
                # Never expected: the policy refuses COPY FROM STDIN on this path. End it cleanly.
                pgconn.put_copy_end(b"COPY FROM STDIN is not carried by this door")
            elif status == pq.ExecStatus.FATAL_ERROR:
                diag = psycopg.errors.Diagnostic(res)
                yield ServerError(diag, diag.sqlstate or "XX000")
            # NONFATAL_ERROR (notices) arrive through the notice handler, not here.


def _copy_chunk(pgconn: pq.abc.PGconn):
    """One COPY OUT row (bytes), or None at its end; a generator in psycopg's waiting protocol."""
    from psycopg.waiting import Wait

    while True:
        nbytes, data = pgconn.get_copy_data(1)
        if nbytes > 0:
            return bytes(data)
        if nbytes < 0:
            return None
        while not (yield Wait.R):
            continue
        pgconn.consume_input()


async def cancel_and_drain(conn: psycopg.AsyncConnection) -> None:
    """Stop the running text (its remaining rows are not wanted) and make the connection idle again."""
    pgconn = conn.pgconn
    if pgconn.transaction_status != pq.TransactionStatus.ACTIVE:
        return
    with contextlib.suppress(Exception):
        await conn.cancel_safe(timeout=5.0)
    with contextlib.suppress(Exception):
        while (res := await conn.wait(fetch(pgconn))) is not None:
            if res.status == pq.ExecStatus.COPY_OUT:
                while await conn.wait(_copy_chunk(pgconn)) is not None:
                    pass
