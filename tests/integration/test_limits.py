"""Flow control in the claim, under races: three workers (three dispatchers on three pools)
drain limited task types while a ledger in the database records when each handler ran.
Limits are never exceeded, held-back jobs stay pending without spending an attempt, and a
429 holds the whole task type on every worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import anyio
import pydantic
import pytest

from tests.support import factories
from worker import dispatcher, errors, store
from worker.registry import Handler, JobContext, JobResult, Registry, limits

LEDGER = """
CREATE TABLE IF NOT EXISTS ledger (
  id bigint generated always as identity, job_id bigint, task_type text, key text,
  started timestamptz, ended timestamptz
)
"""


class Keyed(pydantic.BaseModel):
    coach_id: str | None = None
    seconds: float = 0.05


async def work(ctx: JobContext, payload: Keyed) -> JobResult:
    """Record when this attempt ran, in the database's clock."""
    row_id = await ctx.pool.fetchval(
        "INSERT INTO ledger (job_id, task_type, key, started) VALUES ($1, $2, $3, "
        "clock_timestamp()) RETURNING id",
        ctx.job_id,
        ctx.task_type,
        payload.coach_id,
    )
    await anyio.sleep(payload.seconds)
    await ctx.pool.execute("UPDATE ledger SET ended = clock_timestamp() WHERE id = $1", row_id)
    return JobResult()


async def throttled(ctx: JobContext, payload: Keyed) -> JobResult:
    raise errors.RetryLater("HTTP 429 from the provider", delay_s=3600, hold_task_type=True)


def registry() -> Registry:
    reg = Registry()
    reg.add(Handler("capped", work, Keyed, 3, 30, limits(concurrency=2)))
    reg.add(Handler("per_coach", work, Keyed, 3, 30, limits(concurrency_key="coach_id")))
    reg.add(Handler("per_key", work, Keyed, 3, 30, limits(key_concurrency=2)))
    reg.add(Handler("rated", work, Keyed, 3, 30, limits(rate="8/s")))
    reg.add(Handler("free", work, Keyed, 3, 30))
    reg.add(Handler("throttled", throttled, Keyed, 3, 30))
    return reg


@pytest.fixture
async def pools(db_dsn: str, db: store.Store) -> AsyncIterator[list[store.Store]]:
    await db.pool.execute(LEDGER)
    stores = [await store.connect(db_dsn, max_size=4) for _ in range(3)]
    yield stores
    for each in stores:
        await each.close()


