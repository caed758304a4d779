"""The local journal: append-only JSONL, hash-chained, with Ed25519-signed checkpoints.

:class:`Journal` appends records (format in :mod:`pgwarden.audit._records`) to
``journal-NNNNNN.jsonl`` files in one directory. Each record carries the hash of the one before, across
file boundaries: a ``rotate`` record at the end of a full file names the next file, whose first record
continues the chain. Every ``checkpoint_every`` records, every ``checkpoint_interval_s`` while records
arrive, and on a clean close, a ``checkpoint`` record signs ``(covers_seq, head, file, key id, time)``
and the *signed head* sidecar ``journal.head`` is replaced atomically with the checkpoint's own seq and
hash, signed too. ``journal.pub`` beside the journal holds the public key.

Durability: with ``fsync="each"`` a record is on stable storage (``fdatasync``) before :meth:`append`
returns — the recorder's ``with`` block returns only after that, so the engine releases a result only once
its record survives a power loss. With ``fsync="batch"`` a record is handed to the kernel before
:meth:`append` returns (it survives the process being killed) but reaches the disk at most
``fsync_batch_interval_ms`` later: a kernel crash or power loss can lose that much of the tail.

Crash safety: a record is written with one ``write`` of a whole line. A process killed mid-write leaves a
last line without its newline: a *torn tail*. On start, :meth:`open` moves the torn bytes to
``<file>.torn-<offset>``, cuts them from the file and writes a ``recovered`` checkpoint naming them, so
the chain continues from the last complete record. A complete last line that does not verify is not a
crash artefact: the journal refuses to open (fail closed) and says to run ``pgwarden audit verify``.

What verify can and cannot detect is documented in :mod:`pgwarden.audit.verify`.

:class:`JournalSpanProcessor` writes each ending span synchronously in ``on_end`` (never the batching an
exporter would get) and keeps a failure for the recorder to raise; :class:`JournalSpanExporter` is the same
journal as a standard ``SpanExporter``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from pgwarden.errors import UnavailableError

from . import _keys
from ._records import (
    GENESIS,
    HEAD_FILE,
    checkpoint_payload,
    encode_record,
    file_name,
    file_number,
    head_payload,
    json_value,
    now_iso,
    record_hash,
)
from .config import AuditSettings

__all__ = ["Journal", "JournalSpanExporter", "JournalSpanProcessor", "JournalUnavailable", "span_body"]

_log = logging.getLogger(__name__)
_fdatasync = getattr(os, "fdatasync", os.fsync)


class JournalUnavailable(UnavailableError):
    """The audit record could not be made durable, so the statement's result must not be released."""

    sqlstate = "58030"  # io_error

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(
            "journal_unavailable",
            message,
            hint=hint or "check that the journal directory exists, is writable and has space; "
            "pgwarden audit verify checks what is there",
        )


