"""The relay phase of one wire session, driven by transport callbacks instead of two reading tasks.

After start-up the server hands both connections' transports to a :class:`Relay`: each ``data_received``
goes straight into :class:`~pgwarden.wire_proxy.connection.ProxyConnection` and what it produced is written
at once, with no task switch, ``StreamReader`` buffer or ``await drain()`` per exchange (measured: the
two-pump relay spent more of each pgbench statement in asyncio than in the proxy's own work).

Backpressure both ways, flat memory: when one side's transport stops taking bytes (``pause_writing``), the
other side's reading is paused until it resumes. A statement held for approval pauses the client's reading
and runs the server's approval coroutine in a task; bytes that arrived meanwhile are handled after it.

Each side's transport keeps its original protocol (the ``StreamReaderProtocol`` of the start-up phase)
informed of everything but data — flow control, end of file, connection lost — so the server's
``StreamWriter`` still drains and closes as before; :meth:`Relay.run` puts the original protocols back when
the relay ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from . import messages as m
from .codec import encode
from .connection import Hold, ProxyConnection
from .errors import ProtocolViolation

__all__ = ["Relay"]

_CLIENT, _UPSTREAM = 0, 1
_BACKLOG_MAX = 1 << 20  # client bytes kept while a statement is held; past this the client's reading pauses
_CUT_CANCEL_TIMEOUT = 30.0  # seconds to wait for the server to confirm the cancel of a cut statement


class _Side(asyncio.Protocol):
    """Data to the relay; flow control, EOF and loss to the relay and to the original protocol."""

    __slots__ = ("orig", "relay", "side")

    def __init__(self, relay: Relay, side: int, orig: Any) -> None:
        self.relay = relay
        self.side = side
        self.orig = orig

    def data_received(self, data: bytes) -> None:
        if self.side == _CLIENT:
            self.relay.client_data(data)
        else:
            self.relay.upstream_data(data)

    def eof_received(self) -> bool | None:
        keep = None
        with contextlib.suppress(Exception):
            keep = self.orig.eof_received()
        self.relay.eof(self.side)
        return keep

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.ended(self.side, exc)
        with contextlib.suppress(Exception):
            self.orig.connection_lost(exc)

    def pause_writing(self) -> None:
        with contextlib.suppress(Exception):
            self.orig.pause_writing()
        self.relay.write_paused(self.side, True)

    def resume_writing(self) -> None:
        with contextlib.suppress(Exception):
            self.orig.resume_writing()
        self.relay.write_paused(self.side, False)


class Relay:
    """One session's relay (see the module docstring). :meth:`run` returns why it ended: ``client_gone``,
    ``upstream_gone``, ``terminated``, ``fatal``, ``idle`` or ``violation`` (then :attr:`error` says what)."""

    def __init__(self, conn: ProxyConnection, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter,
                 ureader: asyncio.StreamReader, uwriter: asyncio.StreamWriter, *,
                 approve: Callable[[Hold], Awaitable[list | None]],
                 cancel_upstream: Callable[..., Awaitable[bool]],
                 withdraw: Callable[[str], None],
                 idle_timeout: float | None, probe: bytes = b"") -> None:
        self.conn = conn
        self._readers = (creader, ureader)
        self._ct = cwriter.transport
        self._ut = uwriter.transport
        self._approve = approve
        self._cancel_upstream = cancel_upstream
        self._withdraw = withdraw
        self._probe = probe  # an asynchronous message a client always accepts (see eof)
        self._client_eof = False  # the client half-closed: replies of what it sent still go to it
        self._idle = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[str] = self._loop.create_future()
        self.error: ProtocolViolation | None = None
        self._holding: asyncio.Task | None = None
        self._backlog: list[bytes] = []  # client bytes that arrived while a statement was held
        self._backlogged = 0
        # why each side's reading is paused: the other side cannot take bytes, or (client) a hold
        self._blocked = [False, False]
        self._held_pause = False
        self._reading = [True, True]
        self._last = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()

    # ---- lifecycle --------------------------------------------------------------------------------

    async def run(self) -> str:
        cproto, uproto = self._ct.get_protocol(), self._ut.get_protocol()
        leftovers = []
        for reader in self._readers:
            buffered = bytes(reader._buffer)  # read past the start-up already: handled first
            reader._buffer.clear()
            leftovers.append(buffered)
        self._ct.set_protocol(_Side(self, _CLIENT, cproto))
        self._ut.set_protocol(_Side(self, _UPSTREAM, uproto))
        for reader, transport in zip(self._readers, (self._ct, self._ut), strict=True):
            if getattr(reader, "_paused", False):  # the start-up's reader had stopped reading: go on
                reader._paused = False
                transport.resume_reading()
        if self._idle:
            self._timer = self._loop.call_later(self._idle, self._idle_check)
        try:
            if leftovers[1]:
                self.upstream_data(leftovers[1])
            if leftovers[0]:
                self.client_data(leftovers[0])
            for reader, side in zip(self._readers, (_CLIENT, _UPSTREAM), strict=True):
                if reader.at_eof() or reader.exception() is not None:
                    self.ended(side, reader.exception())
            return await self._done
        finally:
            if self._timer is not None:
                self._timer.cancel()
            holding = self._holding
            if holding is not None and not holding.done():
                # the session ends while a statement waits for approval (the client left, upstream went,
                # the proxy stops): the request is withdrawn, not left for an approver to release
                reason = "the session ended"
                if self._done.done() and not self._done.cancelled() and self._done.exception() is None:
                    reason = {"client_gone": "the client disconnected",
                              "upstream_gone": "the connection to the target was lost"}.get(
                                  self._done.result(), reason)
                self._withdraw(reason)
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(holding), 10)
            tasks = [*self._tasks, *((holding,) if holding is not None else ())]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            # the start-up's protocols take over again: final messages, Terminate, close
            for transport, proto in ((self._ct, cproto), (self._ut, uproto)):
                if not transport.is_closing():
                    transport.set_protocol(proto)
                    with contextlib.suppress(Exception):
                        transport.resume_reading()

    def _finish(self, reason: str, error: ProtocolViolation | None = None) -> None:
        if not self._done.done():
            self.error = error
            self._done.set_result(reason)

    def _fail(self, exc: BaseException, side: int) -> None:
        if isinstance(exc, ProtocolViolation):
            self._finish("violation", exc)
        elif isinstance(exc, ConnectionError | OSError):
            self._finish("client_gone" if side == _CLIENT else "upstream_gone")
        elif not self._done.done():
            self._done.set_exception(exc)

    def eof(self, side: int) -> None:
        """End of the stream from ``side``. A client that half-closes (``shutdown(SHUT_WR)``) with replies
        outstanding still gets them, as from PostgreSQL; one that closed for good is told apart by the
        probe sent to it now (its RST ends the relay through ``connection_lost``, and upstream is
        cancelled then). A statement held for approval is withdrawn either way."""
        if self._done.done():
            return
        if side == _CLIENT and self.conn.busy and self._holding is None:
            try:
                self.conn.client_eof()
            except BaseException as err:
                self._fail(err, _CLIENT)
                return
            self._client_eof = True
            if self._probe:
                with contextlib.suppress(Exception):
                    self._ct.write(self._probe)
            return
        self.ended(side, None)

    def ended(self, side: int, exc: Exception | None) -> None:
        if self._done.done():
            return
        if side == _CLIENT:
            try:
                self.conn.client_eof()
            except BaseException as err:  # a message cut short by the end of the stream
                self._fail(err, _CLIENT)
                return
            self._finish("client_gone")
        else:
            self._finish("upstream_gone")

    # ---- data -------------------------------------------------------------------------------------

    def client_data(self, data: bytes) -> None:
        if self._done.done() or self._client_eof:
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Client bytes into the connection (or the backlog while it cannot take them)."""
        self._last = self._loop.time()
        if self._holding is not None or self.conn.cutting:
            # held statement, or the client's messages wait behind a cut one: kept here, bounded
            self._backlog.append(data)
            self._backlogged += len(data)
            if self._backlogged > _BACKLOG_MAX:
                self._held_pause = True  # enough kept: the rest waits in the socket
                self._set_reading(_CLIENT)
            return
        try:
            self.conn.client_data(data)
            self._settle()
        except BaseException as exc:
            self._fail(exc, _CLIENT)

    def _settle(self) -> None:
        """After the connection handled client messages (from the client, or let go behind a cut statement):
        write what it produced, start a hold, or end the session."""
        conn = self.conn
        self._flush()
        if conn.held is not None:
            if self._holding is None:
                self._start_hold()
        elif conn.terminated:
            self._finish("terminated")
        elif conn.fatal is not None:
            self._finish("fatal")
        elif self._backlog and self._holding is None and not conn.cutting:
            self._resume_backlog()

    def _resume_backlog(self) -> None:
        """Client bytes kept while the connection could not take them go in now, until it cannot again."""
        backlog, self._backlog = self._backlog, []
        self._backlogged = 0
        for i, data in enumerate(backlog):
            self._feed(data)  # bytes that came before any end of the stream
            if self._holding is not None or self.conn.cutting or self._done.done():
                self._backlog[:0] = backlog[i + 1:]  # blocked again: the rest waits
                self._backlogged = sum(len(b) for b in self._backlog)
                break
        if not self._done.done() and self._held_pause and self._holding is None and not self.conn.cutting:
            self._held_pause = False
            self._set_reading(_CLIENT)

    def upstream_data(self, data: bytes) -> None:
        if self._done.done():
            return
        conn = self.conn
        try:
            conn.upstream_data(data)
            if conn.want_cancel:
                conn.want_cancel = False
                # Cancel only while the withheld exchange still runs, and before the client can see its
                # ReadyForQuery: a cancel landing later would hit the client's next query. A statement cut
                # at max_rows holds the client's next messages back until the cancel is delivered.
                if conn.cutting:
                    self._spawn(self._cancel_cut())
                elif conn.withholding:
                    self._spawn(self._cancel_upstream())
            self._settle()  # the client's messages held behind a cut statement may have gone
        except BaseException as exc:
            self._fail(exc, _UPSTREAM)
            return
        if self._done.done():
            return
        self._end_if_answered()

    def _flush(self) -> None:
        conn = self.conn
        out = conn.to_upstream
        if out:
            data = b"".join(out) if len(out) > 1 else out[0]
            out.clear()
            self._ut.write(data)
        self._flush_client()

    def _flush_client(self) -> None:
        out = self.conn.to_client
        if out:
            data = b"".join(out) if len(out) > 1 else out[0]
            out.clear()
            self._ct.write(data)

    async def _cancel_cut(self) -> None:
        delivered = False
        try:
            delivered = bool(await self._cancel_upstream(_CUT_CANCEL_TIMEOUT))
        finally:
            if not self._done.done():
                self._after_cut_cancel(delivered)

    def _after_cut_cancel(self, delivered: bool) -> None:
        if not delivered:
            # a cancel not known to be delivered may still land, on whatever runs next: the client's next
            # statement must never run in this session
            self.conn.to_client.append(encode(m.error(
                "FATAL", "08006", "pgwarden: the cancel of a result cut at max_rows could not be confirmed; the "
                "session ends so that it cannot cancel a later statement", hint="reconnect")))
            self._flush_client()
            self._finish("cancel_unconfirmed")
            return
        try:
            self.conn.cancel_sent()
            self._settle()
        except BaseException as exc:
            self._fail(exc, _CLIENT)
            return
        self._end_if_answered()

    def _end_if_answered(self) -> None:
        """A half-closed client's session ends once every reply of what it sent is out: nothing outstanding
        upstream, and nothing of its own still kept — behind a cut statement whose cancel is not confirmed
        yet, or in the backlog (the cut's ReadyForQuery may come before the cancel's confirmation)."""
        if (self._client_eof and not self._done.done() and not self.conn.busy and not self.conn.cutting
                and not self._backlog and self._holding is None):
            self._finish("client_gone")

    # ---- approvals --------------------------------------------------------------------------------

    def _start_hold(self) -> None:
        # the client's reading goes on (up to _BACKLOG_MAX kept), so a client that leaves is seen at once
        self._holding = self._loop.create_task(self._hold())

    async def _hold(self) -> None:
        conn = self.conn
        try:
            while conn.held is not None:
                self._flush()
                replies = await self._approve(conn.held)
                if replies is None:
                    self._finish("client_gone")
                    return
                if self._done.done():
                    return  # the session ended meanwhile
                conn.finish_hold(replies)
            self._flush()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fail(exc, _CLIENT)
            return
        self._holding = None
        self._resume_backlog()
        if self._holding is None and not self._done.done():
            if self.conn.terminated:
                self._finish("terminated")
            elif self.conn.fatal is not None:
                self._finish("fatal")

    # ---- flow control and timers ------------------------------------------------------------------

    def write_paused(self, side: int, paused: bool) -> None:
        """``side``'s transport stopped (or started again) taking bytes: the other side's reading follows."""
        other = _UPSTREAM if side == _CLIENT else _CLIENT
        self._blocked[other] = paused
        self._set_reading(other)

    def _set_reading(self, side: int) -> None:
        want = not self._blocked[side] and not (side == _CLIENT and self._held_pause)
        if want == self._reading[side]:
            return
        self._reading[side] = want
        transport = self._ct if side == _CLIENT else self._ut
        with contextlib.suppress(Exception):
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _idle_check(self) -> None:
        assert self._idle is not None
        left = self._last + self._idle - self._loop.time()
        if left > 0 or self.conn.busy or self._holding is not None:
            self._timer = self._loop.call_later(max(left, self._idle / 10), self._idle_check)
            return
        self._timer = None
        self._finish("idle")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
