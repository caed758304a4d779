"""The ``approvals:`` section of the gateway configuration, and the factory that builds a broker from it.

::

    approvals:
      store:                      # default: {sqlite: {path: pgwarden-approvals.db}}
        postgres:
          dsn: postgresql://pgwarden@control-db/pgwarden     # a control database, not a governed target
          password: {env: PGWARDEN_APPROVALS_PASSWORD}
      webhooks:
        - url: https://hooks.example.com/pgwarden
          secret: {file: secrets/webhook}                     # a Standard Webhooks secret, whsec_…
          format: slack                                       # or standard (default)
          events: [approval.requested, approval.approved, approval.denied]
      console_url: https://pgwarden.example.com
      poll_interval: 250ms

Models are strict (``extra="forbid"``). A password inside the DSN is refused: it
belongs in ``password:`` (an environment variable or a file). Relative SQLite paths
and secret files are read from the configuration file's folder (``base_dir``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pgwarden.engine.secrets import SecretError, resolve_secret
from pgwarden.errors import ConfigurationError
from pgwarden.policy.language import Duration, SecretRef

from .broker import ApprovalBroker
from .models import ApprovalEvent
from .postgres_store import PostgresStore
from .sqlite_store import SqliteStore
from .store import Store
from .webhooks import DEFAULT_EVENTS, WebhookEndpoint, WebhookNotifier

__all__ = ["ApprovalsConfig", "PostgresStoreConfig", "SqliteStoreConfig", "StoreConfig", "WebhookConfig",
           "build_broker", "build_store"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqliteStoreConfig(_Strict):
    path: str = Field(default="pgwarden-approvals.db",
                      description="the SQLite file (created on first use); relative to the configuration file")


class PostgresStoreConfig(_Strict):
    dsn: str = Field(description="libpq URI or conninfo of the control database, without a password")
    password: SecretRef | None = Field(default=None, description="where the control database's password is")

    @field_validator("dsn")
    @classmethod
    def _no_inline_password(cls, value: str) -> str:
        try:
            params = conninfo_to_dict(value)
        except Exception as exc:
            raise ValueError(f"not a valid libpq connection string: {exc}") from None
        if params.get("password"):
            raise ValueError("the DSN holds a password; remove it and give 'password: {env: …}' or "
                             "'password: {file: …}' instead")
        return value


class StoreConfig(_Strict):
    """Exactly one of ``sqlite`` (one gateway) or ``postgres`` (several gateways)."""

    sqlite: SqliteStoreConfig | None = None
    postgres: PostgresStoreConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StoreConfig:
        if (self.sqlite is None) == (self.postgres is None):
            raise ValueError("give exactly one of 'sqlite' or 'postgres'")
        return self


class WebhookConfig(_Strict):
    url: str = Field(description="where to POST (http or https)")
    secret: SecretRef = Field(description="Standard Webhooks signing secret (whsec_ + base64)")
    format: Literal["standard", "slack"] = Field(default="standard",
                                                 description="standard: JSON event; slack: Block Kit message")
    events: list[ApprovalEvent] = Field(default_factory=lambda: sorted(DEFAULT_EVENTS),
                                        description="which events to send")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("a webhook URL must start with http:// or https://")
        return value


class ApprovalsConfig(_Strict):
    store: StoreConfig = Field(default_factory=lambda: StoreConfig(sqlite=SqliteStoreConfig()))
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    console_url: str | None = Field(default=None, description="base URL of the web console, for links")
    poll_interval: Duration = Field(default=250, description="how often a waiter re-reads the store for "
                                                             "decisions made elsewhere (PostgreSQL: only "
                                                             "while LISTEN is down)")

    @field_validator("poll_interval")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("poll_interval must be more than 0")
        return value


def _secret(ref: SecretRef, base_dir: Path, where: str) -> str:
    try:
        return resolve_secret(ref, base_dir=base_dir)
    except SecretError as exc:
        raise ConfigurationError(exc.code, f"{where}: {exc.message}") from None


def build_store(config: ApprovalsConfig, base_dir: str | Path) -> Store:
    base = Path(base_dir)
    interval = config.poll_interval / 1000
    if config.store.postgres is not None:
        pg = config.store.postgres
        password = None if pg.password is None else _secret(pg.password, base, "approvals.store.postgres.password")
        return PostgresStore(pg.dsn, password=password, poll_interval=max(interval, 1.0))
    assert config.store.sqlite is not None
    path = Path(config.store.sqlite.path).expanduser()
    if not path.is_absolute():
        path = base / path
    return SqliteStore(path, poll_interval=interval)


def build_broker(config: ApprovalsConfig, base_dir: str | Path) -> ApprovalBroker:
    """A broker over the configured store, with webhooks if any are configured. Not yet opened:
    ``async with broker:`` (or ``await broker.start()``) opens it and starts delivery."""
    base = Path(base_dir)
    notifier = None
    if config.webhooks:
        endpoints = [WebhookEndpoint(url=w.url, secret=_secret(w.secret, base, f"approvals.webhooks[{i}].secret"),
                                     format=w.format, events=frozenset(w.events))
                     for i, w in enumerate(config.webhooks)]
        notifier = WebhookNotifier(endpoints, console_url=config.console_url)
    return ApprovalBroker(build_store(config, base), notifier=notifier)
