"""The journal and verify: every kind of tampering is caught at the first bad record; crashes are not tampering."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from audit_helpers import lines, records, run_statement
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pgwarden.audit import AuditRecorder, AuditSettings, Journal, JournalUnavailable, verify
from pgwarden.audit._records import canonical, record_hash


def _journal(directory: Path, **kwargs) -> Journal:
    return Journal(directory, directory.parent / "signing.key", **kwargs)


def _fill(directory: Path, n: int = 8, **kwargs) -> None:
    journal = _journal(directory, checkpoint_every=kwargs.pop("checkpoint_every", 3), **kwargs)
    for i in range(n):
        journal.append("span", {"name": f"s{i}", "attributes": {"i": i}})
    journal.close()


def _line(record: dict) -> str:
    """A record as the writer lays it out (canonical, hash last): what a careful forger writes."""
    core = canonical({k: v for k, v in record.items() if k != "hash"})
    return (core[:-1] + b',"hash":"' + record["hash"].encode() + b'"}\n').decode()


def _rewrite(directory: Path, new_lines: list[str], name: str = "journal-000001.jsonl") -> None:
    (directory / name).write_text("".join(new_lines))


def test_a_clean_journal_verifies_and_is_sealed(tmp_path: Path) -> None:
    d = tmp_path / "j"
    _fill(d)
    report = verify(d)
    assert report.ok and report.sealed and report.first_bad is None
    assert report.records == 8 + 4  # the start's opened checkpoint, two count checkpoints and the close one
    assert report.checkpoints == 4
    assert records(d)[0]["kind"] == "checkpoint" and records(d)[0]["body"]["reason"] == "opened"
    assert report.warnings == []
    kinds = [r["kind"] for r in records(d)]
    assert kinds[-1] == "checkpoint" and records(d)[-1]["body"]["reason"] == "close"
    assert oct((tmp_path / "signing.key").stat().st_mode & 0o777) == "0o600"
    assert (d / "journal.pub").exists()


def test_a_changed_line_is_named(tmp_path: Path) -> None:
    d = tmp_path / "j"
    _fill(d)
    text = lines(d)
    text[2] = text[2].replace('"s1"', '"s1-forged"')  # line 1 is the start's opened checkpoint
    _rewrite(d, text)
    report = verify(d)
    assert not report.ok
    assert (report.first_bad.kind, report.first_bad.where, report.first_bad.seq) == ("changed", "journal-000001.jsonl:3", 3)


def test_a_changed_and_rehashed_line_is_named(tmp_path: Path) -> None:
    d = tmp_path / "j"
    _fill(d)
    text = lines(d)
    record = json.loads(text[1])
    record["body"]["name"] = "forged"
    record["hash"] = record_hash(record)
    text[1] = _line(record)
    _rewrite(d, text)
    bad = verify(d).first_bad
    assert (bad.kind, bad.where) == ("changed", "journal-000001.jsonl:2")
    assert "rewritten" in bad.detail


def test_a_deleted_line_is_named(tmp_path: Path) -> None:
    d = tmp_path / "j"
    _fill(d)
    text = lines(d)
    del text[2]
    _rewrite(d, text)
    bad = verify(d).first_bad
    assert (bad.kind, bad.where, bad.seq) == ("deleted", "journal-000001.jsonl:3", 4)
    assert "seq 3 missing" in bad.detail


def test_reordered_lines_are_named(tmp_path: Path) -> None:
    d = tmp_path / "j"
    _fill(d)
    text = lines(d)
    text[1], text[2] = text[2], text[1]
    _rewrite(d, text)
    bad = verify(d).first_bad
    assert (bad.kind, bad.where) == ("reordered", "journal-000001.jsonl:2")


def test_a_truncated_tail_is_caught_by_the_signed_head(tmp_path: Path) -> None:
    d = tmp_path / "j"
    _fill(d)
    text = lines(d)
    _rewrite(d, text[:-2])  # cut whole lines: the chain that is left is intact
    bad = verify(d).first_bad
    assert bad.kind == "truncated"
    assert bad.where == f"journal-000001.jsonl:{len(text) - 1}"
    assert "signed head" in bad.detail and f"seq {len(text)}" in bad.detail


def test_removing_the_signed_head_too_is_still_caught(tmp_path: Path) -> None:
    d = tmp_path / "j"
    _fill(d)
    _rewrite(d, lines(d)[:-2])
    (d / "journal.head").unlink()
    assert verify(d).first_bad.kind == "truncated"


def test_a_forged_checkpoint_fails_its_signature(tmp_path: Path) -> None:
    d = tmp_path / "j"
    _fill(d)
    text = lines(d)
    cp = json.loads(text[4])  # after the opened checkpoint and three spans: the first count checkpoint
    assert cp["kind"] == "checkpoint"
    cp["body"]["time"] = "2020-01-01T00:00:00.000000Z"
    cp["hash"] = record_hash(cp)
    text[4] = _line(cp)
    # re-chain the rest so only the signature can tell
    prev = cp["hash"]
    for i in range(5, len(text)):
        r = json.loads(text[i])
        r["prev"] = prev
        if r["kind"] == "checkpoint":
            r["body"]["head"] = prev
        r["hash"] = prev = record_hash(r)
        text[i] = _line(r)
    _rewrite(d, text)
    bad = verify(d).first_bad
    assert (bad.kind, bad.where) == ("bad_signature", "journal-000001.jsonl:5")


def test_verifying_with_another_key_fails(tmp_path: Path) -> None:
    d = tmp_path / "j"
    _fill(d)
    other = Ed25519PrivateKey.generate().public_key()
    bad = verify(d, other).first_bad
    assert bad.kind == "bad_signature" and "not among" in bad.detail


def test_a_torn_last_line_is_reported_as_torn_not_tampering(tmp_path: Path) -> None:
    d = tmp_path / "j"
    journal = _journal(d, checkpoint_every=100)
    for i in range(3):
        journal.append("span", {"name": f"s{i}"})
    # a process killed in the middle of write(): half a line, no newline, never acknowledged
    with (d / "journal-000001.jsonl").open("ab") as f:
        f.write(b'{"body":{"name":"s3"},"kind":"span","prev":"ab')
    report = verify(d)
    assert report.ok
    assert report.torn_tail is not None and report.torn_tail.where == "journal-000001.jsonl:5"
    assert not report.sealed and report.unsealed_records == 3
    os.close(journal._fd)  # the writer "died": no close checkpoint

    # the next start sets the torn bytes aside, records that in a signed checkpoint and continues the chain
    journal = _journal(d, checkpoint_every=100)
    journal.append("span", {"name": "after restart"})
    journal.close()
    report = verify(d)
    assert report.ok and report.torn_tail is None and report.sealed
    assert report.recovered[0]["saved_as"] == "journal-000001.jsonl.torn-" + str(report.recovered[0]["offset"])
    assert (d / report.recovered[0]["saved_as"]).read_bytes().startswith(b'{"body":{"name":"s3"}')
    assert [r["body"].get("name") for r in records(d) if r["kind"] == "span"] == ["s0", "s1", "s2", "after restart"]


def test_a_restart_after_a_clean_close_continues_the_chain(tmp_path: Path) -> None:
    d = tmp_path / "j"
    _fill(d, 2)
    _fill(d, 2)
    report = verify(d)
    assert report.ok and report.sealed
    seqs = [r["seq"] for r in records(d)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_opening_a_truncated_journal_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "j"
    _fill(d)
    _rewrite(d, lines(d)[:-2])
    with pytest.raises(JournalUnavailable, match="signed head"):
        _journal(d).open()


def test_rotation_keeps_one_chain_across_files(tmp_path: Path) -> None:
    d = tmp_path / "j"
    journal = _journal(d, rotate_bytes=4096, checkpoint_every=7)
    for i in range(60):
        journal.append("span", {"name": f"s{i}", "attributes": {"pad": "x" * 200}})
    journal.close()
    files = sorted(p.name for p in d.glob("journal-*.jsonl"))
    assert len(files) >= 3 and files[:2] == ["journal-000001.jsonl", "journal-000002.jsonl"]
    assert all((d / f).stat().st_size <= 4096 + 600 for f in files)
    report = verify(d)
    assert report.ok and report.files == files and report.sealed
    first_of_second = json.loads(lines(d, files[1])[0])
    last_of_first = json.loads(lines(d, files[0])[-1])
    assert last_of_first["kind"] == "rotate" and last_of_first["body"]["next"] == files[1]
    assert first_of_second["prev"] == last_of_first["hash"]
    # and a restart continues in the last file
    journal = _journal(d, rotate_bytes=4096)
    journal.append("span", {"name": "later"})
    journal.close()
    assert verify(d).ok


def test_deleting_the_last_rotated_file_is_caught(tmp_path: Path) -> None:
    d = tmp_path / "j"
    journal = _journal(d, rotate_bytes=4096, checkpoint_every=1000)
    for i in range(40):
        journal.append("span", {"name": f"s{i}", "attributes": {"pad": "x" * 200}})
    journal.close()
    files = sorted(d.glob("journal-*.jsonl"))
    files[-1].unlink()
    (d / "journal.head").unlink()
    bad = verify(d).first_bad
    assert bad.kind == "truncated" and "missing" in bad.detail


def test_deleting_a_middle_file_is_caught(tmp_path: Path) -> None:
    d = tmp_path / "j"
    journal = _journal(d, rotate_bytes=4096)
    for i in range(60):
        journal.append("span", {"name": f"s{i}", "attributes": {"pad": "x" * 200}})
    journal.close()
    files = sorted(d.glob("journal-*.jsonl"))
    files[1].unlink()
    bad = verify(d).first_bad
    assert bad.kind == "deleted" and bad.file == files[2].name and bad.line == 1


def test_batch_mode_writes_before_returning_and_checkpoints_on_interval(tmp_path: Path) -> None:
    import time

    d = tmp_path / "j"
    journal = _journal(d, fsync="batch", fsync_batch_interval_ms=10, checkpoint_interval_s=0.05)
    journal.append("span", {"name": "s0"})
    assert len(lines(d)) == 2  # the start's opened checkpoint, then the span
    time.sleep(0.3)
    assert records(d)[-1]["kind"] == "checkpoint" and records(d)[-1]["body"]["reason"] == "interval"
    journal.close()
    assert verify(d).ok


_CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from pgwarden.audit import AuditRecorder, AuditSettings
    sys.path.insert(0, sys.argv[2])
    from audit_helpers import run_statement
    recorder = AuditRecorder(AuditSettings(journal_dir=Path(sys.argv[1]), checkpoint_every=1000))
    session = recorder.start_session("alice", [], "wire", "shop")
    run_statement(recorder, session, "SELECT 'the last one'")
    os.kill(os.getpid(), 9)  # SIGKILL right after the block returned: no close, no flush, no atexit
    """
)


