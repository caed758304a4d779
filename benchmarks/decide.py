"""How much a verdict costs: ``Decider.decide`` uncached and cached, against its parser baseline.

Run with ``.venv/bin/python benchmarks/decide.py`` (add ``--profile`` for a
cProfile of the uncached OLTP path). No database is needed: the catalog and the
policy are built in-process below, mirroring ``tests/support/policies.py`` and
``examples/public_cases.yaml``, plus the four pgbench tables and a rule for an
OLTP application.

What is measured
  * OLTP statements (pgbench select-only / tpcb-like with literals, a
    primary-key lookup on customers, a small join), decided for the ``app``
    principal (read + write on public, masks apply).
  * The mixed corpus: every statement of tests/corpus/*.yaml plus the public
    bypass cases (tests/data/public_cases.yaml), decided for the read-only
    ``agent`` principal of the public cases.

How the cache is defeated (UNCACHED figures)
  Every round uses a *fresh* ``Decider`` (its verdict cache starts empty), and
  within a round every text is distinct: OLTP texts vary their literals the way
  pgbench does between transactions, corpus texts are de-duplicated. After each
  round the benchmark asserts that the cache grew by exactly the number of
  cacheable texts decided, so every timed call was a real miss. The view-lineage
  cache (keyed by catalog version) stays warm, as it would in a running gateway.

CACHED figures decide the same text again and again after one priming call and
assert the very same Verdict object comes back and the cache did not grow.

Method: time.perf_counter_ns; one warm-up round, then ROUNDS rounds, interleaved
across everything measured in a section (so a burst of noise hits one round of
many figures rather than all rounds of one), reporting the median of the
per-round figures; the garbage collector is disabled during
timing rounds (gc.collect() before each). Targets (from the issue): <= 25 us
per uncached verdict for typical OLTP statements, <= 2 us cached. PASS/MISS is
printed next to each figure; the exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import math
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pglast
import yaml
from pglast import parser

from pgwarden.policy.catalog import Catalog, Column, Relation, merge
from pgwarden.policy.decision import Decider
from pgwarden.policy.language import PolicyDocument
from pgwarden.policy.sql import analyse
from pgwarden.policy.verdict import Decision

REPO = Path(__file__).resolve().parents[1]
CORPUS_DIR = REPO / "tests" / "corpus"
PUBLIC_CASES = REPO / "tests" / "data" / "public_cases.yaml"

ROUNDS = 7
OLTP_TEXTS = 300  # distinct texts per OLTP statement per round
CACHED_CALLS = 5000  # calls per OLTP statement per cached round
CORPUS_CACHED_CALLS = 100  # calls per corpus statement per cached round
UNCACHED_TARGET_US = 25.0
CACHED_TARGET_US = 2.0

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def BENCH_KEY(mask) -> bytes:
    return b"bench-mask-key-0123456789abcdef"


# -- the world: catalog and policy ----------------------------------------------------------------
# The public cases' schema comes from the tests' own fixture (one definition of it); the
# benchmark adds the pgbench tables, typed as pgbench -i creates them.

sys.path.insert(0, str(REPO / "tests"))
from support.policies import fixture_catalog  # noqa: E402


def _table(name: str, columns: list[str], oid: int) -> Relation:
    ints = {"aid", "bid", "tid", "abalance", "bbalance", "tbalance", "delta"}
    return Relation("public", name, "r",
                    tuple(Column(c, i + 1, "int4" if c in ints else "text") for i, c in enumerate(columns)), oid)


def bench_catalog() -> Catalog:
    fixture = fixture_catalog()
    pgbench = [
        _table("pgbench_accounts", ["aid", "bid", "abalance", "filler"], 16500),
        _table("pgbench_branches", ["bid", "bbalance", "filler"], 16510),
        _table("pgbench_tellers", ["tid", "bid", "tbalance", "filler"], 16520),
        _table("pgbench_history", ["tid", "bid", "aid", "delta", "mtime", "filler"], 16530),
    ]
    return merge(fixture, pgbench, {}, search_path=fixture.search_path, version="bench-1", complete=True)


def bench_policy() -> PolicyDocument:
    """examples/public_cases.yaml's rules and masks, plus an OLTP application rule."""
    return PolicyDocument.model_validate({
        "rules": [
            {"name": "ai-agents", "match": {"groups": ["ai-agents"]}, "target": "main",
             "statements": {"allow": ["read"]},
             "approval": {"required_for": ["ddl"], "approvers": ["dba"]},
             "schemas": {"allow": ["public"], "deny": ["billing"]},
             "tables": {"allow": ["*"], "deny": ["public.secrets"]}},
            {"name": "oltp-app", "match": {"groups": ["app"]}, "target": "main",
             "statements": {"allow": ["read", "write", "transaction"]},
             "schemas": {"allow": ["public"]},
             "tables": {"allow": ["*"], "deny": ["public.secrets"]}},
            {"name": "dba", "match": {"groups": ["dba"]}, "target": "main",
             "statements": {"allow": ["read", "write", "ddl", "transaction"]},
             "schemas": {"allow": ["*"]}},
        ],
        "masking": {"columns": [
            {"column": "public.customers.card_number", "strategy": "keep_last", "keep": 4},
            {"column": "public.customers.ssn", "strategy": "redact"},
            {"column": "public.customers.email", "strategy": "hash", "key": {"env": "PGWARDEN_MASK_KEY"}},
        ]},
    })


