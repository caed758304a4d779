"""Every public bypass case, decided and executed against a real PostgreSQL.

Each case goes through the doors that exist so far — the ``pgwarden check``
command (a real subprocess) and the engine session that MCP and the wire proxy
drive (real psycopg upstream) — parametrised so they cannot drift apart. The
database is seeded with the cases' own fixture; the catalog is read from it.

Expectations (from the cases file): ``deny`` — refused before PostgreSQL, and
nothing changed; ``no_leak`` — refused, or run with no sentinel anywhere the
client receives (values, column names, errors, notices); ``allow`` — runs and
returns exactly what PostgreSQL returns directly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import psycopg
import pytest
import yaml

from pgwarden.engine.config import load_config
from pgwarden.engine.gateway import Gateway
from pgwarden.engine.identity import Principal
from pgwarden.engine.session import Session, StatementRefused
from pgwarden.errors import PgwardenError
from pgwarden.policy.verdict import Decision
from support.cases import load_public_cases

CASES = load_public_cases().cases
SENTINELS = ("4111111111111111", "5500005555555559", "078-05-1120", "219-09-9999",
             "zed.sentinel@example.org", "sk_live_SENTINEL123")
REPO = Path(__file__).resolve().parents[2]
AGENT = Principal.local("agent", {"ai-agents"})


@pytest.fixture(autouse=True)
def _mask_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")


def gateway_for(dsn: str) -> Gateway:
    config = load_config(REPO / "examples" / "public_cases.yaml").with_target_dsn("main", dsn)
    gateway = Gateway(config)
    anyio.run(gateway.refresh_catalog, "main")
    return gateway


def config_file(tmp_path: Path, dsn: str) -> Path:
    data = yaml.safe_load((REPO / "examples" / "public_cases.yaml").read_text())
    data["targets"]["main"]["dsn"] = dsn
    data["targets"]["main"].pop("password", None)
    path = tmp_path / "pgwarden.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def state_of(dsn: str) -> tuple:
    """What a denied statement must not change: tables and their row counts."""
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname IN ('public', 'billing') ORDER BY 1, 2").fetchall()
        counts = tuple(conn.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchone()[0] for s, t in tables)
    return tuple(tables), counts


def received_text(result) -> str:
    parts = []
    for r in result.results:
        parts.extend(r.columns)
        parts.extend(str(v) for row in r.rows for v in row)
    parts.extend(result.notices)
    return "\n".join(parts)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_check_command(case, public_cases_db: str, tmp_path: Path) -> None:
    """``pgwarden check`` with the catalog read from the seeded database."""
    proc = subprocess.run(
        [sys.executable, "-m", "pgwarden.cli", "check", "--config", str(config_file(tmp_path, public_cases_db)),
         "--as", "agent", "--groups", "ai-agents", "--json", case.sql],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1, 4), proc.stderr
    verdict = yaml.safe_load(proc.stdout)
    assert verdict["catalog"].startswith("live"), proc.stderr
    assert {0: "allow", 1: "deny", 4: "needs_approval"}[proc.returncode] == verdict["decision"]
    if case.expect == "deny":
        assert verdict["decision"] == "deny", verdict["reasons"]
        assert verdict["reasons"] and all(r["code"] and r["message"] for r in verdict["reasons"])
    elif case.expect == "allow":
        assert verdict["decision"] == "allow", verdict["reasons"]
    else:
        assert verdict["decision"] in ("allow", "deny")
    for value in SENTINELS:
        assert value not in proc.stdout


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_session_executes_case(case, public_cases_db: str, make_db) -> None:
    dsn = make_db(load_public_cases().fixture_sql) if case.expect == "deny" else public_cases_db
    gateway = gateway_for(dsn)
    before = state_of(dsn)

    async def go():
        try:
            async with Session(gateway, AGENT, "main") as session:
                return await session.run(case.sql)
        finally:
            await gateway.close()

    if case.expect == "deny":
        with pytest.raises(StatementRefused) as refused:
            anyio.run(go)
        assert refused.value.verdict.decision is Decision.DENY
        assert state_of(dsn) == before
        return
    try:
        result = anyio.run(go)
    except StatementRefused as exc:
        assert case.expect == "no_leak", f"false denial: {exc.message}"
        return
    except PgwardenError as exc:  # an upstream error: its text must not leak either
        assert case.expect == "no_leak"
        assert not any(s in exc.message for s in SENTINELS)
        return
    text = received_text(result)
    for value in SENTINELS:
        assert value not in text, f"{value} leaked through {case.sql!r}"
    if case.expect == "allow":
        with psycopg.connect(dsn) as conn:
            expected = [tuple(None if v is None else str(v) for v in row) for row in conn.execute(case.sql)]
        assert [tuple(row) for row in result.results[-1].rows] == expected
    assert state_of(dsn) == before
