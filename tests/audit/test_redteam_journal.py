"""Red-team of the audit journal's tamper evidence (``verify``) and of what review shows.

Attacker: can write (so read, rename, delete) the journal directory; does not hold the signing key.
Every test asserts the secure behaviour; a breach was a strict xfail until fixed (all five are fixed since:
lines must be the writer's exact bytes, review refuses a line it cannot read, show escapes control characters,
and from journal format 2 every start writes a signed ``opened`` checkpoint — so the head exists from the
first record — and nothing but a start's checkpoint may follow a ``close``). Real journals, real verify, no mocks.

Claims attacked (docs/audit.md, verify.py): an edit anywhere (re-hashed or not) is ``changed``; removed
lines/files are ``deleted``/``truncated``; a forged checkpoint or head is ``bad_signature``; only the
unsealed tail can be cut; a key swap is caught with ``--public-key``; review shows what was recorded.

BREACHES

1. A record re-encoded as UTF-16/UTF-32 is hidden from review while verify says OK, sealed. verify's
   ``json.loads(line)`` sniffs the encoding of the bytes *without* the newline (even length: decodes);
   ``review.read_spans`` parses the line *with* its newline (odd length: UnicodeDecodeError) and skips it
   silently. The parsed value, hence the hash, the chain and every signature, is unchanged. Repro::

       ls = p.read_bytes().split(b"\\n"); ls[i] = ls[i].decode().encode("utf-16-le")
       p.write_bytes(b"\\n".join(ls))  # verify: OK sealed; `audit show` no longer lists the DROP TABLE

   Fix: decode every line as strict UTF-8 (``raw.decode("utf-8")``) in verify, review and the writer's
   open — better, require each line to be byte-for-byte ``encode_record``'s output — and have review read
   through the verifier's parser instead of its own.
2. Rollback with no saved head: cut the journal back to before its first checkpoint (or delete every
   file) and delete ``journal.head``: verify says OK (``checkpoints == 0`` so a missing head is fine).
   The documented rollback needs an *older* head; this needs none. Fix (``verify``, ``Journal._open``):
   write a signed genesis head when a journal is created, and treat a missing head as ``truncated``
   whenever ``journal.pub`` (or any file) exists.
3. Records appended after a ``close`` checkpoint are laundered by the next start: ``Journal._open`` sees
   an unsealed end, writes a signed ``recovered`` checkpoint over the forged records, and verify is then
   OK and sealed. Fix: write an ``opened`` checkpoint at every open; a record directly after a ``close``
   that is not that checkpoint is foreign: refuse to open (and verify fails it).
4. ``audit show`` writes recorded text raw to the terminal: a statement text (the agent's own), error
   message, column name or sample value with ESC sequences, CR or newlines prints fake ``reason:``/``#n``
   lines or erases real ones (``cli._print_step``; ``_short`` only replaces ``\\n``, and ``splitlines``
   breaks on ``\\r``). Fix: escape C0/C1 controls, DEL and Unicode line separators (``repr``-style) in
   every field printed, and indent continuation lines.
5. (robustness) A line with ``NaN``, ``1e400``, a >2**53 integer or a lone surrogate makes verify raise
   (``rfc8785`` domain errors, exit 3 "could not run") instead of reporting ``changed`` at its file:line.
   Fix: catch ``rfc8785`` errors in ``verify._entries`` (hash_ok False); parse with ``parse_constant``
   refusing NaN/Infinity.

HELD: an edit of a sealed record, re-hashed to the end of the chain (the next checkpoint's ``head``/
``prev`` no longer match, and it cannot be re-signed); an edited head or checkpoint field, a swapped
``key_id``; cutting the sealed part or a close checkpoint (the head); cutting only the unsealed tail of
a crashed journal (documented, bounded by ``checkpoint_every``, warned); records after the head are
warned as unsealed; a dropped rotate record, a deleted/duplicated/reordered file; an unknown ``kind``;
an attacker key in ``journal.pub`` with everything re-signed passes the default verify (documented:
self-consistency only) and is caught by ``--public-key``; duplicate JSON keys, CRLF, a UTF-8 BOM and
``1.0`` for ``1`` verify, but review then shows exactly the value verify hashed (JCS; last key wins for
both). Key and journal files are 0600.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pgwarden.audit import (
    AuditRecorder,
    AuditSettings,
    Journal,
    JournalUnavailable,
    _keys,
    schema,
    timeline,
    verify,
)
from pgwarden.audit._records import checkpoint_payload, encode_record, head_payload
from pgwarden.audit.cli import main
from pgwarden.audit.review import JournalDamaged

F1 = "journal-000001.jsonl"


# -- helpers ----------------------------------------------------------------------------------------


def _fill(tmp: Path, n: int = 8, *, every: int = 3, close: bool = True, pad: int = 0, **kw) -> Path:
    d = tmp / "j"
    j = Journal(d, tmp / "signing.key", checkpoint_every=every, **kw)
    for i in range(n):
        j.append("span", {"name": f"s{i}", "attributes": {"i": i, "pad": "x" * pad}})
    if close:
        j.close()
    else:  # a crash: the gateway never closed (drop the fd without a close checkpoint)
        os.close(j._fd)
        j._fd = None
        j._closed = True
    return d


def _records(d: Path) -> list[tuple[str, dict]]:
    out = []
    for p in sorted(d.glob("journal-*.jsonl")):
        out += [(p.name, json.loads(line)) for line in p.read_bytes().splitlines()]
    return out


def _reforge(d: Path, recs: list[tuple[str, dict]], key: Ed25519PrivateKey | None = None) -> None:
    """Rewrite the journal from ``recs``: renumber, re-chain, re-hash; with ``key``, re-sign checkpoints
    and the head (the attacker's key); without, keep the old signatures."""
    for p in d.glob("journal-*.jsonl"):
        p.unlink()
    prev, last_cp = "0" * 64, None
    out: dict[str, bytes] = {}
    for seq, (name, r) in enumerate(recs, start=1):
        body = dict(r["body"])
        if r["kind"] == "checkpoint" and key is not None:
            body.update(covers_seq=seq - 1, head=prev, file=name, key_id=_keys.key_id(key.public_key()))
            body.pop("signature", None)
            body["signature"] = _keys.sign(key, checkpoint_payload(body))
        line, prev = encode_record(seq, prev, r["kind"], body)
        out[name] = out.get(name, b"") + line
        if r["kind"] == "checkpoint":
            last_cp = (seq, prev, name, body["time"])
    for name, data in out.items():
        (d / name).write_bytes(data)
    if key is not None and last_cp is not None:
        head = dict(zip(("seq", "hash", "file", "time"), last_cp, strict=True))
        head["key_id"] = _keys.key_id(key.public_key())
        head["signature"] = _keys.sign(key, head_payload(head))
        (d / "journal.head").write_text(json.dumps(head))


def _session_journal(tmp: Path) -> tuple[Path, str]:
    settings = AuditSettings(journal_dir=tmp / "j", checkpoint_every=4, signing_key_file=tmp / "signing.key")
    rec = AuditRecorder(settings)
    s = rec.start_session("agent-7", ["ai-agents"], "wire", "shop", "10.0.0.1", "jwt")
    for text, decision in (("SELECT 1", "allow"), ("DROP TABLE customers", "deny"), ("SELECT 2", "allow")):
        with rec.statement(s, text) as st:
            st.decided({schema.DB_QUERY_TEXT: text, schema.DECISION: decision})
    s.end()
    rec.close()
    return settings.journal_dir, s.id


def _texts(d: Path, sid: str) -> list[str]:
    return [step.text for step in timeline(d, sid).steps]


def _cli(*argv: str) -> int:
    return main(list(argv))


# -- breaches ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_a_reencoded_record_is_not_hidden_from_review(tmp_path: Path, encoding: str) -> None:
    d, sid = _session_journal(tmp_path)
    before = _texts(d, sid)
    assert "DROP TABLE customers" in before and verify(d).ok
    path = d / F1
    ls = path.read_bytes().split(b"\n")
    i = next(i for i, line in enumerate(ls) if b"DROP TABLE" in line)
    ls[i] = ls[i].decode().encode(encoding)
    assert b"\n" not in ls[i]
    path.write_bytes(b"\n".join(ls))
    report = verify(d)
    # secure: either verify names the line, or review still shows what was recorded
    assert not report.ok or _texts(d, sid) == before, "verify OK, sealed, and the DROP TABLE vanished from show"
    assert (report.first_bad.kind, report.first_bad.line) == ("changed", i + 1)
    # and review refuses the damaged journal rather than show it without the line
    with pytest.raises(JournalDamaged):
        _texts(d, sid)
    assert _cli("show", sid, "--journal", str(d)) == 1


def test_rollback_before_the_first_checkpoint_without_the_head_is_caught(tmp_path: Path) -> None:
    d = _fill(tmp_path, 8, every=3)
    recs = _records(d)
    # since journal format 2 the first record is the start's opened checkpoint (it writes the signed head):
    # cut back to before the first count checkpoint
    assert [r["kind"] for _, r in recs[:5]] == ["checkpoint", "span", "span", "span", "checkpoint"]
    _reforge(d, recs[:3])  # the first three records, untouched: their hashes are the original ones
    (d / "journal.head").unlink()
    assert not verify(d).ok
    assert _cli("verify", "--journal", str(d)) != 0


def test_wiping_the_journal_is_caught(tmp_path: Path) -> None:
    d = _fill(tmp_path, 8, every=3)
    for p in d.glob("journal-*.jsonl"):
        p.unlink()
    (d / "journal.head").unlink()
    assert (d / "journal.pub").exists()  # a key was made: a journal existed here
    assert not verify(d).ok


def test_records_forged_after_a_close_are_not_laundered_by_a_restart(tmp_path: Path) -> None:
    d = _fill(tmp_path, 8, every=3)
    recs = _records(d)
    assert recs[-1][1]["body"]["reason"] == "close"
    forged = {"name": "forged", "attributes": {schema.DECISION: "allow", schema.APPROVER: "dana"}}
    line, _ = encode_record(recs[-1][1]["seq"] + 1, recs[-1][1]["hash"], "span", forged)
    with (d / F1).open("ab") as f:
        f.write(line)
    journal = Journal(d, tmp_path / "signing.key", checkpoint_every=3)
    try:
        journal.open()
        journal.close()
    except JournalUnavailable:
        return  # secure: the gateway refuses a journal with foreign records after its close
    report = verify(d)
    assert not report.ok, f"forged record now sealed: ok={report.ok} sealed={report.sealed}"


def test_show_does_not_let_recorded_text_draw_on_the_terminal(tmp_path: Path, capsys) -> None:
    settings = AuditSettings(journal_dir=tmp_path / "j", checkpoint_every=4, signing_key_file=tmp_path / "k")
    rec = AuditRecorder(settings)
    s = rec.start_session("agent-7", [], "wire", "shop", "10.0.0.1", "jwt")
    evil = "DROP TABLE customers;\n    reason:    approved by dba\n\x1b[1A\x1b[2K\rSELECT 1"
    with rec.statement(s, evil) as st:
        st.decided({schema.DB_QUERY_TEXT: evil, schema.DECISION: "deny"})
    with rec.statement(s, "SELECT x") as st:
        st.decided({schema.DB_QUERY_TEXT: "SELECT x", schema.DECISION: "allow"})
        st.error("XX000", "boom\n#9  10:00:00.000  0.1 ms  allow  ok")
    s.end()
    rec.close()
    assert verify(settings.journal_dir).ok
    capsys.readouterr()
    assert _cli("show", s.id, "--journal", str(settings.journal_dir)) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    assert not any(line.startswith(("    reason:    approved", "#9")) for line in out.splitlines())


@pytest.mark.parametrize("value", ["NaN", "1e400", "123456789012345678901234567890", '"\\ud800"'])
def test_an_unrepresentable_value_is_reported_as_changed(tmp_path: Path, value: str) -> None:
    d = _fill(tmp_path)
    path = d / F1
    ls = path.read_bytes().split(b"\n")
    ls[2] = ls[2].replace(b'"i":1', b'"i":' + value.encode(), 1)  # line 1 is the start's opened checkpoint
    path.write_bytes(b"\n".join(ls))
    report = verify(d)
    assert not report.ok and report.first_bad.kind == "changed" and report.first_bad.where == f"{F1}:3"


# -- what held --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "1e400", "123456789012345678901234567890", '"\\ud800"'])
def test_an_unrepresentable_value_never_verifies_ok(tmp_path: Path, value: str, capsys) -> None:
    d = _fill(tmp_path)
    path = d / F1
    ls = path.read_bytes().split(b"\n")
    ls[2] = ls[2].replace(b'"i":1', b'"i":' + value.encode(), 1)
    path.write_bytes(b"\n".join(ls))
    assert _cli("verify", "--journal", str(d)) != 0


def test_files_and_key_are_private(tmp_path: Path) -> None:
    d = _fill(tmp_path)
    for p in [tmp_path / "signing.key", d / "journal.head", *d.glob("journal-*.jsonl")]:
        assert p.stat().st_mode & 0o077 == 0, p


def test_a_sealed_edit_rehashed_to_the_end_is_caught(tmp_path: Path) -> None:
    d = _fill(tmp_path, 8, every=3)
    recs = _records(d)
    recs[1][1]["body"]["attributes"]["i"] = 999
    _reforge(d, recs)  # the whole chain re-hashed; old signatures kept (no key)
    report = verify(d)
    assert not report.ok and report.first_bad.kind in ("changed", "bad_signature")
    # and fixing the checkpoint's head to the new chain breaks its signature
    recs = _records(d)
    recs[3][1]["body"]["head"] = recs[2][1]["hash"]
    _reforge(d, recs)
    assert verify(d).first_bad.kind == "bad_signature"


def test_a_swapped_key_id_or_edited_head_is_caught(tmp_path: Path) -> None:
    d = _fill(tmp_path)
    recs = _records(d)
    recs[3][1]["body"]["key_id"] = "ed25519:0000000000000000"
    _reforge(d, recs)
    assert verify(d).first_bad.kind == "bad_signature"
    d2 = _fill(tmp_path / "b")
    head = json.loads((d2 / "journal.head").read_text())
    for field, value in (("seq", head["seq"] + 5), ("file", "journal-000009.jsonl"), ("time", "2099-01-01T00:00:00Z")):
        (d2 / "journal.head").write_text(json.dumps({**head, field: value}))
        assert verify(d2).first_bad.kind == "bad_signature", field


def test_cutting_a_sealed_journal_anywhere_is_caught(tmp_path: Path) -> None:
    d = _fill(tmp_path, 8, every=3)
    recs = _records(d)
    for keep in range(len(recs) - 1, 0, -1):
        _reforge(d, recs[:keep])
        report = verify(d)
        assert not report.ok and report.first_bad.kind == "truncated", keep


def test_only_the_unsealed_tail_of_a_crashed_journal_can_be_cut_and_it_is_warned(tmp_path: Path) -> None:
    every = 3
    d = _fill(tmp_path, 8, every=every, close=False)
    recs = _records(d)
    last_cp = max(i for i, (_, r) in enumerate(recs) if r["kind"] == "checkpoint")
    unsealed = len(recs) - last_cp - 1
    assert 0 < unsealed < every  # the documented bound
    report = verify(d)
    assert report.ok and report.unsealed_records == unsealed and not report.sealed and report.warnings
    _reforge(d, recs[: last_cp + 1])  # the documented limit: cutting the unsealed tail passes
    assert verify(d).ok
    _reforge(d, recs[:last_cp])  # one record more (the checkpoint the head names): caught
    assert verify(d).first_bad.kind == "truncated"


def test_records_appended_after_a_close_are_changed(tmp_path: Path) -> None:
    # (before journal format 2 this was only warned as an unsealed tail)
    d = _fill(tmp_path)
    recs = _records(d)
    line, _ = encode_record(recs[-1][1]["seq"] + 1, recs[-1][1]["hash"], "span", {"name": "forged"})
    with (d / F1).open("ab") as f:
        f.write(line)
    report = verify(d)
    assert not report.ok and report.first_bad.kind == "changed" and "after the journal was sealed" in \
        report.first_bad.detail


def test_records_appended_after_a_crash_are_warned_unsealed(tmp_path: Path) -> None:
    d = _fill(tmp_path, close=False)
    recs = _records(d)
    line, _ = encode_record(recs[-1][1]["seq"] + 1, recs[-1][1]["hash"], "span", {"name": "forged"})
    with (d / F1).open("ab") as f:
        f.write(line)
    report = verify(d)  # the documented limit: an unsealed tail cannot be told from the gateway's own
    assert report.ok and not report.sealed and report.unsealed_records >= 1 and report.warnings


def test_an_unknown_kind_is_caught(tmp_path: Path) -> None:
    d = _fill(tmp_path, close=False)
    recs = _records(d)
    recs[-1][1]["kind"] = "note"
    _reforge(d, recs)
    assert verify(d).first_bad.kind == "changed"


def _rotated(tmp: Path) -> tuple[Path, list[Path]]:
    d = _fill(tmp, 40, every=7, pad=200, rotate_bytes=4096)
    files = sorted(d.glob("journal-*.jsonl"))
    assert len(files) >= 3 and verify(d).ok
    return d, files


def test_dropping_a_rotate_record_is_caught(tmp_path: Path) -> None:
    d, files = _rotated(tmp_path)
    recs = [(n, r) for n, r in _records(d) if not (n == files[0].name and r["kind"] == "rotate")]
    _reforge(d, recs)
    assert not verify(d).ok


def test_duplicated_reordered_or_swapped_files_are_caught(tmp_path: Path) -> None:
    d, files = _rotated(tmp_path)
    backup = {p.name: p.read_bytes() for p in files}
    shutil.copy(files[1], d / "journal-000099.jsonl")  # a duplicate at the end
    assert verify(d).first_bad.kind == "reordered"
    (d / "journal-000099.jsonl").unlink()
    files[0].write_bytes(backup[files[1].name])
    files[1].write_bytes(backup[files[0].name])  # swapped contents
    assert not verify(d).ok
    files[0].write_bytes(backup[files[0].name])
    files[1].write_bytes(backup[files[0].name])  # file 1 twice
    assert not verify(d).ok
    files[1].unlink()
    os.symlink(files[0], files[1])  # a symlink in its place
    assert not verify(d).ok


def test_an_attacker_key_passes_only_without_the_public_key_kept_apart(tmp_path: Path, capsys) -> None:
    d = _fill(tmp_path)
    original = (d / "journal.pub").read_bytes()
    (tmp_path / "kept.pub").write_bytes(original)
    evil = Ed25519PrivateKey.generate()
    recs = _records(d)
    recs[1][1]["body"]["attributes"]["i"] = 999
    _reforge(d, recs, key=evil)
    (d / "journal.pub").write_bytes(_keys.public_pem(evil.public_key()))
    # documented limit: the key beside the journal proves self-consistency only
    assert verify(d).ok
    # ...and a key kept apart catches it
    assert verify(d, tmp_path / "kept.pub").first_bad.kind == "bad_signature"
    assert _cli("verify", "--journal", str(d), "--public-key", str(tmp_path / "kept.pub")) == 1
    # an extra key file beside the original (journal.pub untouched) is likewise trusted by default only
    (d / "journal.pub").write_bytes(original)
    (d / "journal.evil.pub").write_bytes(_keys.public_pem(evil.public_key()))
    assert verify(d).ok and not verify(d, tmp_path / "kept.pub").ok


@pytest.mark.parametrize("form", ["duplicate_key", "crlf", "utf8_bom", "escaped_ascii"])
def test_non_canonical_line_forms_show_what_verify_hashed(tmp_path: Path, form: str) -> None:
    d, _sid = _session_journal(tmp_path)
    path = d / F1
    ls = path.read_bytes().split(b"\n")
    i = next(i for i, line in enumerate(ls) if b"DROP TABLE" in line)
    line = ls[i]
    if form == "duplicate_key":  # a forged decision first, the real one last
        line = line.replace(b'"attributes":{', b'"attributes":{"pgwarden.decision":"allow",', 1)
    elif form == "crlf":
        line += b"\r"
    elif form == "utf8_bom":
        line = b"\xef\xbb\xbf" + line
    elif form == "escaped_ascii":
        line = line.replace(b"DROP", b"\\u0044ROP", 1)
    ls[i] = line
    path.write_bytes(b"\n".join(ls))
    # since the fix every line must be byte for byte what the writer writes: each form is "changed"
    report = verify(d)
    assert not report.ok and report.first_bad.kind == "changed", report.first_bad
    assert report.first_bad.line == i + 1


def test_a_float_form_of_an_int_is_changed(tmp_path: Path) -> None:
    d = _fill(tmp_path)
    path = d / F1
    ls = path.read_bytes().split(b"\n")
    ls[2] = ls[2].replace(b'"i":1', b'"i":1.0', 1)
    path.write_bytes(b"\n".join(ls))
    report = verify(d)  # the same number to JCS, but not a line the gateway writes
    assert not report.ok and (report.first_bad.kind, report.first_bad.line) == ("changed", 3)
