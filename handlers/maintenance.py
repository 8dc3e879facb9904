"""cleanup: retention for the apps' tables, in bounded batches.

Deletes notifications older than HANDLERS_CLEANUP_NOTIFICATION_AGE_DAYS (30) and completed
or failed trade orders processed more than HANDLERS_CLEANUP_ORDER_AGE_DAYS (90) ago. Each
batch (HANDLERS_CLEANUP_BATCH_SIZE rows) is its own short transaction, so locks stay brief
and a failure midway keeps the batches already deleted; at most
HANDLERS_CLEANUP_MAX_BATCHES per table and run. Deleting what is already gone deletes
nothing: re-runs are harmless. (Job rows and job_runs are the engine's retention.)
"""

from __future__ import annotations

import asyncpg
import pydantic
from pydantic import Field

from handlers import settings as handler_settings
from worker import queries
from worker.registry import JobContext, JobResult, handler

Q = queries.load("handlers", "queries.sql")


class CleanupPayload(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    batch_size: int | None = Field(default=None, ge=1, le=100_000)
    """Rows per batch (default HANDLERS_CLEANUP_BATCH_SIZE)."""


async def _delete_in_batches(
    pool: asyncpg.Pool, query: str, age_days: int, batch_size: int, max_batches: int
) -> tuple[int, bool]:
    """(rows deleted, whether rows may be left because max_batches was reached)."""
    deleted = 0
    for _ in range(max_batches):
        status = await pool.execute(query, age_days, batch_size)
        count = int(status.split()[-1])
        deleted += count
        if count < batch_size:
            return deleted, False
    return deleted, True


@handler("cleanup", payload=CleanupPayload, max_attempts=3, timeout_s=1800)
async def cleanup(ctx: JobContext, payload: CleanupPayload) -> JobResult:
    """Delete old notifications and old processed orders, in bounded batches."""
    conf = handler_settings.get()
    batch = payload.batch_size or conf.cleanup_batch_size
    notes: list[str] = []
    deleted: dict[str, int] = {}
    for table, query, age_days in (
        ("notifications", Q["delete_old_notifications"], conf.cleanup_notification_age_days),
        ("trade_orders", Q["delete_old_orders"], conf.cleanup_order_age_days),
    ):
        count, more = await _delete_in_batches(
            ctx.pool, query, age_days, batch, conf.cleanup_max_batches
        )
        deleted[table] = count
        note = f"{table}: deleted {count} older than {age_days} days"
        if more:
            note += f" (stopped after {conf.cleanup_max_batches} batches; more next run)"
        notes.append(note)
    return JobResult(rows_affected=sum(deleted.values()), notes=notes, data={"deleted": deleted})
