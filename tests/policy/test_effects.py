"""What a verdict tells a door about a statement's effects (policy/effects.py), read once from the analysis."""

from __future__ import annotations

import pytest

from pgwarden.policy.catalog import Catalog
from pgwarden.policy.effects import effects_of
from pgwarden.policy.sql import analyse

EMPTY = Catalog({}, {})


@pytest.mark.parametrize(("sql", "header"), [
    ("COPY t TO STDOUT", False),
    ("COPY t TO STDOUT (FORMAT csv)", False),
    ("COPY t TO STDOUT (FORMAT csv, HEADER)", True),
    ("COPY t TO STDOUT CSV HEADER", True),
    ("COPY t TO STDOUT (FORMAT csv, HEADER on)", True),
    ("COPY t TO STDOUT (FORMAT csv, HEADER 1)", True),
    ("COPY t TO STDOUT (FORMAT csv, HEADER TRUE)", True),
    ("COPY t TO STDOUT (FORMAT csv, HEADER false)", False),
    ("COPY t TO STDOUT (FORMAT csv, HEADER 0)", False),
    ("COPY t FROM STDIN (FORMAT csv, HEADER)", False),  # a header the client sends: nothing arrives
])
def test_copy_header_is_read_as_postgresql_reads_it(sql: str, header: bool) -> None:
    (effect,) = effects_of(analyse(sql, EMPTY))
    assert effect.copy in ("stdout", "stdin")
    assert effect.copy_header is header
