"""The reply queue with the message sequences real clients send: psycopg pipeline mode, asyncpg
prepare/bind/execute, pgbench -M extended / prepared, errors mid-pipeline, Flush without Sync, COPY,
injected statements, and policy refusals answered the way PostgreSQL answers its own errors."""

from __future__ import annotations

import pytest

from pgwarden.wire_proxy import _queue
from pgwarden.wire_proxy import messages as m
from pgwarden.wire_proxy.errors import UnexpectedReply

DENIED = m.error("ERROR", "42501", "pgwarden: statement denied by policy")


def client(q: _queue.ReplyQueue, kinds: str) -> list[_queue.ClientStep]:
    return [q.client_message(ord(k)) for k in kinds]


def backend(q: _queue.ReplyQueue, tokens: str) -> list[_queue.BackendStep]:
    """``tokens``: space-separated type bytes; ``ZI`` / ``ZT`` / ``ZE`` is ReadyForQuery with that status."""
    out = []
    for tok in tokens.split():
        kind = ord(tok[0])
        body = tok[1:].encode() if tok[0] == "Z" and len(tok) > 1 else None
        out.append(q.backend_message(kind, body))
    return out


def forwarded(steps) -> list[bool]:
    return [s.forward for s in steps]


def in_transaction() -> _queue.ReplyQueue:
    q = _queue.ReplyQueue()
    client(q, "Q")
    backend(q, "C ZT")  # BEGIN
    assert q.status == b"T"
    return q


# ---- clients that behave ---------------------------------------------------------------------------


def test_psycopg_pipeline_mode():
    # three statements in one pipeline, one Sync at the end (Parse/Bind/Describe portal/Execute each)
    q = _queue.ReplyQueue()
    assert all(step.forward for step in client(q, "PBDE" * 3 + "S"))
    steps = backend(q, "1 2 T D D C  1 2 n C  1 2 T C  ZI")
    assert all(forwarded(steps)) and not any(s.emit for s in steps)
    assert len(q) == 0 and q.status == b"I" and not q.skipping


def test_asyncpg_prepare_then_bind_execute():
    q = _queue.ReplyQueue()
    client(q, "PDS")  # Parse named, Describe statement, Sync
    assert all(forwarded(backend(q, "1 t T ZI")))
    client(q, "BES")
    assert all(forwarded(backend(q, "2 D D D C ZI")))
    assert len(q) == 0


def test_pgbench_extended_and_prepared():
    q = _queue.ReplyQueue()
    for _ in range(3):  # -M extended: PQexecParams = Parse, Bind, Describe P, Execute, Sync
        client(q, "PBDES")
        assert all(forwarded(backend(q, "1 2 T D C ZI")))
    client(q, "PS")  # -M prepared: PQprepare once
    backend(q, "1 ZI")
    for _ in range(3):  # then PQexecPrepared
        client(q, "BDES")
        assert all(forwarded(backend(q, "2 T D C ZI")))
    assert len(q) == 0


def test_flush_without_sync_gets_replies_as_they_come():
    q = _queue.ReplyQueue()
    client(q, "PDH")  # Parse, Describe statement, Flush: the client waits without a Sync
    assert q.expecting == (("P", _queue.Origin.CLIENT), ("D", _queue.Origin.CLIENT))
    assert all(forwarded(backend(q, "1 t n")))
    assert len(q) == 0
    client(q, "BEH")
    backend(q, "2 C")
    client(q, "S")
    backend(q, "ZI")
    assert len(q) == 0


def test_portal_suspended_and_resumed():
    q = _queue.ReplyQueue()
    client(q, "PBEH")  # Execute with max_rows
    backend(q, "1 2 D D s")
    client(q, "EH")
    backend(q, "D C")
    client(q, "CS")
    assert all(forwarded(backend(q, "3 ZI")))


def test_simple_query_with_several_statements_and_an_error():
    q = _queue.ReplyQueue()
    client(q, "Q")
    assert all(forwarded(backend(q, "T D C T D D C I ZI")))
    client(q, "Q")
    assert all(forwarded(backend(q, "C E ZE")))  # the error does not end a simple Query
    assert q.status == b"E"
    assert not q.skipping


def test_async_messages_are_forwarded_anywhere():
    q = _queue.ReplyQueue()
    assert forwarded(backend(q, "N S A")) == [True, True, True]  # even with nothing outstanding
    client(q, "Q")
    assert forwarded(backend(q, "N T S D A C ZI")) == [True] * 7


