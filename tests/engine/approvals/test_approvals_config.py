"""The approvals: section: strict models, secrets by reference, build_broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from approvals_support import ALICE, ask
from pydantic import ValidationError

from pgwarden.engine.approvals import (
    ApprovalsConfig,
    PostgresStore,
    SqliteStore,
    WebhookNotifier,
    build_broker,
)
from pgwarden.errors import ConfigurationError

pytestmark = pytest.mark.anyio


def test_defaults_to_sqlite_beside_the_config(tmp_path: Path) -> None:
    config = ApprovalsConfig()
    assert config.store.sqlite is not None and config.store.sqlite.path == "pgwarden-approvals.db"
    assert config.poll_interval == 250
    broker = build_broker(config, tmp_path)
    assert isinstance(broker.store, SqliteStore) and broker.store.path == tmp_path / "pgwarden-approvals.db"
    assert broker.store.poll_interval == 0.25 and broker.notifier is None


@pytest.mark.parametrize("raw, fragment", [
    ({"stor": {}}, "extra"),
    ({"store": {}}, "exactly one"),
    ({"store": {"sqlite": {}, "postgres": {"dsn": "host=x"}}}, "exactly one"),
    ({"store": {"postgres": {"dsn": "postgresql://u:hunter2@h/db"}}}, "holds a password"),
    ({"store": {"postgres": {"dsn": "host=h password=hunter2"}}}, "holds a password"),
    ({"webhooks": [{"url": "ftp://x", "secret": {"env": "S"}}]}, "http"),
    ({"webhooks": [{"url": "https://x", "secret": {"env": "S"}, "events": ["approval.nope"]}]}, "approval."),
    ({"webhooks": [{"url": "https://x", "secret": "inline"}]}, "secret"),
    ({"poll_interval": 0}, "more than 0"),
])
def test_bad_configuration_refused(raw: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as exc_info:
        ApprovalsConfig.model_validate(raw)
    assert fragment in str(exc_info.value)


def test_missing_secret_is_a_configuration_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGW_TEST_UNSET", raising=False)
    config = ApprovalsConfig.model_validate({"webhooks": [{"url": "https://x", "secret": {"env": "PGW_TEST_UNSET"}}]})
    with pytest.raises(ConfigurationError) as exc_info:
        build_broker(config, tmp_path)
    assert exc_info.value.code == "secret_env_unset" and "approvals.webhooks[0].secret" in exc_info.value.message


async def test_postgres_store_and_webhooks_from_config(tmp_path: Path, fresh_db: str) -> None:
    (tmp_path / "hook.secret").write_text("whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n")
    config = ApprovalsConfig.model_validate({
        "store": {"postgres": {"dsn": fresh_db}},
        "webhooks": [{"url": "http://127.0.0.1:9/h", "secret": {"file": "hook.secret"}, "format": "slack",
                      "events": ["approval.requested"]}],
        "console_url": "https://pgw.example", "poll_interval": "2s",
    })
    broker = build_broker(config, tmp_path)
    assert isinstance(broker.store, PostgresStore) and isinstance(broker.notifier, WebhookNotifier)
    assert broker.notifier.endpoints[0].secret == "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ="
    await broker.start(background=False)
    try:
        req = await broker.request(**ask())
        await broker.approve(req.id, *ALICE)
        assert [m.event for m in await broker.store.outbox()] == ["approval.requested"]  # only subscribed events
    finally:
        await broker.close()