APP = ("app", frozenset({"app"}))
AGENT = ("agent", frozenset({"ai-agents"}))


# -- workloads --------------------------------------------------------------------------


def _lit(i: int, salt: int, lo: int, hi: int) -> int:
    # deterministic, well spread, distinct for distinct i as long as OLTP_TEXTS < hi - lo
    return lo + (i * 7919 + salt * 104729) % (hi - lo + 1)


# (label, text for variant i). pgbench texts are exactly what the server logged
# (tests/corpus/pgbench.yaml), with pgbench's :aid/:tid/:bid/:delta literals varied.
OLTP: list[tuple[str, Callable[[int], str]]] = [
    ("pgbench select-only (= tpcb SELECT)",
     lambda i: f"SELECT abalance FROM pgbench_accounts WHERE aid = {_lit(i, 1, 1, 100000)};"),
    ("tpcb UPDATE pgbench_accounts",
     lambda i: f"UPDATE pgbench_accounts SET abalance = abalance + {_lit(i, 2, -5000, 5000)} "
               f"WHERE aid = {_lit(i, 3, 1, 100000)};"),
    ("tpcb UPDATE pgbench_tellers",
     lambda i: f"UPDATE pgbench_tellers SET tbalance = tbalance + {_lit(i, 4, -5000, 5000)} "
               f"WHERE tid = {_lit(i, 5, 1, 10)};"),
    ("tpcb UPDATE pgbench_branches",
     lambda i: f"UPDATE pgbench_branches SET bbalance = bbalance + {_lit(i, 6, -5000, 5000)} "
               f"WHERE bid = 1;"),
    ("tpcb INSERT pgbench_history",
     lambda i: f"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES "
               f"({_lit(i, 7, 1, 10)}, 1, {_lit(i, 8, 1, 100000)}, {_lit(i, 9, -5000, 5000)}, CURRENT_TIMESTAMP);"),
    ("customers primary-key lookup",
     lambda i: f"SELECT id, full_name, email FROM customers WHERE id = {i + 1}"),
    ("small join orders-customers",
     lambda i: f"SELECT o.id, o.amount, c.full_name FROM orders o JOIN customers c ON c.id = o.customer_id "
               f"WHERE o.id = {i + 1}"),
]


def oltp_texts() -> list[tuple[str, list[str]]]:
    out = []
    for label, make in OLTP:
        texts = [make(i) for i in range(OLTP_TEXTS)]
        assert len(set(texts)) == len(texts), f"OLTP texts of {label!r} are not distinct"
        out.append((label, texts))
    return out


