"""Claim -> run -> finish against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support import factories, handlers
from worker import dispatcher, executor, store
from worker.registry import Handler, Registry


async def drain(
    db: store.Store, settings: Any, registry: Registry | None = None
) -> dispatcher.Summary:
    worker = dispatcher.Dispatcher(db, registry or handlers.registry(), settings, once=True)
    return await asyncio.wait_for(worker.run(), timeout=30)


async def claim(
    db: store.Store, limit: int, worker_id: str, types: list[str] | None = None
) -> list[int]:
    types = types or ["ok"]
    spec = store.ClaimSpec(["default"], limit, types, [3] * len(types), lease_s=30)
    rows = await db.claim(spec, worker_id=worker_id)
    return [row["id"] for row in rows]


async def test_two_claimers_on_two_connections_claim_disjoint_jobs(
    db: store.Store, db_dsn: str
) -> None:
    await db.enqueue_many("ok", [{} for _ in range(200)])
    other = await store.connect(db_dsn)
    try:
        results = await asyncio.gather(
            *(claim(conn, 7, f"w{i}") for i in range(20) for conn in (db, other))
        )
    finally:
        await other.close()
    claimed = [job_id for batch in results for job_id in batch]
    assert len(claimed) == 200
    assert len(set(claimed)) == 200
    rows = await db.pool.fetch(
        "SELECT status, attempts, locked_by, lease_expires_at FROM job_queue"
    )
    assert {(r["status"], r["attempts"]) for r in rows} == {("running", 1)}
    assert all(r["locked_by"] and r["lease_expires_at"] for r in rows)


async def test_claims_only_served_task_types_in_priority_order(db: store.Store) -> None:
    late = await factories.make_job(db, task_type="ok", priority=5)
    early = await factories.make_job(db, task_type="ok", priority=-5)
    await factories.make_job(db, task_type="someone_elses")
    future = await factories.make_job(
        db, task_type="ok", run_at=datetime.now(UTC) + timedelta(hours=1)
    )
    assert await claim(db, 10, "w") == [early, late]
    assert (await factories.job(db, future))["status"] == "pending"


async def test_success_writes_result_and_one_run_row(db: store.Store, make_settings: Any) -> None:
    job_id = await factories.make_job(db, task_type="ok")
    summary = await drain(db, make_settings())
    assert (summary.processed, summary.succeeded) == (1, 1)
    row = await factories.job(db, job_id)
    assert row["status"] == "succeeded"
    assert row["result"] == {"ok": True}
    assert row["finished_at"] is not None and row["lease_expires_at"] is None
    [run] = await factories.runs(db, job_id)
    assert (run["status"], run["reason"], run["attempt"], run["rows_affected"]) == (
        "succeeded",
        "ok",
        1,
        7,
    )
    assert (run["job_key"], run["run_type"], run["notes"], run["worker_id"]) == (
        "ok",
        "queue",
        "did it",
        "test-worker",
    )
    assert run["finished_at"] >= run["started_at"] and run["duration_ms"] >= 0


async def test_retry_then_success(db: store.Store, make_settings: Any) -> None:
    job_id = await factories.make_job(db, task_type="fail_once")
    summary = await drain(db, make_settings())
    assert (summary.retried, summary.succeeded, summary.failed) == (1, 1, 0)
    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("succeeded", 2, None)
    runs = await factories.runs(db, job_id)
    assert [(r["status"], r["attempt"]) for r in runs] == [("retry", 1), ("succeeded", 2)]
    assert runs[0]["error"] == "ConnectionError: transient"


async def test_retry_pushes_run_at_out_by_backoff(db: store.Store, make_settings: Any) -> None:
    job_id = await factories.make_job(db, task_type="boom")
    before = datetime.now(UTC)
    summary = await drain(db, make_settings(retry_base_s=60.0))
    assert summary.retried == 1
    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert timedelta(seconds=50) < row["run_at"] - before < timedelta(seconds=70)
    assert row["last_error"] == "RuntimeError: boom on attempt 1"


async def test_max_attempts_then_failed(db: store.Store, make_settings: Any) -> None:
    job_id = await factories.make_job(db, task_type="boom", max_attempts=3)
    summary = await drain(db, make_settings())
    assert (summary.retried, summary.failed) == (2, 1)
    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert row["last_error"] == "RuntimeError: boom on attempt 3"
    runs = await factories.runs(db, job_id)
    assert [(r["status"], r["reason"]) for r in runs] == [
        ("retry", "error"),
        ("retry", "error"),
        ("failed", "max_attempts"),
    ]


async def test_handler_default_max_attempts_fills_null(db: store.Store, make_settings: Any) -> None:
    job_id = await factories.make_job(db, task_type="boom")  # max_attempts left null
    await drain(db, make_settings(), handlers.registry(max_attempts=2))
    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"], row["max_attempts"]) == ("failed", 2, 2)


async def test_permanent_error_fails_at_once(db: store.Store, make_settings: Any) -> None:
    job_id = await factories.make_job(db, task_type="permanent", max_attempts=5)
    summary = await drain(db, make_settings())
    assert (summary.failed, summary.retried) == (1, 0)
    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"] == "PermanentJobError: customer 42 does not exist"
    [run] = await factories.runs(db, job_id)
    assert (run["status"], run["reason"]) == ("failed", "permanent_error")


async def test_invalid_payload_fails_at_once_with_clear_error(
    db: store.Store, make_settings: Any
) -> None:
    job_id = await factories.make_job(db, task_type="sleep", payload={"seconds": "forever"})
    await drain(db, make_settings())
    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"] == (
        "PermanentJobError: invalid payload for 'sleep': seconds: Input should be a valid number, "
        "unable to parse string as a number"
    )


async def test_timeout_is_retried(db: store.Store, make_settings: Any) -> None:
    job_id = await factories.make_job(db, task_type="sleep", payload={"seconds": 5}, max_attempts=2)
    summary = await drain(db, make_settings(), handlers.registry(timeout_s=0.1))
    assert (summary.retried, summary.failed) == (1, 1)
    runs = await factories.runs(db, job_id)
    assert [(r["status"], r["reason"]) for r in runs] == [
        ("retry", "timeout"),
        ("failed", "max_attempts"),
    ]
    assert runs[0]["error"] == "JobTimeout: handler timed out after 0.1s"


async def test_late_write_after_lease_taken_over_changes_nothing(db: store.Store) -> None:
    job_id = await factories.make_job(db, task_type="ok")
    [first] = await db.claim(store.ClaimSpec(["default"], 1, ["ok"], [3], 30), worker_id="slow")
    # The lease expires, the job is rescued and claimed again by another worker (attempt 2).
    await db.pool.execute("UPDATE job_queue SET status = 'pending' WHERE id = $1", job_id)
    await claim(db, 1, "fast")
    job = executor.job_from_record(first)
    late = executor.Outcome(job, executor.Verdict("succeeded", "ok"), None, datetime.now(UTC), 5)
    written = await db.finish([executor.to_finish(late)], worker_id="slow")
    assert written == set()
    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"], row["locked_by"]) == ("running", 2, "fast")
    assert await factories.runs(db, job_id) == []


async def test_plain_insert_and_enqueue_function_are_both_picked_up(
    db: store.Store, make_settings: Any
) -> None:
    await db.pool.execute("INSERT INTO job_queue (task_type, payload) VALUES ('ok', '{}')")
    via_function = await db.pool.fetchval("SELECT job_queue_enqueue('ok')")
    summary = await drain(db, make_settings())
    assert summary.succeeded == 2
    assert (await factories.job(db, via_function))["status"] == "succeeded"


async def test_enqueue_function_dedupes_live_jobs(db: store.Store) -> None:
    first = await db.pool.fetchval("SELECT job_queue_enqueue('ok', dedupe_key => 'k1')")
    again = await db.pool.fetchval("SELECT job_queue_enqueue('ok', dedupe_key => 'k1')")
    assert first == again
    assert await db.pool.fetchval("SELECT count(*) FROM job_queue") == 1
    await db.pool.execute("UPDATE job_queue SET status = 'succeeded'")
    assert await db.pool.fetchval("SELECT job_queue_enqueue('ok', dedupe_key => 'k1')") != first


async def test_manual_enqueue_records_run_type_and_user(
    db: store.Store, make_settings: Any
) -> None:
    user = uuid.uuid4()
    job_id = await db.enqueue("ok", {}, run_type="manual", requested_by=user)
    assert job_id is not None
    await drain(db, make_settings())
    [run] = await factories.runs(db, job_id)
    assert (run["run_type"], run["user_id"]) == ("manual", user)


async def test_insert_notifies_once_per_statement(db: store.Store, db_dsn: str) -> None:
    received: list[str] = []
    async with db.listen("job_queue", lambda: received.append("n")) as listener:
        await db.enqueue_many("ok", [{} for _ in range(50)])
        await db.pool.execute("UPDATE job_queue SET priority = 1")  # updates never notify
        await listener.ping()
        await asyncio.sleep(0.1)
    assert received == ["n"]


async def test_shutdown_gives_the_attempt_back(db: store.Store, make_settings: Any) -> None:
    job_id = await factories.make_job(db, task_type="sleep", payload={"seconds": 30})
    worker = dispatcher.Dispatcher(
        db, handlers.registry(timeout_s=60), make_settings(shutdown_grace_s=0.2)
    )
    task = asyncio.create_task(worker.run())
    for _ in range(200):
        if (await factories.job(db, job_id))["status"] == "running":
            break
        await asyncio.sleep(0.02)
    worker.request_stop()
    summary = await asyncio.wait_for(task, timeout=10)
    assert summary.cancelled == 1
    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"], row["locked_by"]) == ("pending", 0, None)
    [run] = await factories.runs(db, job_id)
    assert (run["status"], run["reason"]) == ("cancelled", "shutdown")


async def test_nul_bytes_in_errors_and_results_are_stored(
    db: store.Store, make_settings: Any
) -> None:
    async def nul(ctx: Any, payload: Any) -> Any:
        raise RuntimeError("bad\x00byte")

    registry = handlers.registry()
    registry.add(Handler("nul", nul, handlers.Empty, max_attempts=1))
    job_id = await factories.make_job(db, task_type="nul")
    await drain(db, make_settings(), registry)
    row = await factories.job(db, job_id)
    assert (row["status"], row["last_error"]) == ("failed", "RuntimeError: bad\ufffdbyte")


async def test_a_result_postgresql_refuses_is_dropped_not_fatal(
    db: store.Store, make_settings: Any
) -> None:
    async def nan(ctx: Any, payload: Any) -> Any:
        return handlers.JobResult(rows_affected=1, notes=["fine"], data={"ratio": float("nan")})

    async def circular(ctx: Any, payload: Any) -> Any:
        data: dict[str, Any] = {}
        data["self"] = data
        return handlers.JobResult(data=data)

    registry = handlers.registry()
    registry.add(Handler("nan", nan, handlers.Empty))
    registry.add(Handler("circular", circular, handlers.Empty))
    ids = [await factories.make_job(db, task_type=t) for t in ("nan", "circular", "ok")]
    summary = await drain(db, make_settings(), registry)
    assert (summary.succeeded, summary.lease_lost) == (3, 0)
    for job_id in ids[:2]:
        row = await factories.job(db, job_id)
        assert (row["status"], row["result"]) == ("succeeded", None)
        [run] = await factories.runs(db, job_id)
        assert run["notes"].startswith("could not record the handler's result")
    assert (await factories.job(db, ids[2]))["result"] == {"ok": True}
