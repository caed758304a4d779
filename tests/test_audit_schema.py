"""The audit record's names and the attributes a verdict becomes."""

from __future__ import annotations

import hashlib

from pgwarden.audit import schema
from support.policies import World


def test_verdict_attributes_describe_the_decision() -> None:
    sql = "SELECT card_number FROM customers"
    verdict = World().decide(sql)
    attrs = schema.verdict_attributes(verdict, sql)
    assert attrs[schema.DECISION] == "allow"
    assert attrs[schema.RULE] == "ai-agents"
    assert attrs[schema.MASKED_COLUMNS] == ["public.customers.card_number"]
    assert attrs[schema.DB_OPERATION_NAME] == "SELECT"
    assert attrs[schema.QUERY_SHA256] == hashlib.sha256(sql.encode()).hexdigest()
    assert all(isinstance(v, (str, bool, int, float, list)) for v in attrs.values())


def test_denial_carries_reason_codes_and_sentences() -> None:
    sql = "SELECT 1; DELETE FROM orders WHERE id = 1"
    attrs = schema.verdict_attributes(World().decide(sql), sql)
    assert attrs[schema.DECISION] == "deny"
    assert "statement_class_denied" in attrs[schema.REASON_CODES]
    assert attrs[schema.DB_OPERATION_NAME] == "BATCH SELECT DELETE"
    assert all(": " in r for r in attrs[schema.REASONS])
