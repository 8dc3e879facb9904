"""Sync handlers (a plain `def`) run in the worker's bounded thread pool, against a real
PostgreSQL: success, failure, timeout, the slot they take, and a stop while one runs."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import anyio.from_thread
import pydantic

from tests.integration.test_engine import drain
from tests.support import factories, handlers
from tests.support.proc import worker_env
from worker import executor, store
from worker.registry import Handler, JobContext, JobResult, Registry, handler


async def test_a_sync_handler_succeeds_in_a_thread_of_its_own(
    db: store.Store, make_settings: Any
) -> None:
    job_id = await factories.make_job(db, task_type="sync_ok")
    summary = await drain(db, make_settings())
    assert (summary.processed, summary.succeeded) == (1, 1)
    row = await factories.job(db, job_id)
    assert (row["status"], row["result"]) == ("succeeded", {"ok": True})
    [run] = await factories.runs(db, job_id)
    assert run["notes"].startswith("thread ") and threading.main_thread().name not in run["notes"]


async def test_a_failing_sync_handler_is_retried_then_failed(
    db: store.Store, make_settings: Any
) -> None:
    job_id = await factories.make_job(db, task_type="sync_boom", max_attempts=2)
    await drain(db, make_settings())
    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"]) == ("failed", 2)
    assert "RuntimeError: sync boom on attempt 2" in row["last_error"]
    assert [r["reason"] for r in await factories.runs(db, job_id)] == ["error", "max_attempts"]


async def test_a_sync_handler_past_its_timeout_ends_as_timeout_and_its_return_is_dropped(
    db: store.Store, make_settings: Any
) -> None:
    reg = handlers.registry(timeout_s=0.2, max_attempts=1)
    job_id = await factories.make_job(db, task_type="sync_sleep", payload={"seconds": 1.0})
    started = time.monotonic()
    summary = await drain(db, make_settings(), reg)
    assert time.monotonic() - started < 0.9, "the attempt ends at its timeout, not the thread's"
    assert summary.failed == 1
    row = await factories.job(db, job_id)
    assert row["status"] == "failed" and row["result"] is None
    [run] = await factories.runs(db, job_id)
    assert (run["status"], run["reason"], run["notes"]) == ("failed", "max_attempts", None)
    assert "JobTimeout: handler timed out after 0.2s" in run["error"]
    assert executor.THREADS.running >= 1, "the abandoned thread still sleeps"
    deadline = time.monotonic() + 5
    while executor.THREADS.running and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert executor.THREADS.running == 0
    # What the thread returned when it woke up went nowhere.
    assert (await factories.job(db, job_id))["status"] == "failed"
    assert len(await factories.runs(db, job_id)) == 1


class Probe(pydantic.BaseModel):
    pass


async def test_sync_handlers_take_the_same_slots_as_async_ones(
    db: store.Store, make_settings: Any
) -> None:
    lock = threading.Lock()
    now = peak = 0

    def probe(ctx: JobContext, payload: Probe) -> JobResult:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        time.sleep(0.05)
        with lock:
            now -= 1
        return JobResult()

    reg = Registry()
    handler("probe", payload=Probe, registry=reg)(probe)
    assert reg.get("probe").sync
    await db.enqueue_many("probe", [{} for _ in range(12)])
    summary = await drain(db, make_settings(concurrency=3, sync_threads=10), reg)
    assert summary.succeeded == 12
    assert peak == 3, "concurrency bounds sync handlers too"

    now = peak = 0
    await db.enqueue_many("probe", [{} for _ in range(12)])
    summary = await drain(db, make_settings(concurrency=10, sync_threads=2), reg)
    assert summary.succeeded == 12
    assert peak == 2, "WORKER_SYNC_THREADS bounds the threads"


async def test_a_sync_handler_reaches_the_event_loop_through_anyio(
    db: store.Store, make_settings: Any
) -> None:
    """From its thread a sync handler can call the async API (ctx.pool here) with
    anyio.from_thread.run: the pool lives in the worker's loop."""

    def count(ctx: JobContext, payload: Probe) -> JobResult:
        total = anyio.from_thread.run(ctx.pool.fetchval, "SELECT count(*) FROM job_queue")
        return JobResult(rows_affected=total)

    reg = Registry()
    reg.add(Handler("count", count, Probe))
    job_id = await factories.make_job(db, task_type="count")
    await drain(db, make_settings(), reg)
    [run] = await factories.runs(db, job_id)
    assert (run["status"], run["rows_affected"]) == ("succeeded", 1)


async def test_a_sync_handler_running_at_sigterm_gives_its_job_back(
    db: store.Store, db_dsn: str
) -> None:
    """The daemon stops after its grace period although the thread cannot be stopped: the
    job goes back to pending with its attempt returned, and the process exits 0."""
    job_id = await factories.make_job(db, task_type="test_sync_sleep", payload={"seconds": 30})
    env = worker_env(
        db_dsn,
        WORKER_HANDLER_MODULES="tests.support.handlers",
        WORKER_SHUTDOWN_GRACE_S="0.5",
        WORKER_POLL_INTERVAL_S="0.1",
    )
    worker = subprocess.Popen(  # noqa: ASYNC220 - the worker runs as users run it
        [sys.executable, "-m", "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while (await factories.job(db, job_id))["status"] != "running":
            assert worker.poll() is None and time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the thread is sleeping now
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=15)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err.decode()[-800:]
    assert b"sync_threads_abandoned" in err
    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"], row["locked_by"]) == ("pending", 0, None)
    [run] = await factories.runs(db, job_id)
    assert (run["status"], run["reason"]) == ("cancelled", "shutdown")