def corpus() -> list[tuple[str, str]]:
    """(source, text) for every distinct statement of tests/corpus/*.yaml and the public cases."""
    items: list[tuple[str, str]] = []
    for path in sorted(CORPUS_DIR.glob("*.yaml")):
        for sql in yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)["statements"]:
            items.append((path.stem, sql))
    for case in yaml.load(PUBLIC_CASES.read_text(encoding="utf-8"), Loader=Loader)["cases"]:
        items.append(("public_cases", case["sql"]))
    seen: set[str] = set()
    unique = []
    for source, sql in items:
        if sql not in seen:
            seen.add(sql)
            unique.append((source, sql))
    return unique


# -- timing helpers -----------------------------------------------------------------------


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def rounds(tasks: Sequence[Callable[[], object]], n: int = ROUNDS) -> list[list]:
    """One warm-up run of each task, then ``n`` rounds, each running every task once with the GC off.

    Rounds are interleaved (task 1, task 2, …, task 1, task 2, …) so that a burst of noise
    on a shared machine lands in one round of several tasks, not in every round of one
    task; the median of rounds then drops it. Returns each task's ``n`` results.
    """
    for run in tasks:
        run()
    results: list[list] = [[] for _ in tasks]
    for _ in range(n):
        for run, out in zip(tasks, results, strict=True):
            gc.collect()
            gc.disable()
            try:
                out.append(run())
            finally:
                gc.enable()
    return results


def per_call_batch(fn: Callable[[str], object], texts: Sequence[str]) -> float:
    """µs per call of ``fn`` over ``texts`` (one timer pair around the whole loop)."""
    t0 = time.perf_counter_ns()
    for text in texts:
        fn(text)
    return (time.perf_counter_ns() - t0) / len(texts) / 1000


def timer_overhead_ns() -> float:
    samples = []
    for _ in range(20000):
        t0 = time.perf_counter_ns()
        t1 = time.perf_counter_ns()
        samples.append(t1 - t0)
    return statistics.median(samples)


def mark(value: float, target: float) -> str:
    return "PASS" if value <= target else "MISS"


# -- decisions ----------------------------------------------------------------------------


def make_decide(decider: Decider, catalog: Catalog, principal: tuple[str, frozenset[str]]):
    subject, groups = principal
    decide = decider.decide

    def run(sql: str):
        return decide(sql, subject=subject, groups=groups, catalog=catalog)
    return run


def uncached_round(policy: PolicyDocument, catalog: Catalog, texts: Sequence[str],
                   principal=APP) -> float:
    """Fresh Decider, every text distinct: µs per verdict, all misses (checked)."""
    decider = Decider(policy, mask_key=BENCH_KEY, version="bench", cache_size=len(texts) + 16, shape_cache=False)
    us = per_call_batch(make_decide(decider, catalog, principal), texts)
    assert len(decider._cache) == len(texts), "uncached round: a call hit the cache"
    return us


def shape_round(policy: PolicyDocument, catalog: Catalog, texts: Sequence[str], principal=APP) -> float:
    """Fresh Decider primed with one text; then the same statement with new literals (shape-cache hits)."""
    decider = Decider(policy, mask_key=BENCH_KEY, version="bench", cache_size=len(texts) + 16)
    run = make_decide(decider, catalog, principal)
    primed = run(texts[0])
    size = len(decider._cache)
    us = per_call_batch(run, texts[1:])
    last = run(texts[-1])
    if primed.upstream_text is not None:
        # A masked verdict is shared with its splices placed in each text: a new Verdict object with
        # the cached one's plans (a full analysis would have built new ones), the rewrite in this text,
        # kept under this exact text too.
        assert last.plans is primed.plans and last.upstream_text != primed.upstream_text, \
            "shape round: a masked call missed the shape cache"
        assert len(decider._cache) == size + len(texts) - 1, "shape round: a masked call missed the shape cache"
    else:
        assert last is primed and len(decider._cache) == size, "shape round: a call missed the shape cache"
    return us


def cached_round(decider: Decider, catalog: Catalog, text: str, principal=APP,
                 calls: int = CACHED_CALLS) -> float:
    run = make_decide(decider, catalog, principal)
    primed = run(text)
    size = len(decider._cache)
    subject, groups = principal
    decide = decider.decide
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        decide(text, subject=subject, groups=groups, catalog=catalog)
    us = (time.perf_counter_ns() - t0) / calls / 1000
    assert run(text) is primed and len(decider._cache) == size, "cached round: a call missed the cache"
    return us


