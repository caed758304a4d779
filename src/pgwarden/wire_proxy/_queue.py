"""Which upstream reply belongs to which frontend message, and what the proxy does with it.

A pure object in the manner of PgBouncer's and PgDog's extended-protocol bookkeeping. Every message
sent upstream (by the client, or injected by the proxy) leaves an entry in a FIFO of expected replies:
Parse → ParseComplete, Bind → BindComplete, Describe → [ParameterDescription] RowDescription | NoData,
Execute → DataRow* / Copy… then CommandComplete | EmptyQueryResponse | PortalSuspended, Close →
CloseComplete, Sync → ReadyForQuery, Query and FunctionCall → anything up to ReadyForQuery. Flush,
Terminate and client copy data expect nothing. For each backend message :meth:`ReplyQueue.backend_message`
says whether to forward it to the client or drop it (a reply to something the proxy injected), and what
to send the client after it.

Errors follow PostgreSQL. An ErrorResponse to an extended-protocol message ends that message and makes the
server skip everything up to the next Sync, so the queue drops those entries too; if the client has not
sent that Sync yet, :attr:`ReplyQueue.skipping` is set and its messages are discarded (not forwarded, not
answered) until it does.

Refusals (a policy denial inside a pipeline) go through :meth:`ReplyQueue.refuse` and must look to the
client exactly like a server error at that point, including the transaction status that follows:

* when nothing is outstanding upstream and the session is idle (or already in a failed transaction), the
  proxy answers itself: the ErrorResponse now, the ReadyForQuery when the client's Sync comes (or at once,
  for a simple Query), and the upstream server never sees any of it;
* otherwise an implicit or explicit transaction may be open upstream, and only a real error there gives
  PostgreSQL's outcome (the implicit transaction rolled back, an open block put into the failed state
  'E'). The proxy then sends a *probe* in place of the refused message, a Describe of a statement name
  it has just closed (extended protocol) or a statement that fails to parse (simple Query); both fail
  without side effects. The probe's ErrorResponse is dropped and the proxy's own error sent in its place,
  and the ReadyForQuery that follows is the server's own, with the right status.

The queue sees type bytes, not payloads (ReadyForQuery's one status byte aside), so the relay path calls
it once per message header. Anything the upstream server sends that the queue did not expect raises
:class:`~pgwarden.wire_proxy.errors.UnexpectedReply`: the bookkeeping is lost and the session must end.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from . import messages as m
from .errors import UnexpectedReply

__all__ = ["PROBE_SQL", "PROBE_STATEMENT", "BackendStep", "ClientStep", "Origin", "ReplyQueue"]

PROBE_STATEMENT = "pgwarden\x01refused"
"""The prepared-statement name the extended-protocol probe closes then describes (no client uses it)."""

PROBE_SQL = "pgwarden refused this statement"
"""The simple-Query probe: a syntax error, so the server fails before touching anything."""

_P, _B, _D, _E, _C, _S, _Q, _F, _H, _X = (ord(c) for c in "PBDECSQFHX")
_COPY_FROM_CLIENT = frozenset(ord(c) for c in "dcf")
_EXTENDED = frozenset((_P, _B, _D, _E, _C))
_ENDS_WITH_READY = frozenset((_S, _Q, _F))
_NO_REPLY = frozenset((_H, _X))
_FRONTEND_KINDS = _EXTENDED | _ENDS_WITH_READY | _NO_REPLY | _COPY_FROM_CLIENT

_ERROR, _NOTICE, _PARAM_STATUS, _NOTIFY, _READY = (ord(c) for c in "ENSAZ")
_ASYNC = frozenset((_NOTICE, _PARAM_STATUS, _NOTIFY))


def _types(s: str) -> frozenset[int]:
    return frozenset(ord(c) for c in s)


# replies that end an entry / replies that may come before the end
_TERMINAL: dict[int, frozenset[int]] = {
    _P: _types("1"), _B: _types("2"), _C: _types("3"), _D: _types("Tn"), _E: _types("CIs"),
    _S: _types("Z"), _Q: _types("Z"), _F: _types("Z"),
}
_INTERIM: dict[int, frozenset[int]] = {
    _P: frozenset(), _B: frozenset(), _C: frozenset(), _D: _types("t"), _E: _types("DHGWdc"),
    _S: _types("E"), _Q: _types("TDCIGHWdcE"), _F: _types("VE"),
}


class Origin(enum.Enum):
    CLIENT = "client"  # forward every reply
    INJECTED = "injected"  # the proxy's own message: drop every reply
    PROBE = "probe"  # stands for a refused message: its error is replaced by the refusal


@dataclass(frozen=True, slots=True)
class ClientStep:
    """What to do with one client message.

    ``forward``: send the client's message upstream. ``inject``: send these upstream instead (already
    registered in the queue). ``emit``: send these to the client now, in order."""

    forward: bool
    inject: tuple[m.FrontendMessage, ...] = ()
    emit: tuple[m.BackendMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class BackendStep:
    """What to do with one upstream message: ``forward`` it to the client or drop it, then send ``emit``.
    ``injected_error`` marks an ErrorResponse to a message the proxy injected (a pinned setting that
    failed…): the proxy should treat its own session set-up as broken."""

    forward: bool
    emit: tuple[m.BackendMessage, ...] = ()
    injected_error: bool = False


FORWARD = ClientStep(True)
DISCARD = ClientStep(False)
_PASS = BackendStep(True)
_DROP = BackendStep(False)
_DROP_INJECTED_ERROR = BackendStep(False, injected_error=True)


class _Entry:
    __slots__ = ("error", "failed", "kind", "origin")

    def __init__(self, kind: int, origin: Origin, error: m.ErrorResponse | None = None) -> None:
        self.kind = kind
        self.origin = origin
        self.error = error
        self.failed = False

    def __repr__(self) -> str:
        return f"<{chr(self.kind)} {self.origin.value}>"


class ReplyQueue:
    """Expected upstream replies of one session (see the module docstring for the protocol)."""

    __slots__ = ("_dirty", "_pure", "_q", "_ready_pending", "skipping", "status")

    def __init__(self, status: bytes | None = b"I") -> None:
        self._q: deque[_Entry] = deque()
        self.status: bytes | None = status  # the last ReadyForQuery status from upstream; None: unknown
        self.skipping = False  # discarding client messages until its Sync, as PostgreSQL does after an error
        self._pure = False  # the current skip comes from a refusal the proxy answers alone
        self._dirty = False  # extended messages went upstream since the last Sync / Query
        self._ready_pending = 0  # Sync / Query / FunctionCall entries still waiting for ReadyForQuery

    def __len__(self) -> int:
        return len(self._q)

    @property
    def idle(self) -> bool:
        """Nothing in flight, no extended message since the last Sync, and upstream idle ('I'): what the
        client sends next starts a transaction of its own."""
        return not self._q and not self.skipping and not self._dirty and self.status == b"I"

    @property
    def expecting(self) -> tuple[tuple[str, Origin], ...]:
        """The outstanding entries, oldest first (for logs and tests)."""
        return tuple((chr(e.kind), e.origin) for e in self._q)

    # ---- client side ---------------------------------------------------------------------------

    def discarding(self, kind: int) -> bool:
        """True when a client message of this type is to be dropped unread (skip-till-Sync); the
        server need not run policy on it. :meth:`client_message` says the same."""
        return self.skipping and kind != _S

    def client_message(self, kind: int) -> ClientStep:
        """The client sent a message of type ``kind`` that policy lets through."""
        self._check_kind(kind)
        if self.skipping:
            if kind != _S:
                return DISCARD
            self.skipping = False
            if self._pure:
                self._pure = False
                self._dirty = False
                return ClientStep(False, emit=(m.ReadyForQuery(self.status or b"I"),))
        self._push(kind, Origin.CLIENT)
        return FORWARD

    def inject(self, kind: int) -> None:
        """The proxy sends a message of its own upstream; every reply to it will be dropped."""
        self._check_kind(kind)
        self._push(kind, Origin.INJECTED)

    def refuse(self, kind: int, error: m.ErrorResponse) -> ClientStep:
        """The proxy refuses a client message of type ``kind`` (never Sync, Flush, Terminate or copy
        data) and answers ``error`` where PostgreSQL would have answered its own."""
        if kind not in _EXTENDED and kind not in (_Q, _F):
            raise ValueError(f"a {chr(kind)!r} message cannot be refused; refuse the statement it belongs to")
        if self.skipping:
            return DISCARD  # PostgreSQL would have skipped it unread
        quiet = not self._q and not self._dirty and self.status in (b"I", b"E")
        if kind in _EXTENDED:
            self.skipping = True
            if quiet:
                self._pure = True
                return ClientStep(False, emit=(error,))
            self._pure = False
            self._push(_C, Origin.INJECTED)
            self._push(_D, Origin.PROBE, error)
            return ClientStep(False, inject=(m.Close("S", PROBE_STATEMENT), m.Describe("S", PROBE_STATEMENT)))
        if quiet:
            return ClientStep(False, emit=(error, m.ReadyForQuery(self.status or b"I")))
        self._push(_Q, Origin.PROBE, error)
        return ClientStep(False, inject=(m.Query(PROBE_SQL),))

    def _check_kind(self, kind: int) -> None:
        if kind not in _FRONTEND_KINDS:
            raise ValueError(f"{kind!r} is not a frontend message type of the normal phase")

    def _push(self, kind: int, origin: Origin, error: m.ErrorResponse | None = None) -> None:
        if kind in _EXTENDED:
            self._dirty = True
        elif kind in _ENDS_WITH_READY:
            self._dirty = False
            self._ready_pending += 1
        else:
            return  # Flush, Terminate, copy data: no reply of their own
        self._q.append(_Entry(kind, origin, error))

    # ---- backend side --------------------------------------------------------------------------

    def backend_message(self, kind: int, body: bytes | bytearray | memoryview | None = None) -> BackendStep:
        """An upstream message of type ``kind`` arrived. Pass ``body`` for ReadyForQuery (its status
        byte); without it the status becomes unknown and later refusals use the probe."""
        q = self._q
        if kind in _ASYNC:
            if kind != _NOTIFY and q and q[0].origin is Origin.INJECTED:
                return _DROP  # a notice or setting change caused by the proxy's own statement
            return _PASS
        if not q:
            if kind == _ERROR:
                return _PASS  # FATAL outside any request (shutdown, idle timeout): the client must see it
            raise UnexpectedReply("unexpected_reply", f"upstream sent {_name(kind)} when no reply was expected")
        head = q[0]
        if kind == _ERROR:
            return self._error(head)
        if kind in _TERMINAL[head.kind]:
            q.popleft()
            if kind == _READY:
                self._ready_pending -= 1
                self.status = bytes(body[:1]) if body is not None and len(body) == 1 else None
            if head.origin is Origin.CLIENT:
                return _PASS
            if head.origin is Origin.PROBE:
                if not head.failed:
                    raise UnexpectedReply("probe_succeeded", "the refusal probe did not fail upstream")
                return _PASS  # the ReadyForQuery after the probe's error is the one the client awaits
            return _DROP
        if kind in _INTERIM[head.kind]:
            if head.origin is Origin.CLIENT:
                return _PASS
            if head.origin is Origin.PROBE:
                raise UnexpectedReply("probe_succeeded", "the refusal probe did not fail upstream")
            return _DROP
        raise UnexpectedReply(
            "unexpected_reply", f"upstream sent {_name(kind)} in reply to {_name_frontend(head.kind)}"
        )

    def _error(self, head: _Entry) -> BackendStep:
        if head.kind in _EXTENDED:
            self._q.popleft()
            self._skip_to_sync()
        else:
            head.failed = True  # Query, FunctionCall, Sync: the error is followed by ReadyForQuery
        if head.origin is Origin.CLIENT:
            return _PASS
        if head.origin is Origin.PROBE:
            assert head.error is not None
            return BackendStep(False, emit=(head.error,))
        return _DROP_INJECTED_ERROR

    def _skip_to_sync(self) -> None:
        q = self._q
        while q and q[0].kind != _S:
            gone = q.popleft()
            if gone.kind in _ENDS_WITH_READY:
                self._ready_pending -= 1  # a Query while skipping is ignored too: no ReadyForQuery for it
        if not q:
            self.skipping = True
            self._pure = False
            self._dirty = True  # upstream still waits for a Sync


def _name(kind: int) -> str:
    return _BACKEND_NAMES.get(kind, repr(chr(kind)) if 0x20 <= kind < 0x7F else f"0x{kind:02x}")


def _name_frontend(kind: int) -> str:
    return _FRONTEND_NAMES.get(kind, repr(chr(kind)))


_BACKEND_NAMES = {
    ord(k): v
    for k, v in {
        "1": "ParseComplete", "2": "BindComplete", "3": "CloseComplete", "T": "RowDescription", "D": "DataRow",
        "C": "CommandComplete", "I": "EmptyQueryResponse", "s": "PortalSuspended", "n": "NoData",
        "t": "ParameterDescription", "Z": "ReadyForQuery", "G": "CopyInResponse", "H": "CopyOutResponse",
        "W": "CopyBothResponse", "d": "CopyData", "c": "CopyDone", "V": "FunctionCallResponse",
        "R": "Authentication", "K": "BackendKeyData", "v": "NegotiateProtocolVersion",
    }.items()
}
_FRONTEND_NAMES = {
    ord(k): v
    for k, v in {
        "P": "Parse", "B": "Bind", "D": "Describe", "E": "Execute", "C": "Close", "S": "Sync", "Q": "Query",
        "F": "FunctionCall",
    }.items()
}