def test_copy_in_and_out():
    q = _queue.ReplyQueue()
    client(q, "Q")  # COPY t FROM STDIN
    backend(q, "G")
    assert all(step.forward for step in client(q, "dddc"))  # client copy data: no replies of its own
    assert q.expecting == (("Q", _queue.Origin.CLIENT),)
    assert all(forwarded(backend(q, "C ZI")))
    client(q, "Q")  # COPY t TO STDOUT
    assert all(forwarded(backend(q, "H d d c C ZI")))
    client(q, "PBES")  # COPY through the extended protocol
    assert all(forwarded(backend(q, "1 2 H d d c C ZI")))
    client(q, "PBES")  # COPY FROM STDIN through the extended protocol, failed by the client
    backend(q, "1 2 G")
    client(q, "df")
    assert all(forwarded(backend(q, "E ZI")))
    assert len(q) == 0


def test_function_call():
    q = _queue.ReplyQueue()
    client(q, "F")
    assert all(forwarded(backend(q, "V ZI")))


def test_error_at_sync_commit_is_forwarded():
    q = _queue.ReplyQueue()
    client(q, "PBES")
    assert all(forwarded(backend(q, "1 2 C E ZI")))  # a deferred constraint fails at the implicit commit


# ---- errors from upstream -----------------------------------------------------------------------------


def test_error_mid_pipeline_skips_to_sync():
    q = _queue.ReplyQueue()
    client(q, "PBDE" * 3 + "S")
    steps = backend(q, "1 2 T D C  1 E")  # second Bind fails: the server skips the rest until Sync
    assert all(forwarded(steps))
    assert q.expecting == (("S", _queue.Origin.CLIENT),)
    assert not q.skipping  # the client already sent its Sync
    backend(q, "ZI")
    assert len(q) == 0
    client(q, "Q")  # business as usual afterwards
    backend(q, "C ZI")


def test_error_before_the_client_sent_sync_discards_until_sync():
    q = _queue.ReplyQueue()
    client(q, "PBEH")
    backend(q, "1 E")  # Bind failed; no Sync in flight
    assert q.skipping
    assert q.discarding(ord("P")) and not q.discarding(ord("S"))
    assert [s.forward for s in client(q, "PBEQ")] == [False] * 4  # PostgreSQL ignores them, so do we
    assert client(q, "S") == [_queue.FORWARD]
    assert not q.skipping
    assert all(forwarded(backend(q, "ZI")))
    assert len(q) == 0


def test_fatal_with_nothing_outstanding_reaches_the_client():
    q = _queue.ReplyQueue()
    assert backend(q, "E")[0].forward


def test_unexpected_replies_end_the_session():
    with pytest.raises(UnexpectedReply):
        _queue.ReplyQueue().backend_message(ord("1"))
    q = _queue.ReplyQueue()
    client(q, "PS")
    with pytest.raises(UnexpectedReply):
        q.backend_message(ord("2"))  # BindComplete for a Parse
    q = _queue.ReplyQueue()
    client(q, "BS")
    with pytest.raises(UnexpectedReply):
        q.backend_message(ord("D"))  # a DataRow for a Bind
    with pytest.raises(ValueError):
        q.client_message(ord("Z"))


# ---- injected messages ----------------------------------------------------------------------------------


def test_injected_statements_are_invisible_to_the_client():
    q = _queue.ReplyQueue()
    q.inject(ord("Q"))  # e.g. SET statement_timeout = ... pinned by policy
    steps = backend(q, "S N C ZI")
    assert forwarded(steps) == [False, False, False, False]
    client(q, "Q")
    q.inject(ord("Q"))  # queued behind the client's statement
    assert forwarded(backend(q, "T D C ZI  C ZI")) == [True] * 4 + [False] * 2
    assert len(q) == 0


def test_injected_extended_messages_and_notifications():
    q = _queue.ReplyQueue()
    for k in "PBES":
        q.inject(ord(k))
    steps = backend(q, "1 2 A S C ZI")
    assert forwarded(steps) == [False, False, True, False, False, False]  # NOTIFY always reaches the client


def test_injected_error_is_flagged():
    q = _queue.ReplyQueue()
    q.inject(ord("Q"))
    step = q.backend_message(ord("E"))
    assert not step.forward and step.injected_error
    assert not q.backend_message(ord("Z"), b"I").forward


# ---- refusals ------------------------------------------------------------------------------------------------


def test_refusal_when_idle_is_answered_by_the_proxy_alone():
    q = _queue.ReplyQueue()
    step = q.refuse(ord("P"), DENIED)
    assert step == _queue.ClientStep(False, emit=(DENIED,))
    assert q.skipping and len(q) == 0
    assert [s.forward for s in client(q, "BDE")] == [False, False, False]
    assert q.refuse(ord("E"), DENIED) == _queue.DISCARD  # would have been skipped unread
    sync = q.client_message(ord("S"))
    assert sync == _queue.ClientStep(False, emit=(m.ReadyForQuery(b"I"),))
    assert not q.skipping
    client(q, "Q")  # the session goes on
    assert all(forwarded(backend(q, "C ZI")))