def test_a_record_survives_sigkill_right_after_the_block(tmp_path: Path) -> None:
    d = tmp_path / "j"
    child = subprocess.run([sys.executable, "-c", _CHILD, str(d), str(Path(__file__).parent)],
                           capture_output=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    texts = [r["body"]["attributes"].get("db.query.text") for r in records(d) if r["kind"] == "span"]
    assert texts == ["SELECT 'the last one'"]
    report = verify(d)
    assert report.ok and not report.sealed and report.unsealed_records == 1
    # and the next start recovers and continues
    recorder = AuditRecorder(AuditSettings(journal_dir=d))
    run_statement(recorder, recorder.start_session("bob", [], "wire", "shop"))
    recorder.close()
    report = verify(d)
    assert report.ok and report.sealed
    assert [r["body"].get("reason") for r in records(d) if r["kind"] == "checkpoint"] == ["opened", "recovered",
                                                                                         "close"]


def test_recorder_journal_with_real_statements_verifies(tmp_path: Path) -> None:
    settings = AuditSettings(journal_dir=tmp_path / "j", checkpoint_every=2, rotate_bytes=8192)
    recorder = AuditRecorder(settings)
    session = recorder.start_session("alice", [], "wire", "shop")
    for _ in range(10):
        run_statement(recorder, session)
    session.end()
    recorder.close()
    report = verify(settings.journal_dir, settings.journal_dir / "journal.pub")
    assert report.ok and len(report.files) > 1


def test_a_second_process_cannot_write_the_same_journal_directory(tmp_path) -> None:
    # Two writers would fork the hash chain; the second is refused with a clear error.
    import subprocess
    import sys

    from pgwarden.audit.journal import Journal, JournalUnavailable

    directory = tmp_path / "journal"
    key = tmp_path / "signing.key"
    first = Journal(directory, key)
    first.open()
    code = (f"from pathlib import Path\nfrom pgwarden.audit.journal import Journal, JournalUnavailable\n"
            f"j = Journal(Path({str(directory)!r}), Path({str(key)!r}))\n"
            "try:\n    j.open()\nexcept JournalUnavailable as e:\n    print('refused:', e.message)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "refused:" in out.stdout and "another process" in out.stdout, out.stdout + out.stderr
    first.close()
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "refused" not in again.stdout, again.stdout  # released on close
    assert JournalUnavailable
