"""``pgwarden audit verify``: check the journal's hash chain, signatures and signed head.

:func:`verify` reads every ``journal-NNNNNN.jsonl`` in order and reports the *first* bad record with its
``file:line`` and why:

* ``changed`` — a line is not a record as the writer lays it out (:func:`parse_line`), its content does not
  match its hash, (when an editor re-hashed it) the next record's ``prev`` no longer matches it — the
  record named is the altered one — or a record follows a format-2 ``close`` checkpoint without a start's
  ``opened``/``recovered`` checkpoint (appended after the journal was sealed);
* ``deleted`` — a gap in ``seq`` (lines, or a whole file in the middle, removed);
* ``reordered`` — a ``seq`` that comes back or appears before its turn;
* ``truncated`` — the chain is intact but shorter than ``journal.head`` (the signed head written at each
  checkpoint) says, or a ``rotate`` record names a file that is gone, or the signed head was removed
  although checkpoints exist;
* ``bad_signature`` — a checkpoint or the signed head does not verify under the key (or does not sign
  what surrounds it: its ``covers_seq``, ``head`` and ``file`` must match its place);
* ``torn_tail`` — only as :attr:`VerifyReport.torn_tail`, not a failure: the last line of the last file
  has no newline, which is what a process killed mid-write leaves (that record was never acknowledged in
  ``fsync=each`` mode). The writer sets such bytes aside on its next start and records that in a signed
  ``recovered`` checkpoint, which verify lists under ``recovered``.

What is *not* detectable from the directory alone, and what covers it:

* records after the last checkpoint can be cut from the tail (or the gateway may simply have crashed):
  the report says how many are *unsealed* and whether the journal ends with a ``close`` checkpoint; the
  window is ``checkpoint_every`` records / ``checkpoint_interval_s`` seconds;
* someone who can write the directory can cut the journal back to an older checkpoint *and* put back the
  matching older ``journal.head``: the result is a consistent, shorter journal. Compare ``last_seq``/
  ``head`` with a copy kept elsewhere (OTLP backend, a shipped ``journal.head``) — pass it as ``anchor``;
* someone who can read the signing key can forge everything, including signatures; verifying with the
  ``journal.pub`` found beside the journal only proves self-consistency. Pass a public key kept apart;
* a torn tail cannot be told apart from someone cutting the last line in the middle, unless the signed
  head covers it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import _keys
from ._records import (
    GENESIS,
    HEAD_FILE,
    canonical,
    checkpoint_payload,
    file_number,
    head_payload,
    record_hash,
)

__all__ = ["Problem", "VerifyReport", "parse_line", "verify"]

START_REASONS = frozenset({"opened", "recovered"})  # what a gateway's start writes first (journal.py)

KeyInput = Ed25519PublicKey | bytes | str | Path


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON the journal writes")


def parse_line(raw: bytes) -> dict[str, Any]:
    """One journal line (without its newline) as the record it holds, read exactly as the writer wrote it:
    strict UTF-8 (``json.loads`` of bytes would also take UTF-16 and UTF-32), no NaN or Infinity, the five
    fields, and the bytes equal to the canonical record followed by its hash — so a record that verifies is
    one every reader (verify, review, replay) sees the same way. Raises ``ValueError`` otherwise."""
    record = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    if not isinstance(record, dict) or set(record) != {"seq", "prev", "kind", "body", "hash"}:
        raise ValueError("not the five fields of a journal record")
    digest = record["hash"]
    if not isinstance(digest, str):
        raise ValueError("its hash is not a text")
    try:
        core = canonical({k: v for k, v in record.items() if k != "hash"})
    except Exception as exc:  # a value RFC 8785 cannot hold (a huge integer, a lone surrogate)
        raise ValueError(f"not canonical JSON: {exc}") from None
    if raw != core[:-1] + b',"hash":"' + digest.encode() + b'"}':
        raise ValueError("not written in the journal's canonical form")
    return record


@dataclass(frozen=True)
class Problem:
    kind: str  # changed | deleted | reordered | truncated | bad_signature | torn_tail
    file: str
    line: int
    seq: int | None
    detail: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class VerifyReport:
    ok: bool
    directory: str
    records: int = 0
    files: list[str] = field(default_factory=list)
    checkpoints: int = 0
    last_seq: int = 0
    head: str = GENESIS
    sealed: bool = False
    unsealed_records: int = 0
    key_ids: list[str] = field(default_factory=list)
    first_bad: Problem | None = None
    torn_tail: Problem | None = None
    recovered: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("first_bad", "torn_tail"):
            problem = getattr(self, key)
            out[key] = None if problem is None else {**asdict(problem), "where": problem.where}
        return out


@dataclass
class _Entry:
    file: str
    line: int
    record: dict[str, Any] | None  # None: not a record
    hash_ok: bool
    problem: str = ""


def _entries(directory: Path, files: list[Path], report: VerifyReport) -> Iterable[_Entry]:
    for index, path in enumerate(files):
        data = path.read_bytes()
        lines = data.split(b"\n")
        rest = lines.pop()  # b"" when the file ends with a newline
        for number, raw in enumerate(lines, start=1):
            try:
                record = parse_line(raw)
            except ValueError as exc:
                yield _Entry(path.name, number, None, False, f"not a journal record ({exc})")
                continue
            yield _Entry(path.name, number, record, record["hash"] == record_hash(record))
        if rest:
            where = (path.name, len(lines) + 1)
            if index == len(files) - 1:
                report.torn_tail = Problem(
                    "torn_tail", *where, None,
                    f"the last line ({len(rest)} bytes) has no newline: a write cut short (process killed "
                    "mid-write), never acknowledged; the gateway sets it aside on its next start",
                )
            else:
                yield _Entry(*where, None, False, "a line without newline in the middle of the journal")


def _keys_from(directory: Path, public_key: KeyInput | Iterable[KeyInput] | None) -> dict[str, Ed25519PublicKey]:
    if public_key is None:
        return _keys.public_keys_in(directory)
    if isinstance(public_key, Ed25519PublicKey | bytes | str | Path):
        public_key = [public_key]
    return _keys.keys_by_id(_keys.load_public_key(k) for k in public_key)


def verify(
    directory: str | Path,
    public_key: KeyInput | Iterable[KeyInput] | None = None,
    *,
    anchor: tuple[int, str] | None = None,
) -> VerifyReport:
    """Verify the journal in ``directory``.

    ``public_key``: PEM (bytes/str/path) or key(s) to verify signatures with; default: the ``journal*.pub``
    files in the directory (self-consistency only). ``anchor``: ``(seq, hash)`` of a record known from
    elsewhere (an OTLP backend, a shipped ``journal.head``); the journal must contain it.
    """
    directory = Path(directory)
    report = VerifyReport(ok=False, directory=str(directory))
    if not directory.is_dir():
        raise FileNotFoundError(f"no journal directory at {directory}")
    keys = _keys_from(directory, public_key)
    report.key_ids = sorted(keys)
    files = sorted((p for p in directory.iterdir() if file_number(p.name) is not None), key=lambda p: p.name)
    report.files = [p.name for p in files]

    def fail(kind: str, file: str, line: int, seq: int | None, detail: str) -> VerifyReport:
        report.first_bad = Problem(kind, file, line, seq, detail)
        report.ok = False
        return report

    entries = list(_entries(directory, files, report))
    all_seqs = {e.record.get("seq") for e in entries if e.record is not None}
    expected_seq, expected_prev = 1, GENESIS
    hashes: dict[int, str] = {}
    previous: _Entry | None = None
    since_checkpoint = 0
    last_checkpoint: dict[str, Any] | None = None
    sealed_by: int | None = None  # seq of a format-2 close checkpoint not yet followed by a start's checkpoint
    for entry in entries:
        record = entry.record
        if record is None:
            return fail("changed", entry.file, entry.line, None, entry.problem)
        seq = record["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            return fail("changed", entry.file, entry.line, None, f"seq {seq!r} is not an integer")
        if not entry.hash_ok:
            return fail("changed", entry.file, entry.line, seq, "the record's content does not match its hash")
        if seq != expected_seq:
            if seq > expected_seq and expected_seq not in all_seqs:
                missing = f"seq {expected_seq}" if seq == expected_seq + 1 else f"seq {expected_seq}..{seq - 1}"
                return fail("deleted", entry.file, entry.line, seq, f"{missing} missing before this record")
            return fail("reordered", entry.file, entry.line, seq, f"seq {seq} found where seq {expected_seq} belongs")
        if record["prev"] != expected_prev:
            if previous is None:
                return fail("changed", entry.file, entry.line, seq, "the first record does not start the chain")
            return fail(
                "changed", previous.file, previous.line, seq - 1,
                f"the record was rewritten: its hash no longer matches the prev of the record after it "
                f"({entry.file}:{entry.line})",
            )
        if previous is not None and previous.file != entry.file:
            prev_record = previous.record or {}
            if prev_record.get("kind") != "rotate" or prev_record["body"].get("next") != entry.file:
                return fail("changed", entry.file, entry.line, seq,
                            f"{entry.file} continues the chain without a rotate record at the end of {previous.file}")
        if previous is not None and (previous.record or {}).get("kind") == "rotate" and previous.file == entry.file:
            return fail("changed", previous.file, previous.line, seq - 1, "a rotate record that does not end its file")
        kind = record["kind"]
        if sealed_by is not None and kind != "rotate":
            reason = record["body"].get("reason") if kind == "checkpoint" and isinstance(record["body"], dict) else None
            if reason not in START_REASONS:
                return fail("changed", entry.file, entry.line, seq,
                            f"this record follows the close checkpoint at seq {sealed_by} without a gateway start's "
                            "checkpoint: it was appended after the journal was sealed")
            sealed_by = None
        if kind == "checkpoint":
            body = record["body"] if isinstance(record["body"], dict) else {}
            key = keys.get(str(body.get("key_id")))
            if key is None:
                return fail("bad_signature", entry.file, entry.line, seq,
                            f"checkpoint signed by key {body.get('key_id')!r}, which is not among {sorted(keys)}")
            if not _keys.signature_ok(key, checkpoint_payload(body), str(body.get("signature", ""))):
                return fail("bad_signature", entry.file, entry.line, seq, "the checkpoint's signature does not verify")
            if body.get("covers_seq") != seq - 1 or body.get("head") != record["prev"] or body.get("file") != entry.file:
                return fail("bad_signature", entry.file, entry.line, seq,
                            "a validly signed checkpoint out of its place (covers_seq, head or file differ)")
            report.checkpoints += 1
            since_checkpoint = 0
            last_checkpoint = body
            if body.get("reason") == "close" and isinstance(body.get("format"), int) and body["format"] >= 2:
                sealed_by = seq  # from journal format 2 on, what follows a close is a start's checkpoint
            if body.get("reason") == "recovered" and body.get("torn"):
                report.recovered.append(body["torn"])
                report.warnings.append(
                    f"a torn line of {body['torn'].get('bytes')} bytes in {body['torn'].get('file')} was set aside "
                    f"as {body['torn'].get('saved_as')} after an unclean stop (checkpoint seq {seq})"
                )
        elif kind == "span":
            since_checkpoint += 1
        elif kind != "rotate":
            return fail("changed", entry.file, entry.line, seq, f"unknown record kind {kind!r}")
        hashes[seq] = record["hash"]
        expected_seq, expected_prev = seq + 1, record["hash"]
        report.records += 1
        previous = entry

    report.last_seq, report.head = expected_seq - 1, expected_prev
    end_file = previous.file if previous else (files[-1].name if files else "journal-000001.jsonl")
    end_line = (previous.line + 1) if previous else 1
    if previous is not None and (previous.record or {}).get("kind") == "rotate":
        return fail("truncated", end_file, end_line, None,
                    f"the journal ends with a rotate record, but {previous.record['body'].get('next')} is missing")

    head_path = directory / HEAD_FILE
    try:
        head = json.loads(head_path.read_bytes())
    except FileNotFoundError:
        head = None
    except ValueError:
        return fail("changed", HEAD_FILE, 1, None, "the signed head is not valid JSON")
    if head is None:
        if report.checkpoints:
            return fail("truncated", HEAD_FILE, 1, None,
                        "journal.head is missing although the journal has checkpoints: it was removed, so a "
                        "truncated tail cannot be ruled out")
        if not report.records and any(directory.glob("journal*.pub")):
            # a gateway made its key here, and since journal format 2 its first record is a signed checkpoint
            return fail("deleted", end_file, 1, None,
                        "the journal holds no record and no signed head, but a gateway's key is here: its files "
                        "were removed")
    else:
        key = keys.get(str(head.get("key_id")))
        try:
            payload = head_payload(head)
        except (KeyError, TypeError, ValueError):
            return fail("changed", HEAD_FILE, 1, None, "the signed head lacks fields")
        if key is None or not _keys.signature_ok(key, payload, str(head.get("signature", ""))):
            return fail("bad_signature", HEAD_FILE, 1, head.get("seq"), "the signed head does not verify")
        head_seq = int(head["seq"])
        if head_seq > report.last_seq:
            return fail("truncated", end_file, end_line, head_seq,
                        f"the journal ends at seq {report.last_seq} but the signed head ({head.get('time')}) names "
                        f"seq {head_seq} in {head.get('file')}: records were cut from the end")
        if hashes.get(head_seq) != head["hash"]:
            return fail("changed", str(head.get("file")), 0, head_seq,
                        f"record seq {head_seq} differs from the one the signed head names")
    if anchor is not None:
        seq, digest = anchor
        if seq > report.last_seq:
            return fail("truncated", end_file, end_line, seq, f"the anchor names seq {seq}, past the end")
        if hashes.get(seq) != digest:
            return fail("changed", end_file, 0, seq, f"record seq {seq} differs from the anchor")

    last_kind = (previous.record or {}).get("kind") if previous else None
    report.sealed = last_kind == "checkpoint" and (last_checkpoint or {}).get("reason") == "close"
    report.unsealed_records = since_checkpoint
    if previous is not None and not report.sealed:
        report.warnings.append(
            f"the journal does not end with a close checkpoint: the gateway is running or stopped uncleanly; "
            f"{since_checkpoint} record(s) after the last checkpoint could have been cut without a trace"
        )
    if report.torn_tail is not None:
        report.warnings.append(f"torn tail at {report.torn_tail.where}: {report.torn_tail.detail}")
    if not files:
        report.warnings.append("no journal files")
    report.ok = True
    return report