def test_refusal_in_failed_transaction_keeps_status_e():
    q = _queue.ReplyQueue()
    client(q, "Q")
    backend(q, "E ZE")
    assert q.refuse(ord("Q"), DENIED) == _queue.ClientStep(False, emit=(DENIED, m.ReadyForQuery(b"E")))
    q.refuse(ord("B"), DENIED)
    assert q.client_message(ord("S")).emit == (m.ReadyForQuery(b"E"),)


def test_refused_simple_query_when_idle():
    q = _queue.ReplyQueue()
    assert q.refuse(ord("Q"), DENIED) == _queue.ClientStep(False, emit=(DENIED, m.ReadyForQuery(b"I")))
    assert not q.skipping


def test_refusal_inside_transaction_block_probes_upstream():
    q = in_transaction()
    step = q.refuse(ord("P"), DENIED)
    assert not step.forward and not step.emit
    assert step.inject == (m.Close("S", _queue.PROBE_STATEMENT), m.Describe("S", _queue.PROBE_STATEMENT))
    assert [s.forward for s in client(q, "BDE")] == [False] * 3
    assert client(q, "S") == [_queue.FORWARD]
    close, err, ready = backend(q, "3 E ZE")
    assert not close.forward and not close.emit
    assert not err.forward and err.emit == (DENIED,)  # the server's error swapped for the refusal
    assert ready.forward  # the server's own ReadyForQuery: status E, as after a real error
    assert q.status == b"E" and len(q) == 0


def test_refusal_mid_pipeline_after_forwarded_messages():
    # psycopg pipeline: the first statement runs, the second is denied at Parse: an implicit transaction
    # is open upstream, so only a real error there rolls the first back, as PostgreSQL would.
    q = _queue.ReplyQueue()
    client(q, "PBDE")
    step = q.refuse(ord("P"), DENIED)
    assert len(step.inject) == 2
    client(q, "BDE" + "PBDE")  # the rest of the pipeline: discarded until Sync
    client(q, "S")
    steps = backend(q, "1 2 T D C  3 E  ZI")
    assert forwarded(steps) == [True] * 5 + [False, False, True]
    assert steps[6].emit == (DENIED,)
    assert len(q) == 0 and not q.skipping


def test_refusal_behind_an_upstream_error_is_never_shown():
    # PostgreSQL would have skipped the refused message: the client sees only the earlier real error.
    q = _queue.ReplyQueue()
    client(q, "PBE")
    q.refuse(ord("P"), DENIED)
    client(q, "S")
    steps = backend(q, "1 E ZI")  # the Bind fails upstream; the probe is skipped by the server
    assert forwarded(steps) == [True, True, True]
    assert not any(s.emit for s in steps)
    assert len(q) == 0


def test_refused_simple_query_inside_transaction_probes_with_a_failing_query():
    q = in_transaction()
    step = q.refuse(ord("Q"), DENIED)
    assert step.inject == (m.Query(_queue.PROBE_SQL),)
    err, ready = backend(q, "E ZE")
    assert not err.forward and err.emit == (DENIED,)
    assert ready.forward and q.status == b"E"


def test_refusal_while_earlier_pipeline_awaits_ready_uses_the_probe():
    q = _queue.ReplyQueue()
    client(q, "Q")  # could be BEGIN: the status after it is unknown until its ReadyForQuery
    assert q.refuse(ord("Q"), DENIED).inject == (m.Query(_queue.PROBE_SQL),)
    steps = backend(q, "C ZT E ZE")
    assert forwarded(steps) == [True, True, False, True]
    assert steps[2].emit == (DENIED,)


def test_unknown_status_uses_the_probe():
    q = _queue.ReplyQueue()
    client(q, "S")
    backend(q, "Z")  # the relay did not pass the status byte
    assert q.status is None
    assert q.refuse(ord("B"), DENIED).inject


def test_a_probe_that_succeeds_ends_the_session():
    q = in_transaction()
    q.refuse(ord("Q"), DENIED)
    with pytest.raises(UnexpectedReply):
        q.backend_message(ord("C"))
    q = in_transaction()
    q.refuse(ord("D"), DENIED)
    q.backend_message(ord("3"))
    with pytest.raises(UnexpectedReply):
        q.backend_message(ord("t"))


@pytest.mark.parametrize("kind", "SHXdcf")
def test_only_statement_messages_can_be_refused(kind):
    with pytest.raises(ValueError):
        _queue.ReplyQueue().refuse(ord(kind), DENIED)


def test_flush_then_refusal_then_sync():
    # asyncpg style: Parse + Describe + Flush forwarded and answered, then the Bind is refused
    q = _queue.ReplyQueue()
    client(q, "PDH")
    backend(q, "1 t T")
    step = q.refuse(ord("B"), DENIED)
    assert step.inject  # the Parse opened an implicit transaction upstream: probe
    client(q, "ES")
    steps = backend(q, "3 E ZI")
    assert steps[1].emit == (DENIED,) and steps[2].forward
