"""Fixtures for the approval broker: a fake clock, and stores of both kinds on real files and databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from approvals_support import FakeClock

from pgwarden.engine.approvals import ApprovalBroker, PostgresStore, SqliteStore, Store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[], Store]]:
    """A factory of stores on one and the same place (a file or a database): call it again to 'restart'."""
    if store_kind == "sqlite":
        path = tmp_path / "approvals.db"

        def make() -> Store:
            return SqliteStore(path, poll_interval=0.05)
    else:
        dsn = request.getfixturevalue("fresh_db")

        def make() -> Store:
            return PostgresStore(dsn, poll_interval=0.2)

    yield make


@pytest.fixture
async def open_brokers() -> AsyncIterator[list[ApprovalBroker]]:
    """Brokers a test opens are appended here and closed at the end."""
    brokers: list[ApprovalBroker] = []
    yield brokers
    for broker in brokers:
        await broker.close()


@pytest.fixture
def new_broker(make_store: Callable[[], Store], clock: FakeClock,
               open_brokers: list[ApprovalBroker]) -> Callable[..., ApprovalBroker]:
    def new(**kwargs: object) -> ApprovalBroker:
        broker = ApprovalBroker(make_store(), clock=clock, **kwargs)  # type: ignore[arg-type]
        open_brokers.append(broker)
        return broker

    return new


@pytest.fixture
async def broker(new_broker: Callable[..., ApprovalBroker]) -> ApprovalBroker:
    b = new_broker()
    await b.start(background=False)
    return b
