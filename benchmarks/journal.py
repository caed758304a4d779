"""Cost of the audit record per statement: journal fsync=each, fsync=batch, and journal off.

A statement here is what the engine does for a real one: start the statement span, set the verdict's
attributes, the upstream text, a 20-row masked sample with its digest, and end it (which, with the journal
on, writes the hash-chained record and — for ``each`` — fdatasyncs it before returning). "off" is the same
recorder with no journal and no exporter, so the ratios isolate the journal. Run:

    .venv/bin/python benchmarks/journal.py [--statements N] [--rounds R] [--dir DIR]

``--dir`` picks the filesystem measured (default: a temporary directory; fsync cost depends on it).
The modes run interleaved in ``--rounds`` rounds of N/R statements each and each mode reports its median
round, so a noisy machine moves all three together and the ratios stay comparable.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Generator
from pathlib import Path

from pgwarden.audit import AuditRecorder, AuditSettings, ResultDigest, schema

COLUMNS = ["aid", "bid", "abalance", "filler", "email"]
ROWS = [[str(i), "1", str(i * 7), "x" * 84, f"u***{i}@example.org"] for i in range(20)]
TEXT = "SELECT aid, bid, abalance, filler, email FROM pgbench_accounts WHERE aid BETWEEN 1 AND 20"
VERDICT = {
    schema.DB_SYSTEM_NAME: "postgresql",
    schema.DB_QUERY_TEXT: TEXT,
    schema.QUERY_SHA256: schema.query_digest(TEXT),
    schema.DECISION: "allow",
    schema.POLICY_VERSION: "3f2a9c",
    schema.RULE: "ai-agents",
    schema.REASON_CODES: ["masked"],
    schema.REASONS: ["masked: email is masked for ai-agents"],
    schema.MASKED_COLUMNS: ["public.pgbench_accounts.email"],
    schema.DB_OPERATION_NAME: "SELECT",
    schema.DB_COLLECTION_NAME: "public.pgbench_accounts",
}


def bench(settings: AuditSettings) -> Generator[float, int, None]:
    """Send a statement count, receive the seconds per statement over that many; close() to finish."""
    recorder = AuditRecorder(settings)
    session = recorder.start_session("bench", ["agents"], "wire", "bench", "127.0.0.1", "jwt")

    def one() -> None:
        with recorder.statement(session, TEXT, attributes={schema.DB_NAMESPACE: "bench"}) as st:
            st.decided(VERDICT)
            st.upstream_text(TEXT + " LIMIT 1001")
            digest = ResultDigest(COLUMNS)
            digest.update_many(ROWS)
            st.result(COLUMNS, ROWS, len(ROWS), digest)

    try:
        n = yield 0.0
        while True:
            start = time.perf_counter()
            for _ in range(n):
                one()
            n = yield (time.perf_counter() - start) / n
    finally:
        session.end()
        recorder.close()


def run(settings: AuditSettings, n: int) -> float:
    """Seconds per statement (after a short warm-up)."""
    gen = bench(settings)
    next(gen)
    gen.send(max(1, min(200, n // 10)))
    per = gen.send(n)
    gen.close()
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    rounds = max(1, args.rounds)
    chunk = max(1, args.statements // rounds)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        modes = {
            "off": AuditSettings(journal_enabled=False),
            "batch": AuditSettings(journal_dir=base / "batch", fsync="batch"),
            "each": AuditSettings(journal_dir=base / "each", fsync="each"),
        }
        gens = {name: bench(settings) for name, settings in modes.items()}
        for gen in gens.values():
            next(gen)
            gen.send(max(1, min(200, args.statements // 10)))  # warm-up
        timings: dict[str, list[float]] = {name: [] for name in modes}
        names = list(modes)
        for r in range(rounds):
            for name in names[r % 3 :] + names[: r % 3]:
                timings[name].append(gens[name].send(chunk))
        for gen in gens.values():
            gen.close()
        results = {name: statistics.median(values) for name, values in timings.items()}
    off = results["off"]
    print(f"{chunk * rounds} statements per mode in {rounds} interleaved rounds (median round), "
          f"journal in {args.dir or tempfile.gettempdir()}")
    print(f"{'mode':<8}{'µs/statement':>14}{'added µs':>10}{'statements/s':>14}{'vs off':>8}")
    for name, per in results.items():
        print(f"{name:<8}{per * 1e6:>14.1f}{(per - off) * 1e6:>10.1f}{1 / per:>14.0f}{per / off:>8.2f}")


if __name__ == "__main__":
    main()
