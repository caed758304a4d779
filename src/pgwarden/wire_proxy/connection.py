"""One proxied session after authentication, as a sans-IO state machine: client bytes in, upstream bytes
out; upstream bytes in, client bytes out. No sockets, no awaits: the asyncio server feeds it and drains
:attr:`ProxyConnection.to_upstream` / :attr:`ProxyConnection.to_client` after every call.

Client side. Every frame is framed by :class:`FrameReader` (size cap, known types). A simple ``Query`` and
every ``Parse`` is decided by the engine (:class:`Engine`, the policy hooks): denied → the refusal goes
through :class:`ReplyQueue.refuse`, so a pipeline sees exactly what PostgreSQL would have answered; allowed
→ the verdict's upstream text (masks spliced in) is sent. Named and unnamed statements and portals are
tracked with their verdict; ``Bind`` refuses binary formats on columns that need screening, but for the
types whose binary form the screen reads (text types, json/jsonb, int8, numeric); a statement
whose result shape is unknown at ``Bind`` gets an injected ``Describe`` of its portal (its reply is read,
then dropped). ``FunctionCall`` is refused. A statement that needs approval stops the client side
(:attr:`ProxyConnection.held`) until the server resolves it with :meth:`ProxyConnection.finish_hold`.

Upstream side. :func:`scan` finds message boundaries without copying; each message is paired with the
frontend message it answers through the reply queue and a parallel queue of contexts. RowDescription is
confirmed against the plan (:class:`~pgwarden.policy.results.ResultScreen`); on the ``passthrough`` path
DataRows are forwarded as they came, in runs of bytes, reading only their headers; otherwise each row is
screened. Errors and notices are screened field by field. A result that contradicts the plan, binary COPY
of data that needs screening, or a journal write that fails, turns into an ErrorResponse, and everything
up to the next ReadyForQuery is withheld (nothing unscreened leaves). The audit record of a statement is
closed — written to the journal — before its CommandComplete is released.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pgwarden.policy.effects import ALL as ALL_NAMES
from pgwarden.policy.results import (
    ColumnInfo,
    ResultScreen,
    ResultShapeMismatch,
    ValueWithheld,
    diagnostic_withheld,
)
from pgwarden.policy.verdict import Decision, StatementPlan, Verdict

from . import messages as m
from ._hold import Collecting, HoldRefused, extended_replies
from ._params import text_forms
from ._queue import ReplyQueue
from .codec import (
    DEFAULT_MAX_MESSAGE_SIZE,
    FRONTEND_TYPES,
    FrameReader,
    decode_backend,
    decode_frontend,
    encode,
)
from .codec import scan as _scan
from .errors import ProtocolViolation

__all__ = ["Engine", "Hold", "ProxyConnection", "Record"]

_HEADER = struct.Struct("!BI")
_I16 = struct.Struct("!h").unpack_from
_I32 = struct.Struct("!i").unpack_from
_SCREEN_CACHE = 256  # screens kept per session, by (plan, RowDescription bytes)
_Q, _P, _B, _D, _E, _C, _S, _H, _F, _X = (ord(c) for c in "QPBDECSHFX")
_COPY_CLIENT = frozenset(ord(c) for c in "dcf")
_ROW, _ROWDESC, _DONE, _ERROR, _NOTICE, _READY = (ord(c) for c in "DTCENZ")
_NODATA, _EMPTY, _SUSPENDED, _COPY_OUT, _COPY_DATA, _COPY_BOTH = (ord(c) for c in "nIsHdW")
_PARAM_STATUS = ord("S")
_PARAM_DESC = ord("t")


class Record(Protocol):
    """One statement's audit record (the server wraps the recorder's ``statement`` block)."""

    def result(self, columns: Sequence[str], sample: Sequence[Sequence[str | None]], row_count: int,
               digest: Any) -> None: ...

    def error(self, sqlstate: str, message: str) -> None: ...

    def parameters(self, values: Sequence[str | None], *, opaque: bool = False, truncated: bool = False) -> None:
        """The values bound to the statement (Bind), in text form (``_params.text_forms``)."""

    def close(self) -> str | None:
        """Write the record; returns a message when the journal refused it (the result is then withheld)."""


class Engine(Protocol):
    """The policy hooks a connection calls; the server implements them over the engine's Session."""

    detector: Any
    sample_rows: int
    digest: bool
    wrap_reads: bool  # the rule may write: run read-only texts in READ ONLY transactions (see _wraps)

    def decide(self, sql: str) -> Verdict: ...

    def refusal(self, verdict: Verdict) -> m.ErrorResponse: ...

    def screen(self, plan: StatementPlan | None, columns: Sequence[ColumnInfo]) -> ResultScreen: ...

    def screen_fields(self, fields: Mapping[str, str], *, scrub: bool, what: str) -> dict[str, str]: ...

    def apply_effects(self, verdict: Verdict, completed: int) -> None: ...

    def open_record(self, sql: str, verdict: Verdict) -> Record: ...

    def new_digest(self, columns: Sequence[str]) -> Any: ...


@dataclass
class Hold:
    """A statement the policy holds for a human; the server waits and answers with finish_hold.

    A simple Query, or an extended-protocol one-shot statement (``extended``: what was collected up to
    Sync, see _hold.py) with its ``parameters`` in text form.
    """

    sql: str
    verdict: Verdict
    parameters: tuple[str | None, ...] | None = None
    param_types: tuple[int, ...] = ()
    extended: Collecting | None = None


@dataclass
class _Stmt:
    sql: str
    verdict: Verdict
    plan: StatementPlan | None
    columns: tuple[m.FieldDescription, ...] | None = None  # None: not described yet; (): NoData
    screens: dict[tuple[int, ...], ResultScreen] = field(default_factory=dict)
    # (catalog generation, a portal's RowDescription bytes) → its screen and the renamed description to send
    described: dict[tuple[int, bytes], tuple[ResultScreen, bytes | None]] = field(default_factory=dict)
    # a parameter declared of a user type (OID past FirstNormalObjectId): a domain's CHECK may run a user
    # function on it at Bind, which the analysis of the text cannot see
    user_types: bool = False
    # the parameter OIDs: as declared in Parse (0: left to the server), then as the server described them
    param_types: tuple[int, ...] = ()


@dataclass
class _Portal:
    stmt: _Stmt
    formats: tuple[int, ...]
    screen: ResultScreen | None = None
    described: bool = False  # its result shape is known (screen None then means: no rows)
    returned: int = 0  # rows sent to the client, over all its Executes (max_rows counts per portal)
    cut_told: bool = False  # the client was told (on a PortalSuspended) that this portal's result was cut
    # the session's run count (ProxyConnection._ran) when this portal was last known to be what the proxy
    # thinks it is: bound or described here with nothing run upstream since (see _execute)
    checked: int = -1
    params: tuple[bytes | None, ...] = ()  # the values bound (what the audit record shows)
    param_formats: tuple[int, ...] = ()


