"""The apps' own SQL, copied verbatim from their documents, against the reference set.

The apps switch over without rewriting their callers: their inserts and monitoring queries
run unchanged, their own SQL functions find every table and column they name, and the
worker's handlers do what those functions did (idempotently).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from tests.handlers.conftest import RunJob, drain
from worker import store

USER = uuid.UUID("5b1f0000-0000-4000-8000-000000000001")

# -- the trading app (Background Jobs Setup Guide, "Verify the Setup" and "Monitoring") ------

# Verbatim, but for the guide's own placeholder, which the reader replaces with a user's id.
TRADING_INSERT = """INSERT INTO public.queue (user_id, ticker, order_type, amount_usdp, status)
VALUES ('your-user-id', 'AAPL', 'buy', 100, 'pending');"""

TRADING_LATEST = """SELECT * FROM public.queue ORDER BY date DESC LIMIT 5;
-- Status should be 'completed' or 'failed'"""

TRADING_STATUS = """SELECT 
    status, 
    COUNT(*) as count,
    MIN(date) as oldest,
    MAX(date) as newest
FROM public.queue 
GROUP BY status;"""  # noqa: W291 - the guide's own trailing spaces

TRADING_REFRESH = "SELECT refresh_issuer_stats_cache();"
TRADING_CACHE = "SELECT * FROM public.issuer_stats_cache;"


async def test_the_trading_apps_order_insert_and_monitoring_queries(
    db: store.Store, run_job: RunJob, make_settings: Any
) -> None:
    await db.pool.execute("INSERT INTO tickers (symbol, current_price) VALUES ('AAPL', 200)")
    await db.pool.execute("INSERT INTO wallets (user_id, balance_usdp) VALUES ($1, 150)", USER)
    await db.pool.execute(TRADING_INSERT.replace("your-user-id", str(USER)))
    await db.pool.execute(TRADING_INSERT.replace("your-user-id", str(USER)))
    pending = await db.pool.fetch(TRADING_STATUS)
    assert [(r["status"], r["count"]) for r in pending] == [("pending", 2)]

    # The insert enqueued process_orders (the trigger that replaces the app's webhook).
    summary = await drain(db, make_settings(), "process_orders")
    assert (summary.succeeded, summary.results[0]["rows_affected"]) == (1, 2)

    latest = await db.pool.fetch(TRADING_LATEST)
    assert [r["date"] for r in latest] == sorted((r["date"] for r in latest), reverse=True)
    # Oldest first: the first order completed, the second found 50 USDP left.
    assert [(r["status"], r["failure_reason"]) for r in sorted(latest, key=lambda r: r["id"])] == [
        ("completed", None),
        ("failed", "insufficient funds"),
    ]
    statuses = {r["status"]: r["count"] for r in await db.pool.fetch(TRADING_STATUS)}
    assert statuses == {"completed": 1, "failed": 1}

    assert await db.pool.fetchval(TRADING_REFRESH) == 1
    [cache] = await db.pool.fetch(TRADING_CACHE)
    assert (cache["ticker"], cache["trades_24h"], cache["volume_24h_usdp"]) == ("AAPL", 1, 100)


# -- the text-to-speech app (07: Scheduled Backend Tasks, "Daily Usage Rollup") --------------

TTS_ROLLUP_FUNCTION = """
CREATE OR REPLACE FUNCTION public.rollup_daily_usage()
RETURNS void AS $$
DECLARE
  yesterday_start timestamptz := date_trunc('day', now() - interval '1 day');
  yesterday_end timestamptz := date_trunc('day', now()) - interval '1 second';
  month_start date := date_trunc('month', yesterday_start)::date;
BEGIN
  RAISE LOG 'Starting daily usage rollup for %', yesterday_start::date;

  INSERT INTO public.monthly_usage (user_id, month_start_date, total_characters_processed, last_updated)
  SELECT
    user_id,
    month_start,
    SUM(characters_processed) as daily_chars,
    now()
  FROM public.usage_events
  WHERE timestamp >= yesterday_start AND timestamp <= yesterday_end
    AND characters_processed > 0 -- Only include events with usage
    AND event_type = 'TTS_REQUEST' -- Only rollup TTS events
  GROUP BY user_id
  ON CONFLICT (user_id, month_start_date)
  DO UPDATE SET
    total_characters_processed = public.monthly_usage.total_characters_processed + EXCLUDED.total_characters_processed,
    last_updated = now();

  RAISE LOG 'Finished daily usage rollup.';
END;
$$ LANGUAGE plpgsql VOLATILE SECURITY DEFINER;
"""  # noqa: E501 - verbatim

TTS_CRON_COMMAND = " SELECT public.rollup_daily_usage(); "  # the cron.schedule command

# The app's sample: one TTS request of 500 characters and a login of 1, at noon yesterday:
# in UTC for the handler, in the session's time zone for the app's function (what it reads).
TTS_SAMPLE = """
INSERT INTO usage_events (user_id, event_type, characters_processed, "timestamp") VALUES
  ($1, 'TTS_REQUEST', 500, date_trunc('day', now(), 'UTC') - interval '12 hours'),
  ($1, 'login', 1, date_trunc('day', now(), 'UTC') - interval '12 hours')
"""
TTS_SAMPLE_SESSION_DAY = """
INSERT INTO usage_events (user_id, event_type, characters_processed, "timestamp") VALUES
  ($1, 'TTS_REQUEST', 500, date_trunc('day', now() - interval '1 day') + interval '12 hours'),
  ($1, 'login', 1, date_trunc('day', now() - interval '1 day') + interval '12 hours')
