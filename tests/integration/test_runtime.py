"""Leases, rescue, heartbeat, pause and retention against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.support import factories, handlers
from tests.support.factories import ACTOR
from worker import dispatcher, maintenance, observer, store
from worker.admin import queues as admin_queues
from worker.admin.store import AdminStore
from worker.clock import SystemClock

PAST = datetime.now(UTC) - timedelta(minutes=5)


async def running_job(db: store.Store, **fields: Any) -> int:
    values: dict[str, Any] = {
        "status": "running",
        "attempts": 1,
        "max_attempts": 3,
        "locked_by": "dead-worker",
        "lease_expires_at": PAST,
        "started_at": PAST,
        "task_type": "ok",
    }
    values.update(fields)
    return await factories.make_job(db, **values)


async def test_rescuer_returns_expired_jobs_and_fails_exhausted_ones(
    db: store.Store, make_settings: Any
) -> None:
    expired = await running_job(db)
    exhausted = await running_job(db, attempts=3)
    alive = await running_job(db, lease_expires_at=datetime.now(UTC) + timedelta(minutes=5))
    seen: list[dict[str, Any]] = []

    class Recorder(observer.NullObserver):
        def rescued(self, job: Any) -> None:
            seen.append(dict(job))

    rescuer = maintenance.Rescuer(db, make_settings(retry_base_s=30.0), Recorder())
    report = await rescuer.run_once()
    assert (report.rescued, report.failed) == (1, 1)
    assert sorted((r["job_id"], r["status"], r["task_type"], r["attempt"]) for r in seen) == [
        (expired, "rescued", "ok", 1),
        (exhausted, "failed", "ok", 3),
    ]
    row = await factories.job(db, expired)
    assert (row["status"], row["attempts"], row["locked_by"]) == ("pending", 1, None)
    assert row["run_at"] > datetime.now(UTC) + timedelta(seconds=20)
    assert row["last_error"].startswith("lease expired: worker dead-worker stopped")
    assert (await factories.job(db, exhausted))["status"] == "failed"
    assert (await factories.job(db, alive))["status"] == "running"
    [run] = await factories.runs(db, expired)
    assert (run["status"], run["reason"], run["worker_id"], run["attempt"]) == (
        "rescued",
        "lease_expired",
        "dead-worker",
        1,
    )
    [final] = await factories.runs(db, exhausted)
    assert (final["status"], final["reason"]) == ("failed", "lease_expired")


async def test_two_rescuers_at_once_rescue_each_job_once(
    db: store.Store, db_dsn: str, make_settings: Any
) -> None:
    ids = [await running_job(db) for _ in range(300)]
    other = await store.connect(db_dsn)
    try:
        settings = make_settings()
        reports = await asyncio.gather(
            *(maintenance.Rescuer(conn, settings).run_once() for conn in (db, other, db, other))
        )
    finally:
        await other.close()
    assert sum(r.rescued for r in reports) == 300
    counts = await db.pool.fetch("SELECT job_id, count(*) AS n FROM job_runs GROUP BY job_id")
    assert {r["job_id"] for r in counts} == set(ids)
    assert {r["n"] for r in counts} == {1}


async def test_heartbeat_extends_leases_of_running_jobs(
    db: store.Store, make_settings: Any
) -> None:
    job_id = await factories.make_job(db, task_type="sleep", payload={"seconds": 2.5})
    worker = dispatcher.Dispatcher(db, handlers.registry(timeout_s=10), make_settings(lease_s=1.0))
    task = asyncio.create_task(worker.run())
    leases: list[datetime] = []
    for _ in range(400):
        row = await factories.job(db, job_id)
        if row["status"] == "succeeded":
            break
        if row["lease_expires_at"] is not None:
            leases.append(row["lease_expires_at"])
        # the lease (1 s) would have expired by now without the heartbeat
        await maintenance.Rescuer(db, make_settings()).run_once()
        await asyncio.sleep(0.02)
    worker.request_stop()
    await asyncio.wait_for(task, timeout=10)
    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"]) == ("succeeded", 1)
    assert len(set(leases)) >= 3  # extended several times
    assert [r["status"] for r in await factories.runs(db, job_id)] == ["succeeded"]


async def test_a_job_whose_lease_was_taken_is_cancelled_and_changes_nothing(
    db: store.Store, make_settings: Any
) -> None:
    job_id = await factories.make_job(db, task_type="sleep", payload={"seconds": 30})
    worker = dispatcher.Dispatcher(db, handlers.registry(timeout_s=60), make_settings(lease_s=1.0))
    task = asyncio.create_task(worker.run())
    for _ in range(200):
        if (await factories.job(db, job_id))["status"] == "running":
            break
        await asyncio.sleep(0.02)
    # Another worker rescued and re-claimed it (attempt 2) while this one still runs it.
    await db.pool.execute(
        "UPDATE job_queue SET attempts = 2, locked_by = 'other' WHERE id = $1", job_id
    )
    for _ in range(300):
        if worker.summary.lease_lost:
            break
        await asyncio.sleep(0.02)
    worker.request_stop()
    summary = await asyncio.wait_for(task, timeout=10)
    assert summary.lease_lost == 1
    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"], row["locked_by"]) == ("running", 2, "other")
    assert await factories.runs(db, job_id) == []


async def test_pause_stops_claims_and_resume_restarts_them(
    db: store.Store, make_settings: Any
) -> None:
    mail = await factories.make_job(db, task_type="ok", queue="mail")
    other = await factories.make_job(db, task_type="ok", queue="default")
    admin = AdminStore(db.pool)
    assert await admin_queues.pause(admin, ACTOR, "mail", "provider outage") is True
    assert await admin_queues.pause(admin, ACTOR, "mail", None) is False  # already paused
    settings = make_settings(queues=["default", "mail"])
    worker = dispatcher.Dispatcher(db, handlers.registry(), settings, once=True)
    assert (await asyncio.wait_for(worker.run(), 30)).succeeded == 1
    assert (await factories.job(db, mail))["status"] == "pending"
    assert (await factories.job(db, other))["status"] == "succeeded"
    [paused] = await factories.paused_queues(db)
    assert (paused["queue"], paused["reason"]) == ("mail", "provider outage")
    assert await admin_queues.resume(admin, ACTOR, "mail") is True
    worker = dispatcher.Dispatcher(db, handlers.registry(), settings, once=True)
    assert (await asyncio.wait_for(worker.run(), 30)).succeeded == 1
    assert (await factories.job(db, mail))["status"] == "succeeded"


async def test_pause_function_refuses_bad_queue_names(db: store.Store) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match="invalid queue name"):
        await db.pool.fetchval("SELECT job_queue_pause('x; drop table job_queue')")
    assert await db.pool.fetchval("SELECT count(*) FROM job_queue_pauses") == 0


async def test_pruner_deletes_only_what_is_past_its_age(
    db: store.Store, make_settings: Any
) -> None:
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=15), now - timedelta(days=13)

    async def finished(status: str, when: datetime) -> int:
        job_id = await factories.make_job(db, status=status, created_at=when, started_at=when)
        await db.pool.execute("UPDATE job_queue SET finished_at = $2 WHERE id = $1", job_id, when)
        return job_id

    doomed = [await finished("succeeded", old) for _ in range(5)] + [
        await finished("cancelled", old)
    ]
    kept = [
        await finished("succeeded", recent),
        await finished("failed", old),
        await factories.make_job(db, status="pending", created_at=old),
    ]
    for job_id, when in (
        (doomed[0], now - timedelta(days=31)),
        (kept[0], now - timedelta(days=29)),
    ):
        await db.pool.execute(
            "INSERT INTO job_runs (job_id, job_key, queue, run_type, status, attempt, started_at,"
            " finished_at, duration_ms) VALUES ($1, 'noop', 'default', 'queue', 'succeeded', 1,"
            " $2, $2, 1)",
            job_id,
            when,
        )
    pruner = maintenance.Pruner(db, make_settings(prune_batch=2), SystemClock())
    report = await pruner.run_once()
    assert (report.jobs_deleted, report.runs_deleted) == (6, 1)
    left = {r["id"] for r in await db.pool.fetch("SELECT id FROM job_queue")}
    assert left == set(kept)
    assert [r["job_id"] for r in await db.pool.fetch("SELECT job_id FROM job_runs")] == [kept[0]]
    assert await pruner.run_once() == maintenance.PruneReport(0, 0)
    with_failed = maintenance.Pruner(db, make_settings(retain_failed_days=14), SystemClock())
    assert (await with_failed.run_once()).jobs_deleted == 1


async def test_listen_pickup_is_fast_with_a_long_poll_interval(
    db: store.Store, make_settings: Any
) -> None:
    started = asyncio.Event()

    async def mark(ctx: Any, payload: Any) -> Any:
        started.set()
        return await handlers.ok(ctx, payload)

    registry = handlers.registry()
    registry.add(dispatcher.executor.Handler("mark", mark, handlers.Empty))
    worker = dispatcher.Dispatcher(db, registry, make_settings(poll_interval_s=60.0))
    task = asyncio.create_task(worker.run())
    await wait_for_listener(db)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await db.enqueue("mark", {})
    await asyncio.wait_for(started.wait(), timeout=5)  # the next poll is 60 s away
    latency_s = loop.time() - t0
    # The listener dies (restart, pooler, network): it is re-opened and pickup goes on.
    await db.pool.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'worker-listen'"
    )
    await wait_for_listener(db)
    started.clear()
    await db.enqueue("mark", {})
    await asyncio.wait_for(started.wait(), timeout=5)
    worker.request_stop()
    await asyncio.wait_for(task, timeout=10)
    assert latency_s < 1.0


async def wait_for_listener(db: store.Store) -> None:
    for _ in range(500):
        n = await db.pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'worker-listen'"
            " AND datname = current_database() AND query ILIKE 'LISTEN%'"
        )
        if n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no LISTEN connection appeared")


async def test_pooler_mode_polls_without_a_listen_connection(
    db: store.Store, make_settings: Any
) -> None:
    worker = dispatcher.Dispatcher(
        db, handlers.registry(), make_settings(pooler_mode=True, poll_interval_s=0.1)
    )
    task = asyncio.create_task(worker.run())
    job_id = await db.enqueue("ok", {})
    for _ in range(200):
        if (await factories.job(db, job_id))["status"] == "succeeded":
            break
        await asyncio.sleep(0.02)
    listeners = await db.pool.fetchval(  # this test's database: other runs share the cluster
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'worker-listen'"
        " AND datname = current_database()"
    )
    worker.request_stop()
    await asyncio.wait_for(task, timeout=10)
    assert (await factories.job(db, job_id))["status"] == "succeeded"
    assert listeners == 0


async def test_the_engine_pool_sends_nothing_after_a_statement(db_dsn: str) -> None:
    """A statement of the engine is one round trip: releasing its connection sends no reset
    (asyncpg's default added one per claim and per outcome write). The handlers' pool still
    resets: a handler may leave session state behind."""
    db = await store.connect(db_dsn, max_size=1)
    try:
        await db.pool.fetchval("SELECT 'engine statement'")
        await db.handler_pool.fetchval("SELECT 'handler statement'")
        rows = await db.handler_pool.fetch(
            "SELECT application_name, query FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        last = {row["application_name"]: row["query"] for row in rows}
        assert last["worker"] == "SELECT 'engine statement'"
        # released inside a transaction, a connection is still rolled back
        async with db.pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_open (x int)")
        assert await db.pool.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
    finally:
        await db.close()
