"""rollup_usage: the text-to-speech app's daily rollup of usage_events into monthly_usage.

What the app's `rollup_daily_usage()` does, made idempotent: runs daily for yesterday (UTC)
and adds each user's `characters_processed` of that day to `monthly_usage`
(`total_characters_processed` of the month's `month_start_date` row), counting, as the
app's function does, only `TTS_REQUEST` events with characters (HANDLERS_USAGE_EVENT_TYPES,
HANDLERS_USAGE_POSITIVE_ONLY). `daily_usage` remembers what was counted per user and day;
the run adds only the difference between the day's events now and that record, then
updates the record, in one transaction under a per-day advisory lock. Running the same day
again adds nothing (the app's function would add it all again); events that arrived late
are added when the day is run again (a payload `day`).
"""

from __future__ import annotations

from datetime import date, timedelta

from handlers import payloads, tables
from handlers import settings as handler_settings
from worker import errors, queries
from worker.registry import JobContext, JobResult, handler

Q = queries.load("handlers", "queries.sql")


class RollupUsagePayload(payloads.Payload):
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
    conf = handler_settings.get()
    rollup = await tables.statement(ctx.pool, "rollup_usage_day")
    async with ctx.pool.acquire() as db, db.transaction():
        await db.execute(Q["lock_usage_day"], day)
        row = await db.fetchrow(rollup, day, conf.usage_event_types, conf.usage_positive_only)
    assert row is not None
    users, events, changed = int(row["users"]), int(row["events"]), int(row["monthly_changed"])
    characters = int(row["characters"])
    return JobResult(
        rows_affected=changed,
        notes=[
            f"{day.isoformat()}: {events} event(s) ({_counted(conf)}) from {users} user(s), "
            f"{characters} character(s); {changed} monthly total(s) changed"
        ],
        data={"day": day.isoformat(), "users": users, "events": events, "characters": characters},
    )


def _counted(conf: handler_settings.HandlerSettings) -> str:
    types = ", ".join(conf.usage_event_types) or "every type"
    return types + (", with characters" if conf.usage_positive_only else "")