class _Tap:
    """What the audit record keeps of one result: columns, a capped sample, the count, the digest."""

    __slots__ = ("columns", "digest", "rows", "sample", "sample_rows", "text")

    def __init__(self, engine: Engine, columns: Sequence[str], text: bool) -> None:
        self.columns = list(columns)
        self.rows = 0
        self.sample: list[list[str | None]] = []
        self.sample_rows = engine.sample_rows
        self.text = text
        self.digest = engine.new_digest(self.columns) if (engine.digest and text) else None

    def add(self, values: Sequence[bytes | None]) -> None:
        self.rows += 1
        if self.digest is None and len(self.sample) >= self.sample_rows:
            return
        row = [None if v is None else (bytes(v).decode("utf-8", "replace") if self.text else "<binary>")
               for v in values]
        if len(self.sample) < self.sample_rows:
            self.sample.append(row)
        if self.digest is not None:
            self.digest.update(row)

    def add_run(self, view: memoryview, rows: Sequence[tuple[int, int, int]]) -> None:
        """``rows``, contiguous DataRow messages of ``view`` the client receives as they came: counted,
        sampled while the sample has room, and digested as raw bytes in one call (digest version 2)."""
        n = len(rows)
        if not n:
            return
        room = self.sample_rows - len(self.sample)
        if room > 0:
            for _, start, end in rows[:room]:
                if self.text:
                    self.sample.append(_text_values(view[start + 5:end]))
                else:
                    self.sample.append([None if v is None else "<binary>"
                                        for v in m.DataRow(bytes(view[start + 5:end])).values()])
        self.rows += n
        if self.digest is not None:
            self.digest.update_wire(view[rows[0][1]:rows[-1][2]], n)

    def add_changed(self, values: Sequence[bytes | None], message: bytes) -> None:
        """One row the screen changed: ``values`` as sent, ``message`` the DataRow that carried them."""
        self.rows += 1
        if len(self.sample) < self.sample_rows:
            self.sample.append([None if v is None else (bytes(v).decode("utf-8", "replace") if self.text
                                                        else "<binary>") for v in values])
        if self.digest is not None:
            self.digest.update_wire(message, 1)


def _text_values(data: bytes | memoryview) -> list[str | None]:
    """The values of a DataRow body as text (UTF-8, invalid bytes replaced), checked as DataRow.values."""
    size = len(data)
    if size < 2:
        raise ProtocolViolation("truncated", "DataRow: no column count")
    (count,) = _I16(data)
    if count < 0:
        raise ProtocolViolation("negative_count", f"DataRow: negative column count {count}")
    out: list[str | None] = []
    append = out.append
    pos = 2
    for _ in range(count):
        if pos + 4 > size:
            raise ProtocolViolation("truncated", "DataRow: column length overruns the message")
        (n,) = _I32(data, pos)
        pos += 4
        if n == -1:
            append(None)
            continue
        if n < 0:
            raise ProtocolViolation("bad_length", f"DataRow: column length {n}")
        if pos + n > size:
            raise ProtocolViolation("truncated", "DataRow: column value overruns the message")
        append(str(data[pos:pos + n], "utf-8", "replace"))
        pos += n
    if pos != size:
        raise ProtocolViolation("trailing_bytes", "DataRow: bytes after the last column")
    return out


class _QueryCtx:
    __slots__ = ("copy", "copy_binary", "copy_skip", "cut_cancel", "cut_cancelled", "failed", "index", "limit",
                 "record", "returned", "screen", "sql", "tap", "verdict", "wrapped")

    def __init__(self, sql: str, verdict: Verdict, record: Record) -> None:
        self.sql = sql
        self.verdict = verdict
        self.record: Record | None = record
        self.index = 0  # the statement of the text whose results arrive now
        self.screen: ResultScreen | None = None
        self.tap: _Tap | None = None
        self.copy = False
        self.copy_binary = False  # the COPY OUT now arriving is binary (its last CopyData is the trailer)
        self.copy_skip = 0  # CopyData messages of this COPY OUT that are not rows (a csv header line)
        self.failed = False
        self.limit = verdict.max_rows  # rows one result may return to the client (the rule's max_rows)
        self.returned = 0  # rows of the current result sent so far
        self.wrapped = False  # sent inside BEGIN READ ONLY … COMMIT the proxy added (see _wraps)
        self.cut_cancel = False  # past max_rows, the statement may be cancelled upstream (see ProxyConnection._cut)
        self.cut_cancelled = False  # … and it was: its 57014 is the end of a cut result

    @property
    def plan(self) -> StatementPlan | None:
        plans = self.verdict.plans
        return plans[self.index] if self.index < len(plans) else None


class _ExecCtx:
    __slots__ = ("limit", "portal", "record", "tap")

    def __init__(self, portal: _Portal, record: Record) -> None:
        self.portal = portal
        self.record: Record | None = record
        self.tap: _Tap | None = None
        self.limit = portal.stmt.verdict.max_rows

    @property
    def plan(self) -> StatementPlan | None:
        return self.portal.stmt.plan


class _Registered:
    """The context of a Parse or Bind: the statement or portal it put under ``name``, and what the name
    held before. PostgreSQL keeps the old one when it refuses or skips the message (a portal name taken
    inside a transaction, an error earlier in the pipeline), so :meth:`undo` puts it back: the proxy's
    screen for a name is always the one for what PostgreSQL runs under it."""

    __slots__ = ("entry", "name", "previous", "table")

    def __init__(self, table: dict, name: str, entry: object, previous: object | None) -> None:
        self.table = table
        self.name = name
        self.entry = entry
        self.previous = previous

    def undo(self) -> None:
        if self.table.get(self.name) is self.entry:
            if self.previous is None:
                del self.table[self.name]
            else:
                self.table[self.name] = self.previous


class _DescCtx:
    __slots__ = ("portal", "stmt", "surface")

    def __init__(self, stmt: _Stmt | None, portal: _Portal | None, surface: bool = False) -> None:
        self.stmt = stmt
        self.portal = portal
        self.surface = surface  # a Describe of the proxy's own whose error the client must see (see _execute)

    @property
    def plan(self) -> StatementPlan | None:
        return (self.stmt or self.portal.stmt).plan if (self.stmt or self.portal) else None  # type: ignore


_IDLE = b"Z\0\0\0\x05I"  # ReadyForQuery, idle
# The empty SELECT takes the transaction's first snapshot, after which PostgreSQL refuses SET TRANSACTION
# READ WRITE ("must be set before any query"): the client's text cannot lift the block it runs in.
_BEGIN_READ_ONLY = b"BEGIN READ ONLY; SELECT"
_SHAPE_AT_RUN_TIME = frozenset({"FETCH", "EXECUTE"})  # statements whose result is another's (see _bind)
_WRAPPED_SYNC = object()  # the context of the Sync of a batch sent inside READ ONLY
_FIRST_NORMAL_OID = 16384  # PostgreSQL's FirstNormalObjectId: OIDs below are built in
_WRAP_COMMIT = object()  # the context of the COMMIT that ends the proxy's READ ONLY block
_BATCHED = frozenset((_P, _B, _D, _E))  # what a batch held back for READ ONLY may hold before its Sync
_BATCH_MAX = 64  # messages held back at most
_TXN_TAGS = frozenset({"BEGIN", "START TRANSACTION", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
                       "PREPARE TRANSACTION", "COMMIT PREPARED", "ROLLBACK PREPARED"})


def _cut_notice(limit: int) -> m.NoticeResponse:
    return m.notice("WARNING", "01000", f"pgwarden: the result was cut at {limit} rows (the rule's max_rows); "
                    "the rest was not sent", hint="add a LIMIT, narrow the query, or page with a cursor (FETCH)")


def _frame(kind: int, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload) + 4) + payload


def _columns(fields: Sequence[m.FieldDescription], formats: Sequence[int] | None = None) -> list[ColumnInfo]:
    out = []
    n = len(fields)
    for i, f in enumerate(fields):
        fmt = f.format
        if formats is not None:
            fmt = formats[0] if len(formats) == 1 else (formats[i] if len(formats) == n else 0)
        out.append(ColumnInfo(f.name, f.type_oid, f.table_oid, f.attnum, fmt))
    return out


def _renamed(desc: m.RowDescription, names: Sequence[str]) -> m.RowDescription | None:
    if all(f.name == n for f, n in zip(desc.fields, names, strict=True)):
        return None
    return m.RowDescription(tuple(
        m.FieldDescription(n, f.table_oid, f.attnum, f.type_oid, f.type_len, f.type_mod, f.format)
        for f, n in zip(desc.fields, names, strict=True)))