# -- sections -----------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def header() -> None:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    print("pgwarden decision benchmark (benchmarks/decide.py)")
    print(f"  python   {platform.python_implementation()} {sys.version.split()[0]} ({sys.executable})")
    print(f"  pglast   {pglast.__version__} (libpg_query, PostgreSQL {'.'.join(map(str, parser.get_postgresql_version()))})"
          f"; orjson {orjson.__version__}")
    print(f"  machine  {platform.machine()} {platform.system()} {platform.release()}; "
          f"{cpu_model()}; cores: os.cpu_count()={os.cpu_count()}, usable={affinity}")
    print(f"  method   perf_counter_ns; 1 warm-up + {ROUNDS} rounds, rounds interleaved, median of rounds; gc disabled during rounds")
    print("  uncached fresh Decider per round + distinct texts per round (literals varied like pgbench);")
    print("           cache growth asserted == texts decided, so every timed call is a real miss")
    print(f"  cached   same text {CACHED_CALLS}x after priming; asserted same Verdict object, cache unchanged")
    print(f"  targets  uncached OLTP <= {UNCACHED_TARGET_US:g} us, cached <= {CACHED_TARGET_US:g} us "
          "(PASS/MISS shown; exit status 0 regardless)")
    print(f"  timer    perf_counter_ns pair overhead ~{timer_overhead_ns():.0f} ns (only matters for per-call timings)")
    print()


