"""Handler tests: a fresh database with the core *and* reference sets per test (copied from
a second template), handler settings installed per test, a fake API on 127.0.0.1, and two
ways to run a handler: through the real engine (`run_job`) or called directly (`call`).
Every bundled handler is registered (handlers.bundled)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import structlog

import handlers.bundled  # noqa: F401 - registers every bundled handler
from handlers import settings as handler_settings
from handlers import tables
from tests.support import factories, fakeapi, pg
from worker import dispatcher, executor, migrations, store
from worker.registry import REGISTRY, JobContext, JobResult, Registry


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


@dataclass(frozen=True)
class Ran:
    """A job run through the engine: its final row and its job_runs rows."""

    job: asyncpg.Record
    runs: list[asyncpg.Record]

    @property
    def status(self) -> str:
        return str(self.job["status"])

    @property
    def error(self) -> str | None:
        error: str | None = self.job["last_error"]
        return error

    @property
    def last_run(self) -> asyncpg.Record:
        return self.runs[-1]


RunJob = Callable[..., Awaitable[Ran]]
Call = Callable[..., Awaitable[JobResult]]


def registry_of(*task_types: str) -> Registry:
    registry = Registry()
    for name in task_types:
        registry.add(REGISTRY.get(name))
    return registry


async def drain(db: store.Store, settings: Any, *task_types: str) -> dispatcher.Summary:
    worker = dispatcher.Dispatcher(db, registry_of(*task_types), settings, once=True)
    return await asyncio.wait_for(worker.run(), timeout=60)


@pytest.fixture
def run_job(db: store.Store, make_settings: Any) -> RunJob:
    """Insert one job and drain it with a real Dispatcher (one attempt unless told)."""

    async def run(task_type: str, payload: Any = None, *, max_attempts: int = 1) -> Ran:
        job_id = await factories.make_job(
            db,
            task_type=task_type,
            payload={} if payload is None else payload,
            max_attempts=max_attempts,
        )
        await drain(db, make_settings(), task_type)
        return Ran(await factories.job(db, job_id), await factories.runs(db, job_id))

    return run


@pytest.fixture
def call(db: store.Store, make_settings: Any) -> Call:
    """Validate the payload and call the handler directly (no job row)."""
    settings = make_settings()

    async def invoke(task_type: str, payload: Any = None, *, job_id: int = 1) -> JobResult:
        handler = REGISTRY.get(task_type)
        model = executor.parse_payload(handler, {} if payload is None else payload)
        ctx = JobContext(
            job_id=job_id,
            task_type=task_type,
            queue="default",
            attempt=1,
            max_attempts=handler.max_attempts,
            run_type="manual",
            schedule_name=None,
            requested_by=None,
            created_at=datetime.now(UTC),
            worker_id="test-worker",
            pool=db.pool,
            settings=settings,
            logger=structlog.get_logger("test"),
        )
        return await handler.func(ctx, model)

    return invoke
