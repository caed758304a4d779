"""The public bypass cases (``public_cases.yaml``): where to find them and how to read them.

The suite runs against ``tests/data/public_cases.yaml``, a verbatim copy of the
shared file, so it works wherever the repository is checked out. An explicit
``PGWARDEN_SHARED_DIR`` wins (to try a newer shared file without copying it);
``tests/test_fixtures.py`` checks the copy still equals the shared original
whenever that one is present.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TESTS_DIR.parent
BUNDLED_CASES = TESTS_DIR / "data" / "public_cases.yaml"
_SHARED_RELATIVE = Path("security") / "public_cases.yaml"


@dataclass(frozen=True, slots=True)
class Case:
    cls: str  # the bypass class, e.g. "alias", "denied_table", "legit"
    sql: str
    expect: str  # "deny", "no_leak" or "allow"

    @property
    def id(self) -> str:
        return f"{self.cls}:{self.sql[:40]}"


@dataclass(frozen=True, slots=True)
class PublicCases:
    path: Path
    fixture_sql: str
    cases: tuple[Case, ...]


def shared_cases_path() -> Path | None:
    """The shared original (``$PGWARDEN_SHARED_DIR`` or ``<repo>/../shared``), if it exists."""
    shared_dir = os.environ.get("PGWARDEN_SHARED_DIR")
    path = (Path(shared_dir) if shared_dir else REPO_ROOT.parent / "shared") / _SHARED_RELATIVE
    return path if path.is_file() else None


def public_cases_path() -> Path:
    if os.environ.get("PGWARDEN_SHARED_DIR"):
        shared = shared_cases_path()
        if shared is not None:
            return shared
    return BUNDLED_CASES


def load_public_cases(path: Path | None = None) -> PublicCases:
    path = path or public_cases_path()
    raw: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    cases = tuple(Case(cls=c["class"], sql=c["sql"], expect=c["expect"]) for c in raw["cases"])
    return PublicCases(path=path, fixture_sql=raw["fixture_sql"], cases=cases)
