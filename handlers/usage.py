"""rollup_usage: the text-to-speech app's daily rollup of usage_events into monthly_usage.

Runs daily for yesterday (UTC). `daily_usage` remembers what was counted per user and day;
the run adds to `monthly_usage` only the difference between the day's events now and that
record, then updates the record, in one transaction under a per-day advisory lock. Running
the same day again adds nothing; events that arrived late are added when the day is run
again (a payload `day`).
"""

from __future__ import annotations

from datetime import date, timedelta

import pydantic

from worker import errors, queries
from worker.registry import JobContext, JobResult, handler

Q = queries.load("handlers", "queries.sql")


class RollupUsagePayload(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    day: date | None = None
    """The UTC day to roll up (default: yesterday); must be over."""


@handler("rollup_usage", payload=RollupUsagePayload, max_attempts=5, timeout_s=600)
async def rollup_usage(ctx: JobContext, payload: RollupUsagePayload) -> JobResult:
    """Aggregate one UTC day's usage events into monthly totals, without double counting."""
    today: date = await ctx.pool.fetchval(Q["utc_today"])
    day = payload.day or today - timedelta(days=1)
    if day >= today:
        raise errors.PermanentJobError(
            f"rollup_usage: {day.isoformat()} is not over yet (today is {today.isoformat()} UTC)"
        )
    async with ctx.pool.acquire() as db, db.transaction():
        await db.execute(Q["lock_usage_day"], day)
        row = await db.fetchrow(Q["rollup_usage_day"], day)
    assert row is not None
    users, events, changed = int(row["users"]), int(row["events"]), int(row["monthly_changed"])
    return JobResult(
        rows_affected=changed,
        notes=[
            f"{day.isoformat()}: {events} event(s) from {users} user(s); "
            f"{changed} monthly total(s) changed"
        ],
        data={"day": day.isoformat(), "users": users, "events": events},
    )