def oltp_section(policy: PolicyDocument, catalog: Catalog) -> dict[str, float]:
    workloads = oltp_texts()
    print(f"(a) OLTP statements: principal 'app' (rule oltp-app), {OLTP_TEXTS} distinct texts per statement "
          "per round")
    # sanity: what the verdicts are
    probe = make_decide(Decider(policy, version="probe", mask_key=BENCH_KEY), catalog, APP)
    for label, texts in workloads:
        v = probe(texts[0])
        masks = sum(len(p.masks) for p in v.plans)
        assert v.decision is Decision.ALLOW, (label, v.reasons)
        print(f"    {label:<38} -> {v.decision.value}, {masks} mask(s)   e.g. {texts[0]}")
    print()

    def parse_then_loads(sql: str):
        return orjson.loads(parser.parse_sql_json(sql))

    def analyse_only(sql: str):
        return analyse(sql, catalog)

    # per statement: uncached verdict, cached verdict, then the baselines on the same texts
    tasks: list[Callable[[], float]] = []
    for _, texts in workloads:
        decider = Decider(policy, version="bench", mask_key=BENCH_KEY)
        tasks += [
            lambda t=texts: uncached_round(policy, catalog, t),
            lambda t=texts: shape_round(policy, catalog, t),
            lambda t=texts[0], d=decider: cached_round(d, catalog, t),
            lambda t=texts: per_call_batch(parser.parse_sql_json, t),
            lambda t=texts: per_call_batch(parse_then_loads, t),
            lambda t=texts: per_call_batch(analyse_only, t),
            lambda t=texts: per_call_batch(pglast.parse_sql, t),
        ]
    medians = [statistics.median(r) for r in rounds(tasks)]
    rows = [(label, *medians[7 * i:7 * i + 7]) for i, (label, _) in enumerate(workloads)]

    print(f"    {'statement':<38} {'uncached':>9}      {'literals':>8}      {'cached':>7}      {'parse_json':>10} "
          f"{'+orjson':>8} {'analyse()':>9} {'parse_sql':>9}   ratios of uncached verdict")
    print(f"    {'':<38} {'us':>9}      {'us':>8}      {'us':>7}      {'us':>10} {'us':>8} {'us':>9} {'us':>9}")
    for label, unc, shp, cac, js, jo, an, ast in rows:
        print(f"    {label:<38} {unc:9.2f} {mark(unc, UNCACHED_TARGET_US)} {shp:8.2f} {mark(shp, UNCACHED_TARGET_US)} "
              f"{cac:7.3f} {mark(cac, CACHED_TARGET_US)} "
              f"{js:10.2f} {jo:8.2f} {an:9.2f} {ast:9.2f}   {unc / js:4.1f}x parse_sql_json, {unc / ast:4.2f}x parse_sql")
    mean = [statistics.fmean(col) for col in zip(*(r[1:] for r in rows), strict=True)]
    unc, shp, cac, js, jo, an, ast = mean
    print(f"    {'MEAN over the OLTP statements':<38} {unc:9.2f} {mark(unc, UNCACHED_TARGET_US)} {shp:8.2f} "
          f"{mark(shp, UNCACHED_TARGET_US)} {cac:7.3f} "
          f"{mark(cac, CACHED_TARGET_US)} {js:10.2f} {jo:8.2f} {an:9.2f} {ast:9.2f}   "
          f"{unc / js:4.1f}x parse_sql_json, {unc / ast:4.2f}x parse_sql")
    print("    (uncached: full analysis, both caches off; literals: the same statement with new literals, served")
    print("     by the shape cache keyed on pg_query's normalised text — masked statements with their splices")
    print("     placed in the new text; cached: the exact text again)")
    print()
    print(f"    => uncached verdict = {unc / js:.1f}x parse_sql_json alone, {unc / jo:.1f}x parse_sql_json+orjson.loads, "
          f"{unc / ast:.2f}x pglast.parse_sql (Python AST)")
    print(f"       of the uncached verdict: parse_sql_json {js / unc:.0%}, orjson.loads {(jo - js) / unc:.0%}, "
          f"walk/analysis {(an - jo) / unc:.0%}, decision + cache bookkeeping {(unc - an) / unc:.0%}")
    print(f"    => uncached OLTP mean {unc:.2f} us  [{mark(unc, UNCACHED_TARGET_US)} target <= {UNCACHED_TARGET_US:g} us]; "
          f"worst {max(r[1] for r in rows):.2f} us [{mark(max(r[1] for r in rows), UNCACHED_TARGET_US)}]")
    print(f"    => new-literals OLTP mean {shp:.2f} us  [{mark(shp, UNCACHED_TARGET_US)} target <= "
          f"{UNCACHED_TARGET_US:g} us]; {shp / js:.1f}x parse_sql_json alone")
    print(f"    => cached OLTP mean {cac:.3f} us  [{mark(cac, CACHED_TARGET_US)} target <= {CACHED_TARGET_US:g} us]; "
          f"worst {max(r[3] for r in rows):.3f} us [{mark(max(r[3] for r in rows), CACHED_TARGET_US)}]")
    print()
    return {"uncached": unc, "cached": cac}


