"""Property tests share one database per module: each example cleans the tables it wrote,
instead of paying for a fresh database (hypothesis runs hundreds of examples)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.property import inprocess
from tests.support import pg
from worker import store


@pytest.fixture(scope="module")
async def module_dsn(server_dsn: str, template_name: str) -> AsyncIterator[str]:
    """A migrated database for this module only."""
    name = pg.unique_name("p")
    dsn = await pg.create_database(server_dsn, name, template=template_name)
    yield dsn
    await pg.drop_database(server_dsn, name)


@pytest.fixture(scope="module")
async def module_db(module_dsn: str) -> AsyncIterator[store.Store]:
    database = await store.connect(module_dsn, max_size=6)
    yield database
    await database.close()


@pytest.fixture(scope="module")
def thread_db(module_dsn: str) -> Iterator[inprocess.ThreadDb]:
    """The module's database for synchronous tests (those that run the CLI in-process)."""
    database = inprocess.ThreadDb(module_dsn)
    yield database
    database.close()
