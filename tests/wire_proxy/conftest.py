from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cases import load_public_cases
from support.wire import Keys, RunningProxy, config_data


@pytest.fixture(scope="module")
def wire_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pgw-wire-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def keys(wire_dir: Path) -> Keys:
    return Keys(wire_dir)


@pytest.fixture(scope="module")
def cases_db_module(make_db_module) -> str:
    return make_db_module(load_public_cases().fixture_sql + "\nANALYZE;")


@pytest.fixture(scope="module")
def proxy(cases_db_module: str, wire_dir: Path, keys: Keys) -> Iterator[RunningProxy]:
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    p = RunningProxy(config_data(cases_db_module, wire_dir, keys,
                                 proxy={"approval_notice_interval": 200, "max_message_size": 1 << 20}), wire_dir)
    yield p
    p.close()
