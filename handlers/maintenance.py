"""cleanup: retention for the apps' tables, in bounded batches.

Three targets, each an app's own cleanup job:
- `notifications` (the challenges app's daily cleanup): notifications older than
  HANDLERS_CLEANUP_NOTIFICATION_AGE_DAYS (30);
- `orders` (the trading app's cleanup of old queue entries): completed or failed orders
  processed more than HANDLERS_CLEANUP_ORDER_AGE_DAYS (90) ago; pending ones never;
- `jobs` (the game-platform app's job-queue cleanup): succeeded job_queue rows finished
  more than HANDLERS_CLEANUP_JOB_AGE_DAYS (14) ago. Every worker's pruner does the same under
  WORKER_RETAIN_SUCCEEDED_DAYS; this target keeps that app's schedule meaningful when the
  pruner keeps jobs longer.
Each batch (HANDLERS_CLEANUP_BATCH_SIZE rows) is its own short transaction, so locks stay
brief and a failure midway keeps the batches already deleted; at most
HANDLERS_CLEANUP_MAX_BATCHES per target and run. Deleting what is already gone deletes
nothing: re-runs are harmless.
"""

from __future__ import annotations

from typing import Literal

import asyncpg
from pydantic import Field

from handlers import payloads, tables
from handlers import settings as handler_settings
from worker import queries
from worker.registry import JobContext, JobResult, handler

Q = queries.load("handlers", "queries.sql")

Target = Literal["notifications", "orders", "jobs"]

_STATEMENTS: dict[str, str] = {
    "notifications": "delete_old_notifications",
    "orders": "delete_old_orders",
    "jobs": "delete_old_jobs",
}


class CleanupPayload(payloads.Payload):
    targets: list[Target] = Field(default=["notifications", "orders"], min_length=1)
    """What to clean (default: notifications and orders)."""
    batch_size: int | None = Field(default=None, ge=1, le=100_000)
    """Rows per batch (default HANDLERS_CLEANUP_BATCH_SIZE)."""


def _age_days(conf: handler_settings.HandlerSettings, target: str) -> int:
    ages = {
        "notifications": conf.cleanup_notification_age_days,
        "orders": conf.cleanup_order_age_days,
        "jobs": conf.cleanup_job_age_days,
    }
    return ages[target]


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
    """Delete old notifications, old processed orders and old succeeded jobs, in batches."""
    conf = handler_settings.get()
    batch = payload.batch_size or conf.cleanup_batch_size
    notes: list[str] = []
    deleted: dict[str, int] = {}
    for target in dict.fromkeys(payload.targets):
        query = await tables.statement(ctx.pool, _STATEMENTS[target])
        age_days = _age_days(conf, target)
        count, more = await _delete_in_batches(
            ctx.pool, query, age_days, batch, conf.cleanup_max_batches
        )
        deleted[target] = count
        note = f"{target}: deleted {count} older than {age_days} days"
        if more:
            note += f" (stopped after {conf.cleanup_max_batches} batches; more next run)"
        notes.append(note)
    return JobResult(rows_affected=sum(deleted.values()), notes=notes, data={"deleted": deleted})
