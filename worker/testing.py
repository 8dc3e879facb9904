"""Testing your handlers against a real PostgreSQL, the way the worker runs them.

    from worker.testing import JobDatabase

    async def test_welcome_mail(job_db: JobDatabase) -> None:   # the pytest fixture
        ran = await job_db.run_job("send_welcome_mail", {"user_id": 1})
        assert ran.status == "succeeded"
        assert ran.result == {"sent": True}

`job_db` (from the pytest plugin this package installs, `worker.pytest_plugin`) is a
throwaway database with the worker's migrations applied, on the server named by
TEST_DATABASE_URL (an admin URL: databases are created and dropped there) or, without it,
on an embedded PostgreSQL started for the test session. Nothing is mocked: `run_job`
inserts a job and drains it with the worker's real dispatcher (claim, timeout, retries,
outcome write, job_runs), `call` runs a handler directly with a real context, and
`enqueued` shows what a piece of code enqueued.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

from worker import config, dispatcher, embedded, executor, migrations, queries, store
from worker.registry import REGISTRY, Handler, JobContext, JobResult, Registry, Task

_DRAIN_TIMEOUT_S = 60.0
_SQL = queries.load("worker", "testing.sql")


@dataclass(frozen=True)
class Ran:
    """A job run through the worker: its final row and its job_runs rows (oldest first)."""

    job: asyncpg.Record
    runs: list[asyncpg.Record]

    @property
    def id(self) -> int:
        return int(self.job["id"])

    @property
    def status(self) -> str:
        return str(self.job["status"])

    @property
    def result(self) -> Any:
        """What the handler's JobResult.data stored (job_queue.result)."""
        return self.job["result"]

    @property
    def error(self) -> str | None:
        error: str | None = self.job["last_error"]
        return error

    @property
    def last_run(self) -> asyncpg.Record:
        return self.runs[-1]


@dataclass(frozen=True)
class Enqueued:
    """A job some code under test wrote into job_queue."""

    id: int
    task_type: str
    payload: Any
    queue: str
    status: str
    run_at: datetime
    priority: int


class JobDatabase:
    """A migrated throwaway database and the worker's store on it."""

    def __init__(self, dsn: str, db: store.Store) -> None:
        self.dsn = dsn
        self.store = db

    @property
    def pool(self) -> asyncpg.Pool:
        """The database's asyncpg pool, for the code under test."""
        return self.store.pool

    def settings(self, **overrides: Any) -> config.Settings:
        """Worker settings for this database, quick to test with: short polls, no retry
        wait, a short shutdown grace; no handler modules imported."""
        values: dict[str, Any] = {
            "database_url": self.dsn,
            "poll_interval_s": 0.05,
            "retry_base_s": 0.0,
            "shutdown_grace_s": 1.0,
            "handler_modules": [],
            "worker_id": "test-worker",
            "scheduler": False,
        }
        values.update(overrides)
        return config.load(**values)

    async def drain(
        self, handlers: Sequence[str | Handler | Callable[..., Any]] | Registry, **settings: Any
    ) -> dispatcher.Summary:
        """Run the worker until no job of these handlers is due (`--once`)."""
        registry = handlers if isinstance(handlers, Registry) else registry_of(*handlers)
        worker = dispatcher.Dispatcher(self.store, registry, self.settings(**settings), once=True)
        return await asyncio.wait_for(worker.run(), timeout=_DRAIN_TIMEOUT_S)

    async def run_job(
        self,
        handler: str | Handler | Callable[..., Any],
        payload: Any = None,
        *,
        max_attempts: int = 1,
        queue: str = "default",
        **settings: Any,
    ) -> Ran:
        """Insert one job for `handler` (its task type, its Handler or the decorated
        function) and run it through the worker; one attempt unless told. Retries run
        at once (no backoff wait)."""
        found = resolve(handler)
        job_id = await self.pool.fetchval(
            _SQL["insert_job"],
            found.name,
            {} if payload is None else payload,
            queue,
            max_attempts,
        )
        await self.drain([found], queues=[queue], **settings)
        return await self.ran(int(job_id))

    async def ran(self, job_id: int) -> Ran:
        """The job's row and its job_runs rows, now."""
        job = await self.pool.fetchrow(_SQL["job"], job_id)
        if job is None:
            raise LookupError(f"no job {job_id}")
        runs = await self.pool.fetch(_SQL["job_runs"], job_id)
        return Ran(job, list(runs))

    async def call(
        self,
        handler: str | Handler | Callable[..., Any],
        payload: Any = None,
        *,
        job_id: int = 1,
        attempt: int = 1,
    ) -> JobResult:
        """Validate the payload as the worker would and call the handler directly, with a
        real context on this database (no job row is written)."""
        found = resolve(handler)
        model = executor.parse_payload(found, {} if payload is None else payload)
        ctx = JobContext(
            job_id=job_id,
            task_type=found.name,
            queue="default",
            attempt=attempt,
            max_attempts=found.max_attempts,
            run_type="manual",
            schedule_name=None,
            requested_by=None,
            created_at=datetime.now(UTC),
            worker_id="test-worker",
            pool=self.pool,
            logger=structlog.get_logger("test"),
        )
        if found.sync:
            return await asyncio.to_thread(found.func, ctx, model)  # type: ignore[arg-type]
        result: JobResult = await found.func(ctx, model)  # type: ignore[misc]
        return result

    async def enqueued(self, task_type: str | None = None, *, after_id: int = 0) -> list[Enqueued]:
        """Jobs in job_queue (of `task_type`, with ids above `after_id`), oldest first."""
        rows = await self.pool.fetch(_SQL["enqueued"], after_id, task_type)
        return [Enqueued(**dict(row)) for row in rows]

    @contextlib.asynccontextmanager
    async def captured(self) -> AsyncIterator[list[Enqueued]]:
        """`async with job_db.captured() as jobs:` ... then `jobs` holds what the block
        enqueued (committed by the time the block ends)."""
        start = await self.pool.fetchval(_SQL["last_id"])
        jobs: list[Enqueued] = []
        yield jobs
        jobs.extend(await self.enqueued(after_id=int(start)))