# A released statement runs on a connection of its own (HeldStatements.release): inside the client's
# transaction it would commit on its own and survive the client's ROLLBACK, so it is not held there.
_IN_TRANSACTION = m.error("ERROR", "25001", "pgwarden: a statement that needs approval cannot wait inside a "
                          "transaction block: once approved it runs and commits on its own",
                          hint="end the transaction (COMMIT or ROLLBACK) and send it on its own, in autocommit")


class ProxyConnection:
    """The state machine of one authenticated session (see the module docstring)."""

    def __init__(self, engine: Engine, *, status: bytes = b"I",
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.engine = engine
        self.queue = ReplyQueue(status)
        self._ctx: deque[object] = deque()
        self._frames = FrameReader(max_message_size, known_types=FRONTEND_TYPES)
        self._ubuf = bytearray()
        self._stmts: dict[str, _Stmt] = {}
        self._portals: dict[str, _Portal] = {}
        # work sent upstream that could run user code (a Query, a Bind, an Execute, the proxy's own queries, a
        # released approval): a portal can change under its name only while such work runs (a function may
        # CLOSE it and OPEN a cursor of that name); see _execute
        self._ran = 0
        self.to_upstream: list[bytes] = []
        self.to_client: list[bytes] = []
        self._in_block = False  # the messages being handled go inside the proxy's READ ONLY block
        self.held: Hold | None = None
        self._collecting: Collecting | None = None  # an unnamed Parse that needs approval, until Sync
        # an extended-protocol batch held back until its Sync, to be sent inside READ ONLY (see _batch_wraps)
        self._batch: list[tuple[int, bytes]] | None = None
        self._pending: deque[tuple[int, bytes]] = deque()  # frames of a released batch not yet handled
        self.terminated = False
        self.fatal: m.ErrorResponse | None = None  # upstream said FATAL / bookkeeping lost: end the session
        self.want_cancel = False  # the server should cancel what runs upstream (a result is withheld or cut)
        self._withholding = False
        # A statement cut at max_rows is being cancelled upstream: the client's next messages wait until its
        # ReadyForQuery is in and the cancel request has been delivered (so the cancel can never land on
        # them): both flags must clear
        self._cut_pending = False
        self._cut_done = False  # its ReadyForQuery arrived
        self._cut_sent = False  # the cancel was delivered
        # RowDescription bytes → screen, per plan: the same statement shape answered with the same
        # description is confirmed once (a new plan, or a new screen_generation of the engine, misses)
        self._screens: dict[tuple[int, bytes], tuple[Any, int, ResultScreen, bytes | None, bool]] = {}

    # ---- client side -----------------------------------------------------------------------------

    @property
    def cutting(self) -> bool:
        """A statement cut at max_rows waits to be cancelled upstream (see :meth:`cancel_sent`)."""
        return self._cut_pending

    def cancel_sent(self) -> None:
        """The server delivered the cancel :attr:`want_cancel` asked for (or had no key to send it with); the
        client's next messages go once the cut statement's ReadyForQuery is in too."""
        if self._cut_pending:
            self._cut_sent = True
            self._cut_release()

    def _cut_release(self) -> None:
        if self._cut_pending and self._cut_sent and self._cut_done:
            self._cut_pending = self._cut_sent = self._cut_done = False
            self._drain_client()

    @property
    def withholding(self) -> bool:
        """A withheld exchange has not reached its ReadyForQuery yet (its upstream work may still run)."""
        return self._withholding

    @property
    def busy(self) -> bool:
        """Replies are outstanding upstream (a client gone now leaves work to cancel)."""
        return len(self.queue) > 0

    def client_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes from the client; raises ProtocolViolation (FATAL 08P01) on malformed input."""
        self._frames.feed(data)
        self._drain_client()

    def client_eof(self) -> None:
        self._frames.at_eof()

    def _drain_client(self) -> None:
        frames = self._frames
        pending = self._pending
        while self.held is None and not self.terminated and self.fatal is None and not self._cut_pending:
            if pending:
                kind, payload = pending.popleft()
                self._client_frame(kind, payload)
                continue
            frame = frames.next_frame()
            if frame is None:
                return
            kind, payload = frame.type, frame.payload
            batch = self._batch
            if batch is not None:
                batch.append((kind, payload))
                if kind == _S:
                    self._release_batch()
                elif kind not in _BATCHED or len(batch) > _BATCH_MAX:
                    self._release_batch(unwrapped=True)  # not a batch to wrap: as it came, in order
                continue
            if kind in (_P, _B) and self.engine.wrap_reads and self._collecting is None and self.queue.idle:
                self._batch = [(kind, payload)]  # it may be a read to wrap: held back until its Sync
                continue
            self._client_frame(kind, payload)

    def _release_batch(self, unwrapped: bool = False) -> None:
        """Send the batch held back since its first message: inside BEGIN READ ONLY … COMMIT when
        :meth:`_batch_wraps` says so, else message by message as it came."""
        batch, self._batch = self._batch or [], None
        if unwrapped or not self._batch_wraps(batch):
            self._pending.extend(batch)
            return
        self._inject_query(_BEGIN_READ_ONLY)
        self._in_block = True
        try:
            for kind, payload in batch[:-1]:
                self._client_frame(kind, payload)
        finally:
            self._in_block = False
        self._push(_S, _WRAPPED_SYNC, _frame(_S, batch[-1][1]))
        self._inject_query(b"COMMIT", _WRAP_COMMIT)  # in a failed block PostgreSQL answers ROLLBACK, no error
        # Both simple Queries drop the unnamed statement upstream: a later Bind of it is refused here (26000)
        # rather than upstream
        self._stmts.pop("", None)

    def _batch_wraps(self, batch: list[tuple[int, bytes]]) -> bool:
        """An extended-protocol batch (Parse / Bind / Describe / Execute up to Sync) is wrapped like a simple
        Query (:meth:`_wraps`) when every statement it parses or executes is allowed and read-only, none
        controls transactions, and it binds the unnamed statement only after parsing it (the added BEGIN,
        a simple Query, drops an unnamed statement left from before)."""
        parsed: dict[str, Verdict] = {}
        bound: dict[str, str] = {}
        try:
            for kind, payload in batch[:-1]:
                msg = decode_frontend(kind, payload)
                if kind == _P:
                    verdict = self.engine.decide(msg.query)  # type: ignore[union-attr]
                    if verdict.decision is not Decision.ALLOW or not self._wraps(verdict, check_queue=False):
                        return False
                    parsed[msg.name] = verdict  # type: ignore[union-attr]
                elif kind == _B:
                    name = msg.statement  # type: ignore[union-attr]
                    if name not in parsed and (name == "" or name not in self._stmts
                                               or not self._wraps(self._stmts[name].verdict, check_queue=False)):
                        return False
                    bound[msg.portal] = name  # type: ignore[union-attr]
                elif kind == _E and msg.portal not in bound:  # type: ignore[union-attr]
                    return False  # a portal from before this batch
        except ProtocolViolation:
            return False  # handled as it came: the same error, at the same place
        return True

    def _client_frame(self, kind: int, payload: bytes) -> None:
        q = self.queue
        if kind == _X:
            self.terminated = True
            return
        if self._collecting is not None:
            self._collect(kind, payload)
            return
        if kind in _COPY_CLIENT or kind in (_S, _H):
            self._push(kind, None, _frame(kind, payload))
            return
        if q.discarding(kind):
            return  # skip-till-Sync after an error, as PostgreSQL does: unread, unanswered
        msg = decode_frontend(kind, payload)
        if kind == _Q:
            self._query(msg, payload)  # type: ignore[arg-type]
        elif kind == _P:
            self._parse(msg, payload)  # type: ignore[arg-type]
        elif kind == _B:
            self._bind(msg, payload)  # type: ignore[arg-type]
        elif kind == _D:
            self._describe(msg, payload)  # type: ignore[arg-type]
        elif kind == _E:
            self._execute(msg, payload)  # type: ignore[arg-type]
        elif kind == _C:
            close: m.Close = msg  # type: ignore[assignment]
            (self._stmts if close.kind == "S" else self._portals).pop(close.name, None)
            self._push(kind, None, _frame(kind, payload))
        elif kind == _F:
            self._refuse(kind, m.error("ERROR", "42501", "pgwarden: the FunctionCall message is not allowed",
                                       hint="call the function in a SELECT statement instead"))
        else:
            raise ProtocolViolation("unexpected_message", f"message type {chr(kind)!r} is not valid here")

    def _push(self, kind: int, ctx: object, data: bytes | None) -> None:
        q = self.queue
        before = len(q)
        step = q.client_message(kind)
        if len(q) > before:
            self._ctx.append(ctx)
        if step.forward and data is not None:
            self.to_upstream.append(data)
            if kind in (_Q, _E):
                self._ran += 1
        for msg in step.emit:
            self.to_client.append(encode(msg))

    def _refuse(self, kind: int, error: m.ErrorResponse) -> None:
        q = self.queue
        before = len(q)
        step = q.refuse(kind, error)
        for _ in range(len(q) - before):
            self._ctx.append(None)
        for msg in step.inject:
            self.to_upstream.append(encode(msg))
        for msg in step.emit:
            self.to_client.append(encode(msg))

    def _refuse_verdict(self, kind: int, sql: str, verdict: Verdict) -> None:
        error = self.engine.refusal(verdict)
        record = self.engine.open_record(sql, verdict)
        record.error(error.sqlstate or "42501", error.message or "refused")
        record.close()  # a refusal is recorded; a journal failure changes nothing for a refusal
        self._refuse(kind, error)

    def _query(self, msg: m.Query, payload: bytes) -> None:
        sql = msg.sql
        verdict = self.engine.decide(sql)
        if verdict.decision is Decision.NEEDS_APPROVAL:
            if len(self.queue) or self.queue.skipping:
                self._refuse(_Q, m.error("ERROR", "55000", "pgwarden: this statement needs an approval, which "
                                         "cannot be waited for inside a pipeline", hint="send it on its own"))
                return
            if self.queue.status != b"I":
                self._refuse(_Q, _IN_TRANSACTION)
                return
            self.held = Hold(sql, verdict)
            return
        if verdict.decision is not Decision.ALLOW:
            self._refuse_verdict(_Q, sql, verdict)
            return
        wrap = self._wraps(verdict)
        if not wrap and self._must_wrap(verdict):
            self._refuse_unwrapped(_Q, sql, verdict)
            return
        self._forget_names(verdict)
        ctx = _QueryCtx(sql, verdict, self.engine.open_record(sql, verdict))
        # One plain read (StatementPlan.cancel_safe: no user code, nothing its abort would undo), sent with the
        # client idle and nothing in flight: once cut at max_rows it can be cancelled upstream instead of
        # read to its end (a write would be rolled back; a statement among others, or behind others, would
        # take them with it; COPY's client waits for CopyDone)
        ctx.cut_cancel = (ctx.limit is not None and not wrap and len(verdict.plans) == 1 and self.queue.idle
                          and self.queue.status == b"I" and verdict.plans[0].cancel_safe)
        text = verdict.text_for_upstream(sql)
        if wrap:
            ctx.wrapped = True
            self._inject_query(_BEGIN_READ_ONLY)
            self._push(_Q, ctx, _frame(_Q, payload) if text is sql else encode(m.Query(text)))
            self._inject_query(b"COMMIT", _WRAP_COMMIT)  # in a failed block PostgreSQL answers ROLLBACK, no error
            return
        self._push(_Q, ctx, _frame(_Q, payload) if text is sql else encode(m.Query(text)))

    def _wraps(self, verdict: Verdict, *, check_queue: bool = True) -> bool:
        """Defence in depth, as the MCP door does it: a text the analysis calls read-only, under a rule that
        may write, runs in a READ ONLY transaction, so a write the analysis missed fails instead of running
        unapproved. Only where the client is idle with nothing in flight (inside the client's own
        transaction, or behind pipelined work, the block would change what its statements mean), and never
        around transaction control."""
        if not self.engine.wrap_reads:
            return False
        settings = verdict.settings
        if settings is None or not settings.read_only:
            return False
        if check_queue and not self.queue.idle:
            return False
        return not any(p.command_tag in _TXN_TAGS for p in verdict.plans)

    def _must_wrap(self, verdict: Verdict, user_types: bool = False) -> bool:
        """A read that calls user code, under a rule that may write, runs only inside the proxy's READ ONLY
        block: where :meth:`_wraps` cannot wrap it, it is refused (``read_only_required``). ``user_types``:
        the statement was prepared with a parameter of a user type (see _Stmt)."""
        if not self.engine.wrap_reads:
            return False
        settings = verdict.settings
        return verdict.read_needs_read_only_block or (user_types and settings is not None and settings.read_only)

    def _refuse_unwrapped(self, kind: int, sql: str, verdict: Verdict) -> None:
        """Refuse (``read_only_required``) a read :meth:`_must_wrap` says needs the block it cannot have."""
        if any(p.command_tag in _TXN_TAGS for p in verdict.plans):
            why = "around a text that controls transactions itself"
        elif self.queue.status in (b"T", b"E"):
            why = "inside the client's transaction"
        else:
            why = "behind other work in flight (a pipeline, or an extended-protocol batch it cannot hold back whole)"
        self._refuse_verdict(kind, sql, verdict.read_only_refused(why))

    def _inject_query(self, sql: bytes, ctx: object = None) -> None:
        """A Query of the proxy's own, answered upstream and dropped (ReplyQueue.inject) — but for the
        COMMIT that ends a READ ONLY block (``_WRAP_COMMIT``), whose error and ReadyForQuery the client gets:
        a WITH HOLD cursor or a deferred constraint does its work at COMMIT, and may fail there."""
        self.queue.inject(_Q)
        self._ctx.append(ctx)
        self._ran += 1
        self.to_upstream.append(_frame(_Q, sql + b"\0"))

    def _forget_names(self, verdict: Verdict) -> None:
        """SQL PREPARE / DEALLOCATE / DISCARD ALL and DECLARE / CLOSE share PostgreSQL's namespace with the
        protocol's prepared statements and portals: a name such a statement creates or drops is forgotten
        here as soon as the statement is sent (before it runs, since the client may pipeline a Bind of the
        name behind it), so a protocol-level Bind / Describe / Execute of it can never use the analysis and
        screen of what the name meant before. The client is told the name does not exist (fail closed);
        ``EXECUTE name`` / ``FETCH`` by SQL is decided on its own."""
        for effect in verdict.effects:
            for name, table in ((effect.prepares, self._stmts), (effect.deallocates, self._stmts),
                                (effect.declares, self._portals), (effect.closes, self._portals)):
                if name is None:
                    continue
                if name == ALL_NAMES:
                    table.clear()
                else:
                    table.pop(name, None)

    def finish_hold(self, replies: Sequence[m.BackendMessage]) -> None:
        """The held statement was answered (rows of the released statement, or an error): send the replies
        and a ReadyForQuery, then go on with what the client sent meanwhile."""
        hold = self.held
        self.held = None
        self._ran += 1  # the released statement ran upstream
        if hold is not None and hold.extended is not None:
            replies = extended_replies(hold.extended, replies)
        for msg in replies:
            self.to_client.append(encode(msg))
        self.to_client.append(encode(m.ReadyForQuery(self.queue.status or b"I")))
        self._drain_client()

    def _parse(self, msg: m.Parse, payload: bytes) -> None:
        verdict = self.engine.decide(msg.query)
        if verdict.decision is not Decision.ALLOW:
            self._stmts.pop(msg.name, None)
            if verdict.decision is Decision.NEEDS_APPROVAL:
                if msg.name == "" and not len(self.queue) and not self.queue.skipping and self.queue.status != b"I":
                    self._refuse(_P, _IN_TRANSACTION)
                    return
                if msg.name == "" and not len(self.queue) and not self.queue.skipping:
                    # Wait for its Bind (the values are part of what is approved), up to Sync.
                    self._collecting = Collecting(msg.query, verdict, msg.param_types)
                    return
                error = self.engine.refusal(verdict)
                self._refuse(_P, m.error("ERROR", "55000", (error.message or "") + " (a statement that needs "
                                         "approval cannot be prepared by name or pipelined)",
                                         hint="send it on its own: unnamed Parse, Bind, Execute, Sync, or as a "
                                         "simple query"))
                return
            self._refuse_verdict(_P, msg.query, verdict)
            return
        self._forget_names(verdict)
        plans = verdict.plans
        stmt = _Stmt(msg.query, verdict, plans[0] if plans else None,
                     user_types=any(oid >= _FIRST_NORMAL_OID for oid in msg.param_types),
                     param_types=msg.param_types)
        # PostgreSQL drops the unnamed statement before parsing a new one, even one that then fails
        undo = _Registered(self._stmts, msg.name, stmt, None if msg.name == "" else self._stmts.get(msg.name))
        self._stmts[msg.name] = stmt
        text = verdict.text_for_upstream(msg.query)
        data = _frame(_P, payload) if text is msg.query else encode(m.Parse(msg.name, text, msg.param_types))
        self._push(_P, undo, data)

    def _collect(self, kind: int, payload: bytes) -> None:
        """A message after an unnamed Parse that needs approval: collected until Sync makes it a Hold."""
        collecting = self._collecting
        assert collecting is not None
        try:
            if kind == _S:
                parameters = collecting.complete()
                self._collecting = None
                self.held = Hold(collecting.sql, collecting.verdict, parameters, collecting.param_types, collecting)
                return
            if kind not in (_B, _D, _E):
                raise HoldRefused(f"a statement that needs approval cannot be followed by a {chr(kind)!r} "
                                  "message before Sync")
            collecting.add(decode_frontend(kind, payload))
        except HoldRefused as exc:
            # As PostgreSQL answers a failed Parse: the error, everything up to Sync skipped.
            self._collecting = None
            self._refuse(_P, exc.error)
            if kind == _S:
                self._client_frame(kind, payload)

    def _bind(self, msg: m.Bind, payload: bytes) -> None:
        stmt = self._stmts.get(msg.statement)
        if stmt is None:
            self._refuse(_B, m.error("ERROR", "26000", f"pgwarden: prepared statement {msg.statement!r} does not "
                                     "exist (or was refused)"))
            return
        if not self._in_block and self._must_wrap(stmt.verdict, stmt.user_types):
            # refused at Bind, not only at Execute: planning the portal may already run user code (an
            # IMMUTABLE function folded into a constant, a domain's CHECK on a parameter)
            self._refuse_unwrapped(_B, stmt.sql, stmt.verdict)
            return
        portal = _Portal(stmt, msg.result_formats, params=msg.params, param_formats=msg.param_formats)
        # FETCH and EXECUTE return what the cursor or prepared statement they name returns *when they run*:
        # a description of the statement from before (Describe S) may be stale, so their portal is described
        # afresh (PostgreSQL raises "cached plan must not change result type" for queries, not for these)
        if stmt.columns is not None and (stmt.plan is None or stmt.plan.command_tag not in _SHAPE_AT_RUN_TIME):
            try:
                portal.screen = self._screen_for(stmt, msg.result_formats)
            except ResultShapeMismatch as exc:
                self._portals.pop(msg.portal, None)
                self._refuse(_B, m.error_from(exc))
                return
            portal.described = True
        undo = _Registered(self._portals, msg.portal, portal, self._portals.get(msg.portal))
        self._portals[msg.portal] = portal
        self._push(_B, undo, _frame(_B, payload))
        self._ran += 1  # planning at Bind can run code, which may close and reopen another portal's name
        portal.checked = self._ran
        if not portal.described:
            # Learn the result's shape before any row arrives: describe the portal, read, drop the reply.
            self.queue.inject(_D)
            self._ctx.append(_DescCtx(None, portal))
            self.to_upstream.append(encode(m.Describe("P", msg.portal)))

    def _screen_for(self, stmt: _Stmt, formats: tuple[int, ...]) -> ResultScreen | None:
        if not stmt.columns:
            return None
        screen = stmt.screens.get(formats)
        if screen is None:
            screen = self.engine.screen(stmt.plan, _columns(stmt.columns, formats))
            if len(stmt.screens) < 16:
                stmt.screens[formats] = screen
        return screen

    def _describe(self, msg: m.Describe, payload: bytes) -> None:
        if msg.kind == "S":
            stmt = self._stmts.get(msg.name)
            if stmt is None:
                self._refuse(_D, m.error("ERROR", "26000", f"pgwarden: prepared statement {msg.name!r} does not "
                                         "exist (or was refused)"))
                return
            self._push(_D, _DescCtx(stmt, None), _frame(_D, payload))
        else:
            portal = self._portals.get(msg.name) or (self._cursor_portal(msg.name) if msg.name else None)
            if portal is None:
                self._refuse(_D, m.error("ERROR", "34000", f"pgwarden: portal {msg.name!r} does not exist"))
                return
            self._push(_D, _DescCtx(None, portal), _frame(_D, payload))

    def _cursor_portal(self, name: str) -> _Portal | None:
        # A cursor made by SQL DECLARE is a portal too (psycopg describes it before FETCH): its result is
        # what FETCH from it returns, so that is what gets decided and screened.
        sql = 'FETCH ALL FROM "' + name.replace('"', '""') + '"'
        verdict = self.engine.decide(sql)
        if verdict.decision is not Decision.ALLOW:
            return None
        portal = _Portal(_Stmt(sql, verdict, verdict.plans[0] if verdict.plans else None), ())
        self._portals[name] = portal
        return portal

    def _execute(self, msg: m.Execute, payload: bytes) -> None:
        portal = self._portals.get(msg.portal)
        if portal is None:
            self._refuse(_E, m.error("ERROR", "34000", f"pgwarden: portal {msg.portal!r} does not exist"))
            return
        if not self._in_block and self._must_wrap(portal.stmt.verdict, portal.stmt.user_types):
            self._refuse_unwrapped(_E, portal.stmt.sql, portal.stmt.verdict)
            return
        self._forget_names(portal.stmt.verdict)
        if portal.checked != self._ran:
            # Something ran upstream since this portal was bound or described: PostgreSQL may have dropped
            # it (end of transaction, ROLLBACK TO) and an allowed function may have OPENed a cursor under
            # its name, or CLOSEd it and opened another. Its description is asked again and confirmed
            # against the plan before a row is read (a contradiction withholds the result; PostgreSQL's
            # error, if the portal is gone, reaches the client).
            portal.described = False
            self.queue.inject(_D)
            self._ctx.append(_DescCtx(None, portal, surface=True))
            self.to_upstream.append(encode(m.Describe("P", msg.portal)))
        record = self.engine.open_record(portal.stmt.sql, portal.stmt.verdict)
        if portal.params:
            values, opaque, cut = text_forms(portal.params, portal.param_formats, portal.stmt.param_types,
                                             hides=self._hides)
            record.parameters(values, opaque=opaque, truncated=cut)
        self._push(_E, _ExecCtx(portal, record), _frame(_E, payload))
        portal.checked = self._ran

    # ---- upstream side ---------------------------------------------------------------------------

    def upstream_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes from the upstream server; what the client may see lands in :attr:`to_client`."""
        buf = self._ubuf
        buf += data
        spans, consumed = _scan(buf)
        if not spans:
            return
        out = self.to_client
        view = memoryview(buf)
        run = -1  # start of a run of bytes forwarded untouched
        ctxq = self._ctx
        q = self.queue
        nspans = len(spans)
        i = 0
        try:
            while i < nspans:
                kind, start, end = spans[i]
                i += 1
                head = ctxq[0] if ctxq else None
                if kind == _ROW and not self._withholding:
                    # the hot path: rows of a result whose screen lets them through as they are
                    tap: _Tap | None
                    if type(head) is _ExecCtx:
                        screen = head.portal.screen
                        tap = head.tap
                        if tap is None and screen is not None:
                            tap = head.tap = _Tap(self.engine, screen.column_names,
                                                  not any(_columns_formats(head.portal)))
                    elif type(head) is _QueryCtx:
                        screen = head.screen
                        tap = head.tap
                    else:
                        screen = tap = None
                    if screen is not None and (screen.passthrough or screen.gated):
                        # the run of DataRows that follows, taken together: counted against max_rows,
                        # gated, digested and forwarded in runs of bytes, each value read only in a row
                        # the detectors' raw gate hits
                        first = i - 1
                        while i < nspans and spans[i][0] == _ROW:
                            i += 1
                        count = i - first
                        sent = count
                        limit = head.limit  # type: ignore[union-attr]
                        if limit is not None:
                            sent = max(0, min(count, limit - self._returned(head, count)))
                        if sent:
                            run = self._forward_rows(buf, view, spans, first, first + sent, screen, tap, run, out)
                        if sent < count:
                            if run >= 0:
                                # past the rule's max_rows: not sent (CommandComplete then says so, see _complete)
                                out.append(bytes(view[run:spans[first + sent][1]]))
                                run = -1
                            self._cut(head)
                        continue
                    limit = getattr(head, "limit", None)
                    if limit is not None and self._over_limit(head, limit):
                        # past the rule's max_rows: not sent (CommandComplete then says so, see _complete)
                        if run >= 0:
                            out.append(bytes(view[run:start]))
                            run = -1
                        self._cut(head)
                        continue
                    if screen is not None:
                        # screened (masks applied at the output): masked / detected values replaced; a row
                        # the screen left alone
                        # stays in the run of bytes forwarded as they came
                        values = m.DataRow(bytes(view[start + 5:end])).values()
                        try:
                            clean = screen.row(values)
                        except ValueWithheld as exc:
                            if run >= 0:
                                out.append(bytes(view[run:start]))
                                run = -1
                            self._withhold(m.error_from(exc))
                            continue
                        if tap is not None:
                            tap.add(clean)
                        if all(c is v for c, v in zip(clean, values, strict=True)):
                            if run < 0:
                                run = start
                            continue
                        if run >= 0:
                            out.append(bytes(view[run:start]))
                            run = -1
                        out.append(encode(m.DataRow.from_values(clean)))
                        continue
                if run >= 0:
                    out.append(bytes(view[run:start]))
                    run = -1
                before = len(q)
                forward, emit = self._backend(kind, view, start, end, head)
                if kind == _ERROR:
                    # the failed message and every one PostgreSQL now skips up to Sync: a Parse or Bind
                    # among them registered nothing upstream, so the name means what it meant before
                    gone = [ctxq.popleft() for _ in range(before - len(q))]
                    for ctx in reversed(gone):
                        if type(ctx) is _Registered:
                            ctx.undo()
                else:
                    for _ in range(before - len(q)):
                        ctxq.popleft()
                if self._withholding and kind != _READY:
                    continue
                if kind == _READY:
                    self._withholding = False
                if forward is True:
                    if not emit:
                        run = start
                        continue
                    out.append(bytes(view[start:end]))
                elif forward:
                    out.append(forward)
                for msg in emit:
                    out.append(encode(msg))
            if run >= 0:
                out.append(bytes(view[run:consumed]))
        finally:
            view.release()
        del buf[:consumed]
        if self._cut_done:
            self._cut_release()  # the cut statement is over upstream: the client's next messages may go

    @staticmethod
    def _returned(head: object, count: int) -> int:
        """Count ``count`` more rows of ``head``'s result; the number counted before them."""
        if type(head) is _QueryCtx:
            before = head.returned
            head.returned = before + count
            return before
        portal = head.portal  # type: ignore[attr-defined]
        before = portal.returned
        portal.returned = before + count
        return before

    def _forward_rows(self, buf: bytearray, view: memoryview, spans: list[tuple[int, int, int]], lo: int, hi: int,
                      screen: ResultScreen, tap: _Tap | None, run: int, out: list[bytes]) -> int:
        """Send the DataRows ``spans[lo:hi]`` (contiguous) through a passthrough or gated screen; returns
        the start of the run of untouched bytes still open (or -1)."""
        raw_hits = None if screen.passthrough else screen.raw_hits
        hits: list[int] = []
        if raw_hits is not None:
            spots = raw_hits(buf, spans[lo][1], spans[hi - 1][2])
            if spots:
                # every row a spot lies in or runs into is read value by value (policy/detectors.py,
                # "the raw gate": no finding lies outside the spots)
                starts = [sp[1] for sp in spans[lo:hi]]
                flagged: set[int] = set()
                for a, b in spots:
                    flagged.update(range(lo + bisect_right(starts, a) - 1, lo + bisect_right(starts, b - 1)))
                hits = sorted(flagged)
        seg = lo  # first row of the current stretch of rows forwarded as they came
        for k in hits:
            start, end = spans[k][1], spans[k][2]
            values = m.DataRow(bytes(view[start + 5:end])).values()
            try:
                clean = screen.row(values)
            except ValueWithheld as exc:  # the rows before it go (they were screened); it and the rest do not
                if tap is not None:
                    tap.add_run(view, spans[seg:k])
                if run < 0 and seg < k:
                    run = spans[seg][1]
                if run >= 0:
                    out.append(bytes(view[run:start]))
                self._withhold(m.error_from(exc))
                return -1
            if all(c is v for c, v in zip(clean, values, strict=True)):
                continue
            if tap is not None:
                tap.add_run(view, spans[seg:k])
            if run < 0 and seg < k:
                run = spans[seg][1]
            if run >= 0:  # what came before this row, as it came
                out.append(bytes(view[run:start]))
                run = -1
            encoded = encode(m.DataRow.from_values(clean))
            out.append(encoded)
            if tap is not None:
                tap.add_changed(clean, encoded)
            seg = k + 1
        if seg < hi:
            if tap is not None:
                tap.add_run(view, spans[seg:hi])
            if run < 0:
                run = spans[seg][1]
        return run

    def _cut(self, head: object) -> None:
        """``head``'s result went past max_rows: ask for its statement to be cancelled, where that is safe."""
        # nothing may have been sent behind it (a cancel landing after the statement ends would hit that):
        # its Query is the only request outstanding, and from now on the client's next messages wait
        if type(head) is _QueryCtx and head.cut_cancel and not head.cut_cancelled and len(self.queue) == 1:
            head.cut_cancelled = True
            self.want_cancel = True
            self._cut_pending = True
            self._cut_done = self._cut_sent = False

    @staticmethod
    def _over_limit(head: object, limit: int) -> bool:
        """Count one more row of ``head``'s result; True when it is past ``limit`` (not to be sent)."""
        if type(head) is _QueryCtx:
            head.returned += 1
            return head.returned > limit
        if type(head) is _ExecCtx:
            portal = head.portal
            portal.returned += 1
            return portal.returned > limit
        return False

    def _copy_over_limit(self, head: _QueryCtx, body: memoryview) -> bool:
        """Count one CopyData of a COPY OUT as a row (one row per message, as PostgreSQL sends them; a csv
        header line and binary COPY's trailer are not rows); True when it is past ``max_rows``."""
        if head.copy_skip:
            head.copy_skip -= 1
            return False
        if head.copy_binary and len(body) == 2 and body[0] == 0xFF and body[1] == 0xFF:
            return False  # the trailer (a field count of -1): the client needs it to end the data
        return self._over_limit(head, head.limit)  # type: ignore[arg-type]

    @staticmethod
    def _truncated(head: object, body: memoryview, forward: bool | bytes) -> bool | bytes:
        """The CommandComplete of a result cut at max_rows: a notice saying so, and the tag's count made the
        rows the client received (``SELECT n`` / ``FETCH n``; other tags, such as a write's, say what was
        done and stay)."""
        if type(head) is _QueryCtx:
            limit, returned = head.limit, head.returned
            head.returned = 0
        elif type(head) is _ExecCtx:
            limit, returned = head.limit, head.portal.returned
        else:
            return forward
        if limit is None or returned <= limit or not forward:
            return forward
        tag = bytes(body).rstrip(b"\0").decode("utf-8", "replace")
        verb, _, count = tag.rpartition(" ")
        if verb in ("SELECT", "FETCH", "MOVE", "COPY") and count.isdigit():
            tag = f"{verb} {limit}"
        told = type(head) is _ExecCtx and head.portal.cut_told  # said on a PortalSuspended already
        return (b"" if told else encode(_cut_notice(limit))) + encode(m.CommandComplete(tag))

    def _withhold(self, error: m.ErrorResponse) -> None:
        """Replace the rest of this exchange (to the next ReadyForQuery) by ``error``."""
        if not self._withholding:
            self.to_client.append(encode(error))
            self._withholding = True
            self.want_cancel = True

    def _backend(self, kind: int, view: memoryview, start: int, end: int,
                 head: object) -> tuple[bool | bytes, tuple[m.BackendMessage, ...]]:
        """Handle one upstream message; returns (True: forward as is | bytes: send these | False, emit)."""
        q = self.queue
        body = view[start + 5:end]
        step = q.backend_message(kind, body if kind == _READY else None)
        forward: bool | bytes = step.forward
        if kind == _ROWDESC:
            if head is None and forward is False:
                pass  # the reply to a query of the proxy's own (the snapshot of _BEGIN_READ_ONLY): dropped
            elif type(head) is _QueryCtx:
                forward = self._query_description(head, body, forward)
            else:
                forward = self._row_description(head, body, forward)
        elif kind == _ROW:
            limit = getattr(head, "limit", None)
            if forward and limit is not None and self._over_limit(head, limit):
                forward = False
            else:
                forward = self._screened_row(head, body) if forward else False
        elif kind == _PARAM_DESC:
            if type(head) is _DescCtx and head.stmt is not None:
                self._described_parameters(head.stmt, body)
        elif kind == _NODATA:
            if type(head) is _DescCtx:
                if head.stmt is not None:
                    head.stmt.columns = ()
                elif head.portal is not None:
                    head.portal.screen = None
                    head.portal.described = True
        elif kind in (_DONE, _SUSPENDED, _EMPTY):
            forward = self._complete(kind, head, body, forward)
            if kind == _DONE:
                forward = self._truncated(head, body, forward)
            elif type(head) is _QueryCtx:
                head.returned = 0
            elif kind == _SUSPENDED and forward is True and type(head) is _ExecCtx:
                portal = head.portal
                if head.limit is not None and portal.returned > head.limit and not portal.cut_told:
                    # an Execute with a row count never gets the CommandComplete that says a result was
                    # cut: its PortalSuspended carries the notice instead, once per portal
                    portal.cut_told = True
                    forward = encode(_cut_notice(head.limit)) + _frame(kind, bytes(body))
        elif kind == _ERROR and type(head) is _QueryCtx and head.cut_cancelled and forward is True \
                and _cancelled_by_request(decode_backend(kind, body)):
            # the cancel the cut asked for (not a statement_timeout, also 57014): the result ends here, as a
            # cut one does. (Under a non-English lc_messages the text differs: the client then gets the
            # error, which is honest, if less tidy.)
            done = memoryview(b"SELECT 0\0")
            forward = self._complete(_DONE, head, done, True)
            forward = self._truncated(head, done, forward)
        elif kind in (_ERROR, _NOTICE):
            if kind == _ERROR and step.injected_error and (head is _WRAP_COMMIT or getattr(head, "surface", False)):
                forward = True  # the client's statement failed there (see _inject_query, _execute)
            forward = self._diagnostic(kind, head, body, forward)
        elif kind == _READY:
            if type(head) is _QueryCtx and head.cut_cancelled and self._cut_pending:
                self._cut_done = True  # released after this batch of replies (upstream_data), or by cancel_sent
            if type(head) is _QueryCtx:
                self._finish_query(head)
                if head.wrapped and forward is True:
                    # inside the proxy's READ ONLY block ('T', or 'E' after an error): the client's
                    # ReadyForQuery is the COMMIT's, which ends the block and may fail
                    forward = False
            elif head is _WRAPPED_SYNC and forward is True:
                forward = False  # the same, for an extended-protocol batch (_release_batch)
            elif head is _WRAP_COMMIT:
                forward = _IDLE  # the client is where it was: idle
        elif kind == _COPY_OUT:
            forward = self._copy_out(head, decode_backend(kind, body), forward)  # type: ignore[arg-type]
        elif kind == _COPY_DATA:
            if forward and type(head) is _QueryCtx and head.limit is not None and self._copy_over_limit(head, body):
                return False, step.emit  # past the rule's max_rows (CommandComplete then says so)
            detector = self.engine.detector
            # a line the raw gate misses holds nothing the detectors find (policy/detectors.py)
            if forward and detector is not None and detector.raw_hits(body):
                line = bytes(body).decode("utf-8", "replace")
                clean = detector.redact(line)
                if clean != line:
                    forward = encode(m.CopyData(clean.encode()))
            if type(head) is _QueryCtx and head.tap is not None:
                head.tap.rows += 1
        elif kind == _COPY_BOTH:
            self._withhold(m.error("ERROR", "0A000", "pgwarden: COPY BOTH (replication) is not carried"))
        elif kind == _PARAM_STATUS:
            msg = decode_backend(kind, body)
            if msg.name == "client_encoding" and msg.value != "UTF8":  # type: ignore[union-attr]
                self.fatal = m.error("FATAL", "08006", "pgwarden: the upstream session stopped reading UTF8")
        return forward, step.emit

    def _query_description(self, head: _QueryCtx, body: memoryview, forward: bool) -> bool | bytes:
        """RowDescription of a simple Query's statement: its screen, cached by (plan, description bytes)."""
        plan = head.plan
        raw = bytes(body)
        key = (id(plan), raw)
        generation = getattr(self.engine, "screen_generation", 0)
        hit = self._screens.get(key)
        if hit is None or hit[0] is not plan or hit[1] != generation:
            desc: m.RowDescription = decode_backend(_ROWDESC, raw)  # type: ignore[assignment]
            try:
                screen = self.engine.screen(plan, _columns(desc.fields))
            except ResultShapeMismatch as exc:
                self._withhold(m.error_from(exc))
                return False
            renamed = _renamed(desc, screen.column_names)
            hit = (plan, generation, screen, None if renamed is None else encode(renamed),
                   all(f.format == 0 for f in desc.fields))
            if len(self._screens) >= _SCREEN_CACHE:
                self._screens.clear()
            self._screens[key] = hit
        screen = hit[2]
        head.screen = screen
        head.tap = _Tap(self.engine, screen.column_names, hit[4])
        if not forward:
            return False
        return True if hit[3] is None else hit[3]

    def _hides(self, value: bytes) -> bool:
        """The bytes of a bound value hold what the content detectors mask (read as UTF-8)."""
        detector = self.engine.detector
        if detector is None or not detector.raw_hits(value):
            return False
        text = value.decode("utf-8", "replace")
        return detector.redact(text) != text

    @staticmethod
    def _described_parameters(stmt: _Stmt, body: memoryview) -> None:
        """The server's ParameterDescription of a statement: the types it inferred for parameters the
        client left undeclared. One of a user type (a domain, whose CHECK may call a user function at Bind)
        makes the statement user code, as a declared one does."""
        desc: m.ParameterDescription = decode_backend(_PARAM_DESC, body)  # type: ignore[assignment]
        stmt.param_types = desc.type_oids
        if any(oid >= _FIRST_NORMAL_OID for oid in desc.type_oids):
            stmt.user_types = True

    def _row_description(self, head: object, body: memoryview, forward: bool) -> bool | bytes:
        if type(head) is _DescCtx and head.stmt is None and head.portal is not None \
                and head.portal.stmt.columns is not None:
            # libpq describes the portal of every execution of a prepared statement: the same description
            # bytes under the same catalog generation give the same screen, found without decoding them
            portal = head.portal
            hit = portal.stmt.described.get((getattr(self.engine, "screen_generation", 0), bytes(body)))
            if hit is not None:
                portal.screen = hit[0]
                portal.described = True
                return (True if hit[1] is None else hit[1]) if forward else False
        desc: m.RowDescription = decode_backend(_ROWDESC, body)  # type: ignore[assignment]
        try:
            if type(head) is _QueryCtx:
                screen = self.engine.screen(head.plan, _columns(desc.fields))
                head.screen = screen
                head.tap = _Tap(self.engine, screen.column_names, all(f.format == 0 for f in desc.fields))
            elif type(head) is _DescCtx and head.stmt is not None:
                stmt = head.stmt
                stmt.columns = desc.fields
                stmt.screens.clear()
                screen = self._screen_for(stmt, ())
                assert screen is not None
            elif type(head) is _DescCtx and head.portal is not None:
                portal = head.portal
                # its screen is built once per (catalog generation, description bytes) and reused (above)
                screen = self.engine.screen(portal.stmt.plan, tuple(_columns(desc.fields)))
                renamed = _renamed(desc, screen.column_names)
                described = portal.stmt.described
                if len(described) >= 16:
                    described.clear()
                described[(getattr(self.engine, "screen_generation", 0), bytes(body))] = (
                    screen, None if renamed is None else encode(renamed))
                portal.screen = screen
                portal.described = True
                if portal.stmt.columns is None:
                    portal.stmt.columns = tuple(
                        m.FieldDescription(f.name, f.table_oid, f.attnum, f.type_oid, f.type_len, f.type_mod, 0)
                        for f in desc.fields)
            else:
                raise ResultShapeMismatch("PostgreSQL described a result the proxy did not ask for")
        except ResultShapeMismatch as exc:
            self._withhold(m.error_from(exc))
            return False
        if not forward:
            return False
        renamed = _renamed(desc, screen.column_names)
        return True if renamed is None else encode(renamed)

    def _screened_row(self, head: object, body: memoryview) -> bool | bytes:
        if type(head) is _QueryCtx:
            screen, tap = head.screen, head.tap
        elif type(head) is _ExecCtx:
            screen, tap = head.portal.screen, head.tap
            if tap is None and screen is not None:
                tap = head.tap = _Tap(self.engine, screen.column_names, not any(_columns_formats(head.portal)))
        else:
            screen = tap = None
        if screen is None:
            self._withhold(m.error("ERROR", "XX000", "pgwarden: PostgreSQL sent rows the proxy had no description "
                                   "for; the result is withheld"))
            return False
        try:
            values = screen.row(m.DataRow(bytes(body)).values())
        except ValueWithheld as exc:
            self._withhold(m.error_from(exc))
            return False
        if tap is not None:
            tap.add(values)
        return encode(m.DataRow.from_values(values))

    def _copy_out(self, head: object, msg: m.CopyOutResponse, forward: bool) -> bool:
        if type(head) is _QueryCtx:
            plan = head.plan
            needs_screen = self.engine.detector is not None or (plan is not None and (plan.masks or plan.raw_origins))
            if msg.format != 0 and needs_screen:
                self._withhold(m.error("ERROR", "0A000", "pgwarden: binary COPY of data the gateway must screen "
                                       "is not allowed", hint="use COPY … TO STDOUT in text or csv format"))
                return False
            head.copy = True
            head.copy_binary = msg.format != 0
            index = head.index
            head.copy_skip = int(not head.copy_binary and any(
                e.index == index and e.copy_header for e in head.verdict.effects))
            head.tap = _Tap(self.engine, ["copy"], False)
            head.tap.digest = None
            return forward
        self._withhold(m.error("ERROR", "0A000", "pgwarden: COPY through the extended protocol is not carried",
                               hint="send COPY as a simple query"))
        return False

    def _complete(self, kind: int, head: object, body: memoryview, forward: bool) -> bool | bytes:
        if type(head) is _QueryCtx:
            tap = head.tap
            head.index += 1
            head.screen = None
            if kind == _DONE and head.index >= len(head.verdict.plans):
                if not self._close_record(head, tap, body):
                    return False
            elif tap is not None and head.record is not None:
                head.record.result(tap.columns, tap.sample, tap.rows, tap.digest)
            if tap is not None:
                head.tap = None
        elif type(head) is _ExecCtx:
            completed = kind == _DONE
            ok = self._close_record(head, head.tap, body)
            head.tap = None
            if completed:
                self.engine.apply_effects(head.portal.stmt.verdict, 1)
            if not ok:
                return False
        return forward

    def _close_record(self, head: _QueryCtx | _ExecCtx, tap: _Tap | None, body: memoryview) -> bool:
        record = head.record
        if record is None:
            return True
        head.record = None
        if tap is not None:
            record.result(tap.columns, tap.sample, tap.rows, tap.digest)
        failure = record.close()
        if failure is not None:
            self._withhold(m.error("ERROR", "58030", f"pgwarden: the audit journal could not record this "
                                   f"statement, so its result is withheld: {failure}"))
            return False
        return True

    def _finish_query(self, head: _QueryCtx) -> None:
        if head.record is not None:
            self._close_record(head, head.tap, memoryview(b""))
        self.engine.apply_effects(head.verdict, head.index)

    def _diagnostic(self, kind: int, head: object, body: memoryview, forward: bool) -> bool | bytes:
        msg = decode_backend(kind, body)
        if kind == _NOTICE and diagnostic_withheld(msg.fields):  # type: ignore[union-attr]
            return False
        plan = getattr(head, "plan", None) if head is not None else None
        scrub = bool(plan is not None and plan.scrub_errors)
        fields = self.engine.screen_fields(msg.fields, scrub=scrub,  # type: ignore[union-attr]
                                           what="error" if kind == _ERROR else "notice")
        verdict = getattr(head, "verdict", None) or (getattr(getattr(head, "portal", None), "stmt", None) and
                                                     head.portal.stmt.verdict)  # type: ignore[union-attr]
        position = msg.fields.get("P")  # type: ignore[union-attr]
        if position and position.isdigit() and verdict is not None and not scrub:
            mapped = verdict.client_position(int(position))
            if mapped is not None:
                fields["P"] = str(mapped)
        if kind == _ERROR:
            if isinstance(head, _QueryCtx | _ExecCtx) and head.record is not None:
                head.record.error(fields.get("C", "XX000"), fields.get("M", ""))
                record, head.record = head.record, None
                record.close()
                head.tap = None
            if (msg.fields.get("V") or msg.fields.get("S")) in ("FATAL", "PANIC") and not len(self.queue):  # type: ignore
                self.fatal = m.ErrorResponse(fields)
                return False
        if not forward:
            return False
        return encode(m.ErrorResponse(fields) if kind == _ERROR else m.NoticeResponse(fields))


_CANCELLED_BY_REQUEST = "canceling statement due to user request"  # PostgreSQL's text for a CancelRequest


def _cancelled_by_request(error: m.BackendMessage) -> bool:
    """The ErrorResponse a CancelRequest causes (a statement_timeout is 57014 too, with another message)."""
    fields = error.fields  # type: ignore[union-attr]
    return fields.get("C") == "57014" and fields.get("M") == _CANCELLED_BY_REQUEST


def _columns_formats(portal: _Portal) -> tuple[int, ...]:
    return tuple(f for f in portal.formats if f)
