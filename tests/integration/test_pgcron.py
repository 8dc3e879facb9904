"""pg_cron instead of, or beside, the built-in scheduler, on a real pg_cron.

The cluster comes from .ci/setup-pgcron (PostgreSQL 15 on 127.0.0.1:5433, pg_cron in the
database worker_pgcron); PGCRON_TEST_URL points elsewhere. Without it these tests skip,
except under CI=true, where they fail and say how to get one. The test that waits for
pg_cron to actually fire a job takes up to a minute (pg_cron 1.4 ticks once a minute), so
it runs only with PGCRON_TEST_FIRE=1.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.support import pg
from worker import migrations, store

PGCRON_URL = os.environ.get("PGCRON_TEST_URL", "postgresql://postgres@127.0.0.1:5433/worker_pgcron")
ENQUEUE = "select job_queue_enqueue('refresh_metrics')"
_DROP_WORKER_OBJECTS = """
DROP TABLE IF EXISTS worker_migrations, job_queue, job_runs, job_schedules, job_queue_pauses
  CASCADE;
DO $$
DECLARE f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
            WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'job\\_%'
  LOOP
    EXECUTE 'DROP FUNCTION ' || f || ' CASCADE';
  END LOOP;
END $$;
"""


def _where() -> str:
    parts = urlsplit(PGCRON_URL)  # no user or password in messages
    return f"{parts.hostname}:{parts.port}{parts.path}"


def _unavailable(reason: str) -> None:
    message = (
        f"no pg_cron test cluster at PGCRON_TEST_URL ({_where()}): {reason}. "
        "Run `sudo .ci/setup-pgcron` (Debian) or point PGCRON_TEST_URL at a database "
        "where pg_cron is installed (its cron.database_name)."
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
async def cron_db() -> AsyncIterator[store.Store]:
    """The pg_cron database, migrated (the worker's schema lives beside pg_cron)."""
    try:
        conn = await asyncpg.connect(PGCRON_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        _unavailable(str(exc) or type(exc).__name__)
    try:
        version = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'"
        )
        if version is None:
            _unavailable("the pg_cron extension is not installed in this database")
        launcher = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher'"
        )
        if not launcher:
            _unavailable("pg_cron is installed but not running (shared_preload_libraries)")
    finally:
        await conn.close()
    db = await store.connect(PGCRON_URL, max_size=2)
    try:
        # The cluster outlives test runs: drop what an earlier run migrated, so a schema
        # changed since then migrates from scratch. (Not DROP SCHEMA public: the pg_cron
        # extension itself belongs to public, though its objects live in `cron`.)
        await db.pool.execute(_DROP_WORKER_OBJECTS)
        await migrations.migrate(db)
        yield db
    finally:
        await db.close()


async def test_the_documented_cron_schedule_statement_enqueues_jobs(cron_db: store.Store) -> None:
    name = f"worker_test_{uuid.uuid4().hex[:8]}"
    # README: select cron.schedule('name', '*/5 * * * *', $$select job_queue_enqueue(...)$$)
    await cron_db.pool.execute(f"select cron.schedule('{name}', '*/5 * * * *', $${ENQUEUE}$$)")
    job_id = None
    try:
        row = await cron_db.pool.fetchrow(
            "SELECT schedule, command, database, active FROM cron.job WHERE jobname = $1", name
        )
        assert row is not None
        assert dict(row) == {
            "schedule": "*/5 * * * *",
            "command": ENQUEUE,
            "database": urlsplit(PGCRON_URL).path.lstrip("/"),
            "active": True,
        }
        # What pg_cron runs every 5 minutes, run once here: a job the worker picks up.
        job_id = await cron_db.pool.fetchval(row["command"])
        job = await cron_db.pool.fetchrow("SELECT * FROM job_queue WHERE id = $1", job_id)
        assert job is not None
        assert (job["task_type"], job["status"], job["payload"]) == (
            "refresh_metrics",
            "pending",
            {},
        )
    finally:
        await cron_db.pool.execute("SELECT cron.unschedule($1)", name)
        if job_id is not None:
            await cron_db.pool.execute("DELETE FROM job_queue WHERE id = $1", job_id)
    assert (
        await cron_db.pool.fetchval("SELECT count(*) FROM cron.job WHERE jobname = $1", name) == 0
    )


@pytest.fixture
async def app_db(cron_db: store.Store) -> AsyncIterator[tuple[str, store.Store]]:
    """A fresh, migrated application database on the pg_cron cluster (not pg_cron's own)."""
    name = pg.unique_name("cron")
    dsn = await pg.create_database(PGCRON_URL, name)
    db = await store.connect(dsn, max_size=2)
    try:
        await migrations.migrate(db)
        yield name, db
    finally:
        await db.close()
        await pg.drop_database(PGCRON_URL, name)


async def test_pg_cron_can_enqueue_into_the_apps_database(
    cron_db: store.Store, app_db: tuple[str, store.Store]
) -> None:
    database, app = app_db
    name = f"worker_test_{uuid.uuid4().hex[:8]}"
    command = "select job_queue_enqueue('refresh_metrics', dedupe_key => 'pg_cron:metrics')"
    await cron_db.pool.execute(
        "SELECT cron.schedule_in_database($1, '*/5 * * * *', $2, $3)", name, command, database
    )
    try:
        row = await cron_db.pool.fetchrow(
            "SELECT database, command FROM cron.job WHERE jobname = $1", name
        )
        assert row is not None and (row["database"], row["command"]) == (database, command)
        # The dedupe key keeps one live job however often the command runs.
        first = await app.pool.fetchval(command)
        assert await app.pool.fetchval(command) == first
    finally:
        await cron_db.pool.execute("SELECT cron.unschedule($1)", name)


@pytest.mark.skipif(
    os.environ.get("PGCRON_TEST_FIRE") != "1",
    reason="waits up to a minute for pg_cron's next tick; set PGCRON_TEST_FIRE=1",
)
async def test_pg_cron_fires_the_job(cron_db: store.Store, app_db: tuple[str, store.Store]) -> None:
    database, app = app_db
    name = f"worker_test_{uuid.uuid4().hex[:8]}"
    await cron_db.pool.execute(
        "SELECT cron.schedule_in_database($1, '* * * * *', $2, $3)", name, ENQUEUE, database
    )
    try:
        for _ in range(75 * 4):  # pg_cron 1.4 starts jobs at the top of each minute
            if await app.pool.fetchval("SELECT count(*) FROM job_queue"):
                break
            await asyncio.sleep(0.25)
        jobs = await app.pool.fetch("SELECT task_type, status FROM job_queue")
        assert [tuple(job) for job in jobs] == [("refresh_metrics", "pending")]
    finally:
        await cron_db.pool.execute("SELECT cron.unschedule($1)", name)
