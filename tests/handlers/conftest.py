"""Handler tests: a fresh database with the core *and* reference sets per test (copied from
a second template), handler settings installed per test, a fake API on 127.0.0.1, and two
ways to run a handler: through the real engine (`run_job`) or called directly (`call`).
Every bundled handler is registered (handlers.bundled)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

import handlers.bundled  # noqa: F401 - registers every bundled handler
from handlers import settings as handler_settings
from handlers import tables
from tests.support import fakeapi, pg
from worker import dispatcher, migrations, store, testing
from worker.registry import JobResult


@pytest.fixture(scope="session")
async def reference_template(server_dsn: str, template_name: str) -> AsyncIterator[str]:
    """The core template plus the reference migration set."""
    name = f"worker_ref_{uuid.uuid4().hex[:10]}"
    dsn = await pg.create_database(server_dsn, name, template=template_name)
    db = await store.connect(dsn)
    try:
        await migrations.migrate(db, "reference")
    finally:
        await db.close()
    yield name
    await pg.drop_database(server_dsn, name)


@pytest.fixture
async def db_dsn(server_dsn: str, reference_template: str) -> AsyncIterator[str]:
    """A fresh database with the reference tables, for this test only (overrides the root
    fixture, so `db` and `make_settings` use it too)."""
    name = pg.unique_name("h")
    dsn = await pg.create_database(server_dsn, name, template=reference_template)
    yield dsn
    await pg.drop_database(server_dsn, name)


@pytest.fixture(autouse=True)
def hsettings() -> Iterator[Callable[..., handler_settings.HandlerSettings]]:
    """Install handler settings for one test: `hsettings(wearables_api_url=...)`. By default
    no API is configured and in-job HTTP retries do not wait."""

    def install(**overrides: Any) -> handler_settings.HandlerSettings:
        values: dict[str, Any] = {"http_retry_wait_s": 0.0, "http_attempts": 3}
        values.update(overrides)
        conf = handler_settings.HandlerSettings(**values)
        handler_settings.use(conf)
        return conf

    install()
    tables.forget()  # each test has a database of its own
    yield install
    handler_settings.use(None)


@pytest.fixture
async def fake_api() -> AsyncIterator[fakeapi.FakeApi]:
    async with fakeapi.FakeApi() as api:
        yield api


RunJob = Callable[..., Awaitable[testing.Ran]]
Call = Callable[..., Awaitable[JobResult]]
registry_of = testing.registry_of


async def drain(db: store.Store, settings: Any, *task_types: str) -> dispatcher.Summary:
    worker = dispatcher.Dispatcher(db, registry_of(*task_types), settings, once=True)
    return await asyncio.wait_for(worker.run(), timeout=60)


@pytest.fixture
def job_database(db: store.Store, db_dsn: str) -> testing.JobDatabase:
    """worker.testing's view of this test's database (the kit handler authors use)."""
    return testing.JobDatabase(db_dsn, db)


@pytest.fixture
def run_job(job_database: testing.JobDatabase) -> RunJob:
    """Insert one job and drain it with a real Dispatcher (one attempt unless told)."""
    return job_database.run_job


@pytest.fixture
def call(job_database: testing.JobDatabase) -> Call:
    """Validate the payload and call the handler directly (no job row)."""
    return job_database.call