"""


async def monthly(db: store.Store) -> list[tuple[Any, ...]]:
    rows = await db.pool.fetch(
        "SELECT user_id, total_characters_processed FROM monthly_usage ORDER BY user_id"
    )
    return [tuple(r) for r in rows]


async def test_the_usage_rollup_on_the_apps_sample_counts_500_however_often_it_runs(
    db: store.Store, run_job: RunJob
) -> None:
    await db.pool.execute(TTS_SAMPLE, USER)
    changed = []
    for _ in range(2):
        ran = await run_job("rollup_usage")
        assert ran.status == "succeeded", ran.error
        changed.append(ran.last_run["rows_affected"])
        assert await monthly(db) == [(USER, 500)]
    assert changed == [1, 0]


async def test_the_apps_own_rollup_function_runs_on_the_reference_tables(
    db: store.Store, run_job: RunJob, hsettings: Any
) -> None:
    await db.pool.execute(TTS_ROLLUP_FUNCTION)
    await db.pool.execute(TTS_SAMPLE_SESSION_DAY, USER)
    hsettings(call_functions=["rollup_daily_usage"])
    # As the pg_cron import brings it over: a call_function job.
    ran = await run_job("call_function", {"function": "public.rollup_daily_usage"})
    assert ran.status == "succeeded", ran.error
    assert await monthly(db) == [(USER, 500)]
    await db.pool.execute(TTS_CRON_COMMAND)  # run again, as pg_cron would
    assert await monthly(db) == [(USER, 1000)]  # the app's function counts twice; ours never


# -- the challenges app (Story 17: Scheduled Jobs & Automation, "SQL Functions") ------------

CHALLENGES_FUNCTION = """
CREATE OR REPLACE FUNCTION auto_complete_challenges()
RETURNS void AS $$
BEGIN
  -- Update challenges that passed end_date
  UPDATE challenges
  SET status = CASE
    WHEN (
      SELECT AVG(completion_rate)
      FROM challenge_member_stats
      WHERE challenge_id = challenges.id
    ) >= 80 THEN 'completed'
    ELSE 'failed'
  END
  WHERE status = 'active'
    AND end_date < CURRENT_DATE;
  
  -- Send notifications to members
  INSERT INTO notifications (user_id, type, title, body, data)
  SELECT 
    cm.user_id,
    'challenge_completed',
    'Challenge Completed!',
    format('Your challenge "%s" has ended', c.name),
    jsonb_build_object('challenge_id', c.id, 'status', c.status)
  FROM challenges c
  JOIN challenge_members cm ON cm.challenge_id = c.id
  WHERE c.status IN ('completed', 'failed')
    AND c.end_date = CURRENT_DATE - INTERVAL '1 day';
END;
$$ LANGUAGE plpgsql SECURITY DEFINER;
"""  # noqa: W291, W293 - verbatim

MEMBERS = [uuid.UUID(int=i) for i in (1, 2, 3)]


async def _challenges(db: store.Store) -> None:
    await db.pool.execute(
        """
        INSERT INTO challenges (name, end_date) VALUES
          ('walk', (now() AT TIME ZONE 'UTC')::date - 1),
          ('swim', (now() AT TIME ZONE 'UTC')::date - 1),
          ('run', (now() AT TIME ZONE 'UTC')::date)
        """
    )
    rates = [("walk", MEMBERS[0], 90), ("walk", MEMBERS[1], 75), ("swim", MEMBERS[2], 40)]
    rates += [("run", MEMBERS[0], 10)]
    await db.pool.executemany(
        "INSERT INTO challenge_members (challenge_id, user_id)"
        " SELECT id, $2 FROM challenges WHERE name = $1",
        [(name, user) for name, user, _ in rates],
    )
    await db.pool.executemany(
        "INSERT INTO challenge_member_stats (challenge_id, user_id, completion_rate)"
        " SELECT id, $2, $3 FROM challenges WHERE name = $1",
        rates,
    )


async def _outcome(conn: asyncpg.Connection | Any) -> tuple[list[Any], list[Any]]:
    closed = await conn.fetch("SELECT name, status FROM challenges ORDER BY name")
    sent = await conn.fetch(
        "SELECT user_id, type, title, body, data::text FROM notifications ORDER BY user_id, body"
    )
    return [tuple(r) for r in closed], [tuple(r) for r in sent]


async def test_auto_complete_does_what_the_apps_function_does_once(
    db: store.Store, run_job: RunJob
) -> None:
    await db.pool.execute(CHALLENGES_FUNCTION)
    await _challenges(db)
    # The app's function, on a Supabase-like session (UTC), rolled back after a look.
    async with db.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SET LOCAL TIME ZONE 'UTC'")
        await conn.execute("SELECT auto_complete_challenges()")
        theirs = await _outcome(conn)
        await conn.execute("SELECT auto_complete_challenges()")
        twice = await _outcome(conn)
        await tx.rollback()
    assert theirs[0] == [("run", "active"), ("swim", "failed"), ("walk", "completed")]
    assert len(theirs[1]) == 3
    assert len(twice[1]) == 6  # the app's function notifies again on every run of the day

    for _ in range(2):  # the handler named after it: the same result, however often it runs
        ran = await run_job("auto_complete_challenges")
        assert ran.status == "succeeded", ran.error
        assert await _outcome(db.pool) == theirs
