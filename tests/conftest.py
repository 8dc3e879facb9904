from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.support import pg
from worker import config, store
from worker.admin.store import AdminStore
from worker.config import Settings


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    yield pg.server_dsn()


@pytest.fixture(scope="session")
async def template_name(server_dsn: str) -> AsyncIterator[str]:
    name = await pg.migrated_template(server_dsn)
    yield name
    await pg.drop_database(server_dsn, name)


@pytest.fixture
async def db_dsn(server_dsn: str, template_name: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only."""
    name = pg.unique_name()
    dsn = await pg.create_database(server_dsn, name, template=template_name)
    yield dsn
    await pg.drop_database(server_dsn, name)


@pytest.fixture
async def empty_dsn(server_dsn: str) -> AsyncIterator[str]:
    """A fresh database with nothing in it (for migration tests)."""
    name = pg.unique_name("e")
    dsn = await pg.create_database(server_dsn, name)
    yield dsn
    await pg.drop_database(server_dsn, name)


@pytest.fixture
async def db(db_dsn: str) -> AsyncIterator[store.Store]:
    database = await store.connect(db_dsn, max_size=6)
    yield database
    await database.close()


@pytest.fixture
def admin(db: store.Store) -> AdminStore:
    """The control plane's store on the test database (worker.admin)."""
    return AdminStore(db.pool)


@pytest.fixture
def make_settings(db_dsn: str) -> Any:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": db_dsn,
            "poll_interval_s": 0.05,
            "retry_base_s": 0.0,
            "shutdown_grace_s": 1.0,
            "handler_modules": [],
            "worker_id": "test-worker",
        }
        values.update(overrides)
        return config.load(**values)

    return make