def span_body(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as the body of a journal record (I-JSON; nanosecond times as decimal strings)."""
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "kind": span.kind.name,
        "start_ns": str(span.start_time),
        "end_ns": str(span.end_time),
        "status": {"code": span.status.status_code.name, "description": span.status.description},
        "attributes": json_value(dict(span.attributes or {})),
        "events": [
            {"name": e.name, "time_ns": str(e.timestamp), "attributes": json_value(dict(e.attributes or {}))}
            for e in span.events
        ],
        "links": [
            {"trace_id": format(link.context.trace_id, "032x"), "span_id": format(link.context.span_id, "016x")}
            for link in span.links
        ],
        "service": (span.resource.attributes.get("service.name") if span.resource else None),
    }


def _tail(path: Path) -> tuple[bytes | None, int, bytes]:
    """(last complete line without newline or None, offset just past it, bytes after it)."""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        pos, buf = size, b""
        while True:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            end = buf.rfind(b"\n")
            if end == -1:
                if pos == 0:
                    return None, 0, buf
                continue
            start = buf.rfind(b"\n", 0, end)
            if start != -1 or pos == 0:
                return buf[start + 1 : end], pos + end + 1, buf[end + 1 :]


# Journal format 2: every start writes a signed ``opened`` checkpoint first (``recovered`` when it finds a torn
# or unsealed end), and ``close`` checkpoints say ``format: 2``. So the head exists from the first record, and
# anything that follows a format-2 close other than a start's checkpoint was not written by a gateway.
JOURNAL_FORMAT = 2
START_REASONS = frozenset({"opened", "recovered"})


def _last_checkpoint(files: list[Path]) -> dict[str, Any] | None:
    """The body of the journal's last checkpoint (reading back from the end), or None."""
    for path in reversed(files):
        for raw in reversed(path.read_bytes().split(b"\n")):
            if not raw:
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("kind") == "checkpoint" and isinstance(record.get("body"), dict):
                return record["body"]
    return None


class Journal:
    """Appends hash-chained records to the journal directory; thread-safe."""

    def __init__(
        self,
        directory: Path,
        signing_key: Ed25519PrivateKey | Path,
        *,
        fsync: str = "each",
        fsync_batch_interval_ms: int = 50,
        rotate_bytes: int = 64 * 1024 * 1024,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 60.0,
    ) -> None:
        self.directory = Path(directory)
        self._key_source = signing_key
        self._key: Ed25519PrivateKey | None = signing_key if isinstance(signing_key, Ed25519PrivateKey) else None
        self._key_id = ""
        self._each = fsync == "each"
        self._batch_s = fsync_batch_interval_ms / 1000
        self._rotate_bytes = rotate_bytes
        self._checkpoint_every = checkpoint_every
        self._checkpoint_s = checkpoint_interval_s
        self._lock = threading.RLock()
        self._fd: int | None = None
        self._lock_fd: int | None = None  # flock on journal.lock: one writing process per directory
        self._file = ""
        self._size = 0
        self.seq = 0
        self.head = GENESIS
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._last_sync = time.monotonic()
        self._dirty = False
        self._dirty_since = 0.0
        self._inflight = False
        self._last_kind = ""
        self._last_reason = ""
        self._closed = False
        self._broken: str | None = None
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> Journal:
        return cls(
            settings.journal_dir,
            settings.key_path(),
            fsync=settings.fsync,
            fsync_batch_interval_ms=settings.fsync_batch_interval_ms,
            rotate_bytes=settings.rotate_bytes,
            checkpoint_every=settings.checkpoint_every,
            checkpoint_interval_s=settings.checkpoint_interval_s,
        )

    # -- state -------------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    @property
    def healthy(self) -> bool:
        """False once a write failed (until a later one succeeds) or while the journal cannot be opened."""
        return self._broken is None

    @property
    def file(self) -> str:
        return self._file

    # -- opening and recovery ----------------------------------------------------------------------

    def _take_directory_lock(self) -> None:
        # One writer per journal directory: two processes appending to one chain would fork it (two
        # records with the same seq and prev), which verify would then call tampering.
        if self._lock_fd is not None:
            return
        fd = os.open(self.directory / "journal.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # A POSIX record lock belongs to the process: another process is refused, while this
            # process may open the directory again (after a writer of its own was abandoned).
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise JournalUnavailable(
                f"the journal in {self.directory} is being written by another process; give each gateway "
                "process its own audit.journal_dir") from None
        self._lock_fd = fd

    def open(self) -> None:
        """Open (creating or recovering) the journal; idempotent. Raises :class:`JournalUnavailable`."""
        with self._lock:
            if self._fd is not None:
                return
            if self._closed:
                raise JournalUnavailable("the journal was closed")
            try:
                self._open()
            except JournalUnavailable as exc:
                self._abandon_open()
                self._broken = exc.message
                raise
            except (OSError, ValueError) as exc:
                self._abandon_open()
                self._broken = str(exc)
                raise JournalUnavailable(f"cannot open the journal in {self.directory}: {exc}") from exc
            self._broken = None
            if self._thread is None:
                self._thread = threading.Thread(target=self._background, name="pgwarden-journal", daemon=True)
                self._thread.start()

    def _abandon_open(self) -> None:
        # An open that failed part way (its start checkpoint not written) leaves no file open: the next
        # append opens again and writes that checkpoint first, so no record can follow a close without it.
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._take_directory_lock()
        if self._key is None:
            assert isinstance(self._key_source, Path)
            self._key = _keys.load_or_create_private_key(self._key_source)
        public = self._key.public_key()
        self._key_id = _keys.key_id(public)
        _keys.export_public_key(self.directory, public)
        files = sorted(
            (n, p) for p in self.directory.iterdir() if (n := file_number(p.name)) is not None and not p.is_dir()
        )
        torn_info: dict[str, Any] | None = None
        last: dict[str, Any] | None = None
        current: Path | None = None
        for index in range(len(files) - 1, -1, -1):
            path = files[index][1]
            line, end, torn = _tail(path)
            if torn and index == len(files) - 1:
                torn_info = self._set_aside(path, end, torn)
            if line is None:
                continue
            try:
                record = json.loads(line)
                ok = record.get("hash") == record_hash(record)
            except (ValueError, AttributeError, TypeError):
                ok = False
            if not ok:
                raise JournalUnavailable(
                    f"the last record of {path.name} does not verify: the journal was altered or damaged",
                    hint="run pgwarden audit verify, then move the journal directory aside to start a new one",
                )
            last, current = record, path
            break
        self._check_signed_head(last)
        if last is None:
            number = files[-1][0] if files else 1
            self._start_file(file_name(number), create=not files)
            self._checkpoint("opened", extra={"format": JOURNAL_FORMAT})  # the signed head exists from now on
        else:
            self.seq, self.head = int(last["seq"]), str(last["hash"])
            self._last_kind = last["kind"]
            self._last_reason = last["body"].get("reason", "") if last["kind"] == "checkpoint" else ""
            assert current is not None
            if last["kind"] == "rotate":
                self._start_file(str(last["body"]["next"]), create=not (self.directory / last["body"]["next"]).exists())
            else:
                # Continue in the newest file, even if the last record sits in an older one (an empty file
                # left by a crash during rotation is reused).
                self._start_file(files[-1][1].name, create=False)
        if last is None:
            return
        if not self._is_sealed():
            found = _last_checkpoint([p for _, p in files])
            if found is not None and found.get("reason") == "close" and found.get("format", 1) >= JOURNAL_FORMAT:
                # a gateway's next start writes its checkpoint right after a close: these records did not
                # come from one, and signing over them in a "recovered" checkpoint would launder them
                raise JournalUnavailable(
                    f"records follow the close checkpoint of the journal in {self.directory} that no gateway "
                    "start wrote: they were appended from outside",
                    hint="run pgwarden audit verify, keep the directory as evidence, and start a new journal "
                    "in another one")
        if torn_info is not None or not self._is_sealed():
            self._checkpoint("recovered", extra={"torn": torn_info, "format": JOURNAL_FORMAT} if torn_info
                             else {"format": JOURNAL_FORMAT})
        else:
            self._checkpoint("opened", extra={"format": JOURNAL_FORMAT})

    def _is_sealed(self) -> bool:
        return self._last_kind == "checkpoint" and self._last_reason == "close"

    def _check_signed_head(self, last: Mapping[str, Any] | None) -> None:
        path = self.directory / HEAD_FILE
        try:
            head = json.loads(path.read_bytes())
        except FileNotFoundError:
            return
        except ValueError as exc:
            raise JournalUnavailable(f"{path} is not valid JSON: {exc}") from exc
        seq = int(head.get("seq", 0))
        last_seq = int(last["seq"]) if last else 0
        if seq > last_seq or (seq == last_seq and last is not None and head.get("hash") != last["hash"]):
            raise JournalUnavailable(
                f"the journal ends at seq {last_seq} but its signed head names seq {seq}: records were removed",
                hint="run pgwarden audit verify; do not start a new chain over a truncated journal",
            )

    def _set_aside(self, path: Path, end: int, torn: bytes) -> dict[str, Any]:
        aside = path.with_name(f"{path.name}.torn-{end}")
        aside.write_bytes(torn)
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, end)
            os.fsync(fd)
        finally:
            os.close(fd)
        _log.warning("journal %s had a torn last line (%d bytes), kept in %s", path.name, len(torn), aside.name)
        return {
            "file": path.name,
            "offset": end,
            "bytes": len(torn),
            "sha256": hashlib.sha256(torn).hexdigest(),
            "saved_as": aside.name,
        }

    def _start_file(self, name: str, *, create: bool) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        path = self.directory / name
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_EXCL if create else 0)
        self._fd = os.open(path, flags, 0o600)
        self._file = name
        self._size = os.fstat(self._fd).st_size
        if create:
            self._sync_directory()

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- appending ---------------------------------------------------------------------------------

    def append(self, kind: str, body: Mapping[str, Any], *, ready: bool = False) -> tuple[int, str]:
        """Append one record; durable per the fsync mode when this returns. Returns (seq, hash).

        ``ready``: ``body`` came from ``_records.ready_value`` (see ``encode_record``); raises
        ``NotCanonical`` (nothing written) when it cannot be encoded that way."""
        with self._lock:
            if self._fd is None:
                self.open()
            try:
                seq, digest = self._append(kind, body, None, ready)
                if kind == "span":
                    self._since_checkpoint = count = self._since_checkpoint + 1
                    if count >= self._checkpoint_every:
                        self._checkpoint("count")
                    elif time.monotonic() - self._last_checkpoint >= self._checkpoint_s:
                        self._checkpoint("interval")
            except OSError as exc:
                self._broken = str(exc)
                raise JournalUnavailable(f"cannot write the journal {self.directory / self._file}: {exc}") from exc
            self._broken = None
            return seq, digest

    def append_span(self, span: ReadableSpan) -> tuple[int, str]:
        return self.append("span", span_body(span))

    def _append(self, kind: str, body: Mapping[str, Any], sync: bool | None = None,
                ready: bool = False) -> tuple[int, str]:
        line, digest = encode_record(self.seq + 1, self.head, kind, body, ready=ready)
        if kind != "rotate" and self._size > 0 and self._size + len(line) > self._rotate_bytes:
            self._rotate()
            line, digest = encode_record(self.seq + 1, self.head, kind, body, ready=ready)
        self._write(line, self._each if sync is None else sync)
        self.seq = seq = self.seq + 1
        self.head = digest
        self._last_kind = kind
        self._last_reason = body.get("reason", "") if kind == "checkpoint" else ""
        return seq, digest

    def _write(self, line: bytes, sync: bool) -> None:
        fd = self._fd
        assert fd is not None
        try:
            written = os.write(fd, line)
            if written < len(line):  # a short write: the rest, still as one line
                view = memoryview(line)[written:]
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            if sync:
                _fdatasync(self._fd)
                self._last_sync = time.monotonic()
            elif not self._dirty:
                self._dirty = True
                self._dirty_since = time.monotonic()
            elif time.monotonic() - self._dirty_since >= 2 * self._batch_s + 0.05:
                # The background thread normally syncs within an interval, off the statement's path;
                # this only runs if it fell behind.
                self._sync()
        except OSError:
            # Cut a partial line so the next record starts on a line of its own; if even that fails, the
            # next open sees a torn line and recovers.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(line)

    def _sync(self) -> None:
        # ``_inflight``: the background thread is syncing outside the lock; do not return before the disk
        # has what was written, whoever's sync gets there first.
        if self._fd is not None and (self._dirty or self._inflight):
            _fdatasync(self._fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def _rotate(self) -> None:
        number = (file_number(self._file) or 0) + 1
        self._append("rotate", {"next": file_name(number), "time": now_iso()}, sync=True)
        self._start_file(file_name(number), create=True)

    def _checkpoint(self, reason: str, *, extra: Mapping[str, Any] | None = None) -> None:
        assert self._key is not None
        body: dict[str, Any] = {
            "reason": reason,
            "covers_seq": self.seq,
            "head": self.head,
            "file": self._file,
            "key_id": self._key_id,
            "time": now_iso(),
        }
        if extra:
            body.update(extra)
        # The file the checkpoint lands in must be the one it names: rotate first if it would not fit.
        line, _ = encode_record(self.seq + 1, self.head, "checkpoint", {**body, "signature": "x" * 88})
        if self._size > 0 and self._size + len(line) > self._rotate_bytes:
            self._rotate()
            body.update(covers_seq=self.seq, head=self.head, file=self._file)
        body["signature"] = _keys.sign(self._key, checkpoint_payload(body))
        seq, digest = self._append("checkpoint", body, sync=True)
        self._write_head(seq, digest, body["time"])
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

    def _write_head(self, seq: int, digest: str, stamp: str) -> None:
        assert self._key is not None
        head: dict[str, Any] = {"seq": seq, "hash": digest, "file": self._file, "key_id": self._key_id, "time": stamp}
        head["signature"] = _keys.sign(self._key, head_payload(head))
        path = self.directory / HEAD_FILE
        tmp = path.with_name(HEAD_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(head, sort_keys=True).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._sync_directory()

    def checkpoint(self, reason: str = "requested") -> None:
        with self._lock:
            if self._fd is None:
                self.open()
            try:
                self._checkpoint(reason)
            except OSError as exc:
                self._broken = str(exc)
                raise JournalUnavailable(f"cannot write a checkpoint to the journal: {exc}") from exc

    def sync(self) -> None:
        with self._lock:
            if self._fd is not None:
                self._sync()

    # -- background and close ----------------------------------------------------------------------

    def _background(self) -> None:
        period = min(self._batch_s if not self._each else self._checkpoint_s, self._checkpoint_s)
        while not self._wake.wait(max(period, 0.005)):
            sync_fd: int | None = None
            with self._lock:
                if self._fd is None or self._closed:
                    return
                try:
                    if self._dirty:
                        # fdatasync on a duplicate, outside the lock: appends go on while the disk catches up.
                        sync_fd = os.dup(self._fd)
                        self._dirty = False
                        self._inflight = True
                    if self._since_checkpoint and time.monotonic() - self._last_checkpoint >= self._checkpoint_s:
                        self._checkpoint("interval")
                except OSError as exc:
                    self._broken = str(exc)
                    _log.error("journal background flush failed: %s", exc)
            if sync_fd is not None:
                self._background_sync(sync_fd)

    def _background_sync(self, fd: int) -> None:
        try:
            _fdatasync(fd)
        except OSError as exc:
            with self._lock:
                self._dirty = True
                self._broken = str(exc)
            _log.error("journal background flush failed: %s", exc)
        else:
            self._last_sync = time.monotonic()
        finally:
            os.close(fd)
            self._inflight = False

    def close(self) -> None:
        """Seal the journal with a ``close`` checkpoint and close it; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.set()
            if self._fd is None:
                return
            try:
                if not self._is_sealed():
                    self._checkpoint("close", extra={"format": JOURNAL_FORMAT})
                self._sync()
            except OSError as exc:
                _log.error("journal could not be sealed on close: %s", exc)
            finally:
                os.close(self._fd)
                self._fd = None
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # releases the directory lock
                    self._lock_fd = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


class JournalSpanProcessor(SpanProcessor):
    """Writes each span to the journal as it ends, on the ending thread, and keeps failures for the recorder.

    ``on_end`` must not raise into the SDK, so a failed write is kept under the span id; the recorder takes
    it (:meth:`take_failure`) right after ``span.end()`` and raises or records it per ``on_journal_failure``.
    """

    _MAX_FAILURES = 1024

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._failures: dict[int, JournalUnavailable] = {}
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self.journal.append_span(span)
        except JournalUnavailable as exc:
            with self._lock:
                if len(self._failures) >= self._MAX_FAILURES:
                    self._failures.pop(next(iter(self._failures)))
                self._failures[span.get_span_context().span_id] = exc
            _log.error("audit journal write failed: %s", exc.message)
        except Exception as exc:  # never into the SDK; still a failure the recorder must see
            with self._lock:
                self._failures[span.get_span_context().span_id] = JournalUnavailable(
                    f"cannot encode the audit record: {exc!r}"
                )

    def take_failure(self, span_id: int) -> JournalUnavailable | None:
        with self._lock:
            return self._failures.pop(span_id, None)

    def shutdown(self) -> None:
        self.journal.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            self.journal.sync()
        except OSError:
            return False
        return True


class JournalSpanExporter(SpanExporter):
    """The journal as a standard exporter (for use outside the recorder, e.g. a SimpleSpanProcessor)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            for span in spans:
                self.journal.append_span(span)
        except JournalUnavailable as exc:
            _log.error("audit journal write failed: %s", exc.message)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.journal.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.journal.sync()
        return True