def corpus_section(policy: PolicyDocument, catalog: Catalog) -> None:
    items = corpus()
    texts = [sql for _, sql in items]
    by_source: dict[str, int] = {}
    for source, _ in items:
        by_source[source] = by_source.get(source, 0) + 1
    print(f"(b) mixed corpus: {len(items)} distinct statements "
          f"({', '.join(f'{k} {v}' for k, v in by_source.items())}); principal 'agent' (rule ai-agents)")

    # Which texts the Decider caches at all (EXECUTE / FETCH / cursor statements are never cached).
    # The corpus is measured with the shape cache off: each text is its own statement here.
    d0 = Decider(policy, mask_key=BENCH_KEY, version="probe", cache_size=len(texts) + 16, shape_cache=False)
    run0 = make_decide(d0, catalog, AGENT)
    cacheable = []
    decisions: dict[str, int] = {}
    for sql in texts:
        before = len(d0._cache)
        v = run0(sql)
        decisions[v.decision.value] = decisions.get(v.decision.value, 0) + 1
        cacheable.append(len(d0._cache) > before)
    n_cacheable = sum(cacheable)
    print(f"    verdicts: {', '.join(f'{k} {v}' for k, v in sorted(decisions.items()))}; "
          f"{len(texts) - n_cacheable} statement(s) are never cached (EXECUTE/FETCH/cursor), "
          "left out of the cached figures")

    def uncached_corpus_round() -> list[float]:
        decider = Decider(policy, mask_key=BENCH_KEY, version="bench", cache_size=len(texts) + 16, shape_cache=False)
        decide = decider.decide
        subject, groups = AGENT
        times = []
        clock = time.perf_counter_ns
        for sql in texts:
            t0 = clock()
            decide(sql, subject=subject, groups=groups, catalog=catalog)
            times.append(clock() - t0)
        assert len(decider._cache) == n_cacheable, "corpus uncached round: a call hit the cache"
        return times

    def parse_json_round() -> list[float]:
        times = []
        clock = time.perf_counter_ns
        parse = parser.parse_sql_json
        for sql in texts:
            t0 = clock()
            with contextlib.suppress(parser.ParseError):
                parse(sql)
            times.append(clock() - t0)
        return times

    def cached_corpus_round() -> list[float | None]:
        decider = Decider(policy, mask_key=BENCH_KEY, version="bench", cache_size=len(texts) + 16, shape_cache=False)
        decide = decider.decide
        subject, groups = AGENT
        out: list[float | None] = []
        clock = time.perf_counter_ns
        for sql, ok in zip(texts, cacheable, strict=True):
            if not ok:
                out.append(None)
                continue
            primed = decide(sql, subject=subject, groups=groups, catalog=catalog)
            t0 = clock()
            for _ in range(CORPUS_CACHED_CALLS):
                decide(sql, subject=subject, groups=groups, catalog=catalog)
            out.append((clock() - t0) / CORPUS_CACHED_CALLS)
            assert decide(sql, subject=subject, groups=groups, catalog=catalog) is primed
        assert len(decider._cache) == n_cacheable
        return out

    unc_rounds, js_rounds, cac_rounds = rounds([uncached_corpus_round, parse_json_round, cached_corpus_round])
    # per statement: median over the rounds, in µs
    unc = [statistics.median(r[i] for r in unc_rounds) / 1000 for i in range(len(texts))]
    js = [statistics.median(r[i] for r in js_rounds) / 1000 for i in range(len(texts))]
    cac = [statistics.median(r[i] for r in cac_rounds) / 1000 for i in range(len(texts)) if cacheable[i]]
    ratio = [u / j for u, j in zip(unc, js, strict=True)]

    def line(name: str, values: list[float], fmt: str = "9.2f", extra: str = "") -> None:
        print(f"    {name:<34} median {format(statistics.median(values), fmt)}  "
              f"p95 {format(pct(values, 95), fmt)}  mean {format(statistics.fmean(values), fmt)}  "
              f"max {format(max(values), fmt)}{extra}")

    print("    per-statement cost in us (each statement: median of its rounds; single-call timings):")
    line("uncached verdict, all", unc)
    for source in by_source:
        line(f"  {source}", [u for (s, _), u in zip(items, unc, strict=True) if s == source])
    line(f"cached verdict ({n_cacheable} cacheable)", cac, "9.3f",
         f"   [{mark(statistics.median(cac), CACHED_TARGET_US)} median, "
         f"{mark(pct(cac, 95), CACHED_TARGET_US)} p95 vs <= {CACHED_TARGET_US:g} us]")
    line("parse_sql_json alone", js)
    line("ratio uncached / parse_sql_json", ratio, "9.1f")
    print(f"    whole corpus: uncached {sum(unc) / 1000:.1f} ms for {len(texts)} statements "
          f"= {sum(unc) / sum(js):.1f}x parse_sql_json alone ({sum(js) / 1000:.1f} ms)")
    slowest = sorted(range(len(texts)), key=lambda i: -unc[i])[:5]
    print("    slowest uncached statements:")
    for i in slowest:
        text = " ".join(texts[i].split())
        print(f"      {unc[i]:8.1f} us ({ratio[i]:4.1f}x parse_sql_json, {len(texts[i]):5d} chars) "
              f"[{items[i][0]}] {text[:90]}")
    print()


