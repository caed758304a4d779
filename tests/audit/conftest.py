"""Fixtures for the audit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_helpers import Receiver

from pgwarden.audit import AuditSettings


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def settings(tmp_path: Path) -> AuditSettings:
    return AuditSettings(journal_dir=tmp_path / "journal", checkpoint_every=5)
