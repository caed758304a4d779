"""A pure, in-memory world for policy tests: the public cases' schema as a catalog, and its policy.

Policy tests must not need a database; the same schema is checked against a
real one in the engine tests, so this stays honest.
"""

from __future__ import annotations

from pathlib import Path

from pgwarden.engine.config import load_config
from pgwarden.policy.catalog import Catalog, Column, Relation, builtin_catalog, merge
from pgwarden.policy.decision import Decider
from pgwarden.policy.language import PolicyDocument
from pgwarden.policy.verdict import Verdict

REPO = Path(__file__).resolve().parents[2]


def _table(schema: str, name: str, columns: list[str], oid: int, kind: str = "r", view_sql: str | None = None):
    return Relation(schema, name, kind, tuple(Column(c, i + 1, "text") for i, c in enumerate(columns)), oid,
                    view_sql)


def fixture_catalog() -> Catalog:
    relations = [
        _table("public", "customers", ["id", "full_name", "email", "card_number", "ssn"], 16385),
        _table("public", "orders", ["id", "customer_id", "amount", "note"], 16390),
        _table("public", "secrets", ["id", "api_key"], 16400),
        _table("billing", "invoices", ["id", "customer_id", "iban"], 16410),
        _table("public", "customer_cards", ["id", "cc"], 16420, "v",
               "SELECT customers.id, customers.card_number AS cc FROM public.customers"),
        _table("public", "secret_view", ["id", "api_key"], 16430, "v",
               "SELECT secrets.id, secrets.api_key FROM public.secrets"),
        _table("public", "order_totals", ["customer_id", "total"], 16440, "v",
               "SELECT orders.customer_id, sum(orders.amount) AS total FROM public.orders GROUP BY orders.customer_id"),
    ]
    return merge(builtin_catalog(), relations, {"my_func": ["public"]}, search_path=["public"],
                 version="fixture-1", complete=True)


def public_policy() -> PolicyDocument:
    return load_config(REPO / "examples" / "public_cases.yaml").policy


def test_mask_key(mask) -> bytes:
    """Derived hash keys for pure tests (the gateway derives them from the configured secret)."""
    from pgwarden.policy.masking import derive_mask_key

    return derive_mask_key(b"pure-test-master-key", mask.column)


class World:
    """Decide as a principal over the fixture catalog."""

    def __init__(self, policy: PolicyDocument | None = None, catalog: Catalog | None = None) -> None:
        self.policy = policy or public_policy()
        self.catalog = catalog or fixture_catalog()
        self.decider = Decider(self.policy, version="test", mask_key=test_mask_key)

    def decide(self, sql: str, subject: str = "agent", groups=("ai-agents",)) -> Verdict:
        return self.decider.decide(sql, subject=subject, groups=frozenset(groups), catalog=self.catalog)