def resolve(handler: str | Handler | Callable[..., Any]) -> Handler:
    """The registered Handler for a task type, a Handler, or a decorated function."""
    if isinstance(handler, Handler):
        return handler
    if isinstance(handler, Task):
        return handler.handler
    if isinstance(handler, str):
        return REGISTRY.get(handler)
    for found in REGISTRY:
        if found.func is handler or found.func is getattr(handler, "__wrapped__", None):
            return found
    raise LookupError(f"{handler!r} is not a registered handler (import its module first)")


def registry_of(*handlers: str | Handler | Callable[..., Any]) -> Registry:
    """A registry holding only these handlers, for a worker that claims only their jobs."""
    registry = Registry()
    for handler in handlers:
        registry.add(resolve(handler))
    return registry


# -- databases ---------------------------------------------------------------------------


class Server:
    """Where test databases are made: TEST_DATABASE_URL, else an embedded PostgreSQL in a
    temporary directory (stopped and deleted when the process exits). A migrated template
    is built once; each database is a copy of it (CREATE DATABASE ... TEMPLATE: tens of
    milliseconds)."""

    def __init__(self, admin_dsn: str | None = None) -> None:
        self.admin_dsn = admin_dsn or os.environ.get("TEST_DATABASE_URL") or _embedded()
        self._templates: dict[tuple[str, ...], str] = {}

    async def template(self, migration_sets: Sequence[str] = ("core",)) -> str:
        """The migrated template for these migration sets (built on first use)."""
        key = tuple(migration_sets)
        if key not in self._templates:
            name = f"worker_tmpl_{uuid.uuid4().hex[:10]}"
            await self._execute(f'CREATE DATABASE "{name}"')
            db = await store.connect(_with_database(self.admin_dsn, name))
            try:
                for migration_set in migration_sets:
                    await migrations.migrate(db, migration_set)
            finally:
                await db.close()
            self._templates[key] = name
        return self._templates[key]

    @contextlib.asynccontextmanager
    async def database(self, migration_sets: Sequence[str] = ("core",)) -> AsyncIterator[str]:
        """A fresh migrated database for the block; its DSN."""
        template = await self.template(migration_sets)
        name = f"worker_t_{uuid.uuid4().hex[:12]}"
        await self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        try:
            yield _with_database(self.admin_dsn, name)
        finally:
            await self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def close(self) -> None:
        while self._templates:
            _, name = self._templates.popitem()
            await self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _execute(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def job_database(
    server: Server | None = None, migration_sets: Sequence[str] = ("core",)
) -> AsyncIterator[JobDatabase]:
    """A JobDatabase for the block, outside pytest: `async with job_database() as db:`.
    `migration_sets`: add "reference" for the bundled apps' reference tables."""
    own = server is None
    server = server or Server()
    try:
        async with server.database(migration_sets) as dsn:
            db = await store.connect(dsn, max_size=6)
            try:
                yield JobDatabase(dsn, db)
            finally:
                await db.close()
    finally:
        if own:
            await server.close()


def _embedded() -> str:
    base = Path(tempfile.mkdtemp(prefix="worker-test-pg-"))
    return embedded.start(base, cleanup_mode="delete")


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
