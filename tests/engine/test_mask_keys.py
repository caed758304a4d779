"""A hash mask is applied with the key of the mask the decision chose, never another's.

Before: the gateway found the key again by column glob, ignoring ``unless_groups``, and cached
maskers by (strategy, column): with ``public.customers.email`` (key A, raw for ``support``) and
``*.*.email`` (key B), a ``support`` principal got its e-mails hashed with key A. Both paths are
checked: the rewrite (masks inside the statement) and a prepared statement, whose outputs are
still masked by the gateway.
"""

from __future__ import annotations

import hashlib
import hmac

import anyio
import pytest
import yaml

from pgwarden.engine.config import parse_config
from pgwarden.engine.gateway import Gateway
from pgwarden.engine.principal import Principal
from pgwarden.engine.session import Session
from pgwarden.policy.masking import derive_mask_key

CONFIG = """
version: 1
targets: {main: {dsn: "%s"}}
rules:
  - {name: support, match: {groups: [support]}, target: main}
  - {name: agents, match: {groups: [ai-agents]}, target: main}
masking:
  columns:
    - {column: public.customers.email, strategy: hash, key: {env: KEY_A}, unless_groups: [support]}
    - {column: "*.*.email", strategy: hash, key: {env: KEY_B}}
"""


def expected(master: bytes, pattern: str, value: str) -> str:
    key = derive_mask_key(master, pattern)
    return "h:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]


@pytest.fixture
def gateway(make_db, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    monkeypatch.setenv("KEY_A", "key-a-0123456789abcdef")
    monkeypatch.setenv("KEY_B", "key-b-0123456789abcdef")
    dsn = make_db("CREATE TABLE customers (id int PRIMARY KEY, email text);"
                  "INSERT INTO customers VALUES (1, 'ada@example.org');")
    gw = Gateway(parse_config(yaml.safe_dump(yaml.safe_load(CONFIG % dsn)), "test"))
    anyio.run(gw.refresh_catalog, "main")
    return gw


def rows(gateway: Gateway, principal: Principal, *texts: str) -> list:
    async def go():
        try:
            async with Session(gateway, principal, "main") as session:
                return [(await session.run(t)).results[-1].rows for t in texts]
        finally:
            await gateway.close()
    return anyio.run(go)


@pytest.mark.parametrize("texts", [("SELECT email FROM customers",),
                                   ("PREPARE p AS SELECT email FROM customers", "EXECUTE p")],
                         ids=["rewritten", "prepared"])
def test_each_principal_gets_the_key_of_its_own_mask(gateway: Gateway, texts) -> None:
    support = rows(gateway, Principal.local("sam", {"support"}), *texts)[-1]
    agent = rows(gateway, Principal.local("agent", {"ai-agents"}), *texts)[-1]
    assert support == [(expected(b"key-b-0123456789abcdef", "*.*.email", "ada@example.org"),)]
    assert agent == [(expected(b"key-a-0123456789abcdef", "public.customers.email", "ada@example.org"),)]


def test_the_upstream_text_kept_for_the_audit_trail_holds_no_key(gateway: Gateway) -> None:
    async def go():
        try:
            async with Session(gateway, Principal.local("agent", {"ai-agents"}), "main") as session:
                return await session.run("SELECT email FROM customers")
        finally:
            await gateway.close()

    result = anyio.run(go)
    key = derive_mask_key(b"key-a-0123456789abcdef", "public.customers.email")
    assert "customers" in result.upstream_text and "sha256" in result.upstream_text  # the rewrite is shown
    assert "<derived key withheld>" in result.upstream_text
    from pgwarden.policy.masking import hmac_pads
    for pad in hmac_pads(key):
        assert pad not in result.upstream_text