async def drain_with_three(pools: list[store.Store], make_settings: Any) -> None:
    settings = make_settings(concurrency=10, claim_batch=5, poll_interval_s=0.05)
    workers = [
        dispatcher.Dispatcher(db, registry(), settings.model_copy(update={"worker_id": f"w{n}"}))
        for n, db in enumerate(pools)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    left = "SELECT count(*) FROM job_queue WHERE status IN ('pending', 'running')"
    try:
        async with asyncio.timeout(60):
            while await pools[0].pool.fetchval(left):  # noqa: ASYNC110 - polls the database
                await asyncio.sleep(0.05)
    finally:
        for w in workers:
            w.request_stop()
        await asyncio.gather(*tasks)


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The largest number of intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


async def intervals(db: store.Store, task_type: str, key: str | None = None) -> list[Any]:
    rows = await db.pool.fetch(
        "SELECT started, ended FROM ledger WHERE task_type = $1"
        " AND key IS NOT DISTINCT FROM coalesce($2, key)",
        task_type,
        key,
    )
    assert all(r["ended"] is not None for r in rows)
    return [(r["started"], r["ended"]) for r in rows]


async def test_concurrency_limits_hold_across_three_workers(
    db: store.Store, pools: list[store.Store], make_settings: Any
) -> None:
    for _ in range(20):
        await factories.make_job(db, task_type="capped", payload={"seconds": 0.1})
        await factories.make_job(db, task_type="free", payload={"seconds": 0.1})
    for coach in ("a", "b", "c"):
        for _ in range(6):
            await factories.make_job(db, task_type="per_coach", payload={"coach_id": coach})
    for key in ("x", "y"):
        for _ in range(6):
            await factories.make_job(db, task_type="per_key", concurrency_key=key)
    await drain_with_three(pools, make_settings)
    assert (
        await db.pool.fetchval(
            "SELECT count(*) FROM job_queue WHERE status <> 'succeeded' OR attempts <> 1"
        )
        == 0
    )
    assert most_at_once(await intervals(db, "capped")) == 2  # the limit, reached
    assert most_at_once(await intervals(db, "free")) > 2  # unlimited beside it
    for coach in ("a", "b", "c"):
        assert most_at_once(await intervals(db, "per_coach", coach)) == 1
    assert most_at_once(await intervals(db, "per_coach")) > 1  # other coaches in parallel
    for key in ("x", "y"):
        ran = await db.pool.fetch(
            "SELECT l.started, l.ended FROM ledger l JOIN job_queue j ON j.id = l.job_id"
            " WHERE l.task_type = 'per_key' AND j.concurrency_key = $1",
            key,
        )
        assert most_at_once([(r["started"], r["ended"]) for r in ran]) <= 2


async def test_a_rate_limit_is_never_exceeded_in_any_window(
    db: store.Store, pools: list[store.Store], make_settings: Any
) -> None:
    ids = [
        await factories.make_job(db, task_type="rated", payload={"seconds": 0.0}) for _ in range(30)
    ]
    await drain_with_three(pools, make_settings)
    starts = sorted(
        row["started_at"]
        for row in await db.pool.fetch("SELECT started_at FROM job_queue WHERE id = ANY($1)", ids)
    )
    assert len(starts) == 30
    # Every window [t, t + 1 s) holds at most 8 starts (the claim's own clock).
    for i, first in enumerate(starts):
        inside = [s for s in starts[i:] if s < first + timedelta(seconds=1)]
        assert len(inside) <= 8, (first, inside)
    # Pruning keeps the starts of the last day only.
    assert await db.pool.fetchval("SELECT count(*) FROM job_rate_starts") == 30


async def test_jobs_held_back_stay_pending_with_no_attempt_spent(
    db: store.Store, make_settings: Any
) -> None:
    await db.pool.execute(LEDGER)
    blockers = [
        await factories.make_job(
            db,
            task_type="per_coach",
            status="running",
            attempts=1,
            limit_key="a",
            payload={"coach_id": "a"},
            locked_by="elsewhere",
            lease_expires_at=datetime.now().astimezone() + timedelta(hours=1),
        )
    ]
    waiting = [
        await factories.make_job(db, task_type="per_coach", payload={"coach_id": "a"})
        for _ in range(3)
    ]
    other = await factories.make_job(db, task_type="per_coach", payload={"coach_id": "b"})
    settings = make_settings()
    worker = dispatcher.Dispatcher(db, registry(), settings, once=True)
    summary = await asyncio.wait_for(worker.run(), timeout=30)
    assert summary.succeeded == 1
    assert (await factories.job(db, other))["status"] == "succeeded"
    for job_id in waiting:
        row = await factories.job(db, job_id)
        assert (row["status"], row["attempts"]) == ("pending", 0)
    assert (await factories.job(db, blockers[0]))["status"] == "running"


async def test_a_429_holds_the_whole_task_type_on_every_worker(
    db: store.Store, pools: list[store.Store], make_settings: Any
) -> None:
    first = await factories.make_job(db, task_type="throttled")
    settings = make_settings()
    once = dispatcher.Dispatcher(db, registry(), settings, once=True)
    assert (await asyncio.wait_for(once.run(), timeout=30)).retried == 1
    held = await db.pool.fetchrow("SELECT * FROM job_limits WHERE task_type = 'throttled'")
    assert held is not None and held["held_until"] > await db.database_now()
    assert "HTTP 429" in held["held_reason"]
    later = [await factories.make_job(db, task_type="throttled") for _ in range(3)]
    free = await factories.make_job(db, task_type="free", payload={"seconds": 0})
    for worker_db in pools:  # any worker: nothing of the held type is claimed
        run = dispatcher.Dispatcher(worker_db, registry(), settings, once=True)
        await asyncio.wait_for(run.run(), timeout=30)
    assert (await factories.job(db, free))["status"] == "succeeded"
    for job_id in [first, *later]:
        row = await factories.job(db, job_id)
        assert row["status"] == "pending"
    assert [(await factories.job(db, j))["attempts"] for j in later] == [0, 0, 0]
