"""pytest fixtures for testing handlers, installed with the package (an entry point: no
conftest needed). Needs pytest-asyncio.

- `job_db_server` (session): where test databases are made: TEST_DATABASE_URL (an admin
  URL), else an embedded PostgreSQL for the session.
- `job_db`: a fresh migrated database for one test, as a `worker.testing.JobDatabase`
  (`run_job`, `call`, `enqueued`, `captured`, `pool`, `settings`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from worker import testing


@pytest.fixture(scope="session")
def job_db_server() -> Iterator[testing.Server]:
    server = testing.Server()
    yield server
    asyncio.run(server.close())


@pytest_asyncio.fixture
async def job_db(job_db_server: testing.Server) -> AsyncIterator[testing.JobDatabase]:
    async with testing.job_database(job_db_server) as db:
        yield db