def profile_section(policy: PolicyDocument, catalog: Catalog) -> None:
    texts = [t for _, ts in oltp_texts() for t in ts]
    decider = Decider(policy, mask_key=BENCH_KEY, version="profile", cache_size=len(texts) + 16, shape_cache=False)
    run = make_decide(decider, catalog, APP)
    for t in texts[:50]:  # warm the imports and the view cache, not the verdict cache
        analyse(t, catalog)
    prof = cProfile.Profile()
    prof.enable()
    for t in texts:
        run(t)
    prof.disable()
    assert len(decider._cache) == len(texts)
    print(f"--profile: cProfile of {len(texts)} uncached OLTP verdicts (all distinct texts, one fresh Decider); "
          "cProfile inflates Python-level call costs")
    for key, count in (("cumulative", 25), ("tottime", 20)):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(key).print_stats(count)
        body = buf.getvalue()
        start = body.find("   ncalls")
        print(f"  top {count} by {key} time:")
        print(body[start:].rstrip())
        print()


MASKED_TEXTS = [
    "SELECT id, email, card_number FROM customers WHERE id = {i}",
    "SELECT c.id, lower(c.email) FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.amount > {i}",
    "SELECT count(*) FROM customers WHERE card_number LIKE '4{i}%'",
    "SELECT row_to_json(c) FROM customers c WHERE c.id IN (SELECT customer_id FROM orders WHERE id = {i})",
]


def masked_section(policy: PolicyDocument, catalog: Catalog) -> None:
    """The mask rewrite's cost: verdicts that splice masking derived tables into the text."""
    os.environ.setdefault("PGWARDEN_MASK_KEY", "bench-mask-key")
    key = b"bench-derived-key-0123456789abcdef"
    texts = [t.format(i=i) for i in range(1, 401) for t in MASKED_TEXTS]
    same = [MASKED_TEXTS[0].format(i=i) for i in range(1, 2001)]  # one shape, other literals
    js = min(per_call_batch(parser.parse_sql_json, texts) for _ in range(5))
    decider = Decider(policy, version="bench-mask", cache_size=len(texts) + 16, shape_cache=False,
                      mask_key=lambda m: key)
    run = make_decide(decider, catalog, AGENT)
    assert run(texts[0]).upstream_text
    unc = per_call_batch(run, texts)
    shaped = Decider(policy, version="bench-mask-shape", cache_size=len(same) + 16, mask_key=lambda m: key)
    run_shaped = make_decide(shaped, catalog, AGENT)
    shp = per_call_batch(run_shaped, same)
    repeat = make_decide(shaped, catalog, AGENT)
    rep = per_call_batch(repeat, same)
    plain = Decider(policy, mask_key=BENCH_KEY, version="bench-plain", cache_size=len(texts) + 16, shape_cache=False)
    unmasked = make_decide(plain, catalog, APP)
    plain_texts = [t.replace("customers", "orders").replace("email, card_number", "note, amount")
                   .replace("lower(c.email)", "c.note").replace("card_number LIKE", "note LIKE")
                   .replace("row_to_json(c) FROM orders c WHERE c.id IN (SELECT customer_id FROM orders",
                            "row_to_json(c) FROM orders c WHERE c.id IN (SELECT customer_id FROM orders")
                   for t in texts]
    base = per_call_batch(unmasked, plain_texts)
    print("masked verdicts (the mask rewrite; agent principal, three masks on public.customers):")
    print(f"  parse_sql_json {js:8.2f} us")
    print(f"  uncached masked verdict {unc:8.2f} us = {unc / js:4.1f}x parse_sql_json "
          f"(unmasked verdicts of similar texts {base:.2f} us = {base / js:.1f}x)")
    print(f"  same shape, new literals {shp:8.2f} us = {shp / js:4.1f}x parse_sql_json "
          "(the shape cache, splices placed in each new text)")
    print(f"  exact text repeated      {rep:8.2f} us = {rep / js:4.2f}x parse_sql_json")
    print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", action="store_true", help="also cProfile the uncached OLTP path")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    policy, catalog = bench_policy(), bench_catalog()
    header()
    oltp_section(policy, catalog)
    corpus_section(policy, catalog)
    masked_section(policy, catalog)
    if args.profile:
        profile_section(policy, catalog)
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
