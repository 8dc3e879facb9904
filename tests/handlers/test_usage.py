"""rollup_usage: yesterday's TTS characters into monthly totals, never double-counted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from tests.handlers.conftest import Call, RunJob
from worker import errors, store

ADA, BOB = uuid.UUID(int=1), uuid.UUID(int=2)


async def events(
    db: store.Store, rows: Sequence[tuple[uuid.UUID, int, str]], event_type: str = "TTS_REQUEST"
) -> None:
    await db.pool.executemany(
        'INSERT INTO usage_events (user_id, event_type, characters_processed, "timestamp") '
        "VALUES ($1, $2, $3, $4::text::timestamptz)",
        [(u, event_type, chars, at) for u, chars, at in rows],
    )


async def monthly(db: store.Store) -> list[tuple[Any, ...]]:
    rows = await db.pool.fetch(
        "SELECT user_id, to_char(month_start_date, 'YYYY-MM') AS month, "
        "total_characters_processed FROM monthly_usage ORDER BY month_start_date, user_id"
    )
    return [tuple(r) for r in rows]


JAN_31 = [
    (ADA, 100, "2026-01-31T00:00:00Z"),
    (ADA, 50, "2026-01-31T23:59:59Z"),
    (BOB, 7, "2026-01-31T12:00:00Z"),
    (BOB, 1000, "2026-02-01T00:00:00Z"),  # the next day
    (BOB, 1000, "2026-01-30T23:59:59Z"),  # the day before
]


async def test_rolls_one_utc_day_into_its_month(db: store.Store, run_job: RunJob) -> None:
    await events(db, JAN_31)
    await db.pool.execute(
        "INSERT INTO monthly_usage (user_id, month_start_date, total_characters_processed) "
        "VALUES ($1, '2026-01-01', 1)",
        ADA,
    )
    ran = await run_job("rollup_usage", {"day": "2026-01-31"})
    assert ran.status == "succeeded", ran.error
    assert ran.last_run["rows_affected"] == 2
    assert ran.last_run["notes"] == (
        "2026-01-31: 3 event(s) (TTS_REQUEST, with characters) from 2 user(s), 157 "
        "character(s); 2 monthly total(s) changed"
    )
    assert await monthly(db) == [(ADA, "2026-01", 151), (BOB, "2026-01", 7)]


async def test_counts_what_the_apps_rollup_counts_and_the_filters_are_settings(
    db: store.Store, call: Call, hsettings: Any
) -> None:
    await events(db, [(ADA, 500, "2026-01-31T10:00:00Z"), (ADA, 0, "2026-01-31T11:00:00Z")])
    await events(db, [(ADA, 1, "2026-01-31T09:00:00Z")], event_type="LOGIN")
    await events(db, [(BOB, 40, "2026-01-31T09:00:00Z")], event_type="VOICE_CLONE")
    counted = await call("rollup_usage", {"day": "2026-01-31"})
    assert counted.data is not None and (counted.data["events"], counted.data["users"]) == (1, 1)
    assert await monthly(db) == [(ADA, "2026-01", 500)]
    # Settings change what counts; a re-run of the day then corrects it to the new filter.
    hsettings(usage_event_types=["TTS_REQUEST", "VOICE_CLONE"], usage_positive_only=False)
    widened = await call("rollup_usage", {"day": "2026-01-31"})
    assert widened.data is not None and widened.data["events"] == 3
    assert await monthly(db) == [(ADA, "2026-01", 500), (BOB, "2026-01", 40)]
    hsettings(usage_event_types=[])
    await call("rollup_usage", {"day": "2026-01-31"})
    assert await monthly(db) == [(ADA, "2026-01", 501), (BOB, "2026-01", 40)]


async def test_rerun_never_double_counts_and_late_events_are_added(
    db: store.Store, call: Call
) -> None:
    await events(db, JAN_31)
    await call("rollup_usage", {"day": "2026-01-31"})
    before = await monthly(db)
    again = await call("rollup_usage", {"day": "2026-01-31"})
    assert again.rows_affected == 0
    assert await monthly(db) == before
    await events(db, [(BOB, 3, "2026-01-31T18:00:00Z")])  # arrived late
    await db.pool.execute(
        "DELETE FROM usage_events WHERE user_id = $1 AND characters_processed = 50", ADA
    )
    late = await call("rollup_usage", {"day": "2026-01-31"})
    assert late.rows_affected == 2
    assert await monthly(db) == [(ADA, "2026-01", 100), (BOB, "2026-01", 10)]
    # A day rolled up twice at the same moment still counts once.
    await events(db, [(ADA, 1, "2026-02-01T10:00:00Z")])
    await asyncio.gather(*(call("rollup_usage", {"day": "2026-02-01"}) for _ in range(3)))
    assert (await monthly(db))[2:] == [(ADA, "2026-02", 1), (BOB, "2026-02", 1000)]


async def test_defaults_to_yesterday_utc(db: store.Store, call: Call) -> None:
    await db.pool.execute(
        'INSERT INTO usage_events (user_id, event_type, characters_processed, "timestamp") '
        "VALUES ($1, 'TTS_REQUEST', 5, date_trunc('day', now(), 'UTC') - interval '1 hour'), "
        "($1, 'TTS_REQUEST', 9, date_trunc('day', now(), 'UTC') + interval '1 minute')",
        ADA,
    )
    result = await call("rollup_usage")
    assert result.rows_affected == 1
    assert [m[2:] for m in await monthly(db)] == [(5,)]


async def test_failure_midway_changes_nothing(db: store.Store, run_job: RunJob) -> None:
    await events(db, JAN_31)
    await db.pool.execute(
        f"""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.user_id = '{BOB}' THEN RAISE EXCEPTION 'quota service says no'; END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON monthly_usage FOR EACH ROW EXECUTE FUNCTION refuse();
        """
    )
    ran = await run_job("rollup_usage", {"day": "2026-01-31"})
    assert ran.status == "failed"
    assert ran.error is not None and "quota service says no" in ran.error
    assert await monthly(db) == []
    assert await db.pool.fetchval("SELECT count(*) FROM daily_usage") == 0
    await db.pool.execute("DROP TRIGGER refuse ON monthly_usage")
    await run_job("rollup_usage", {"day": "2026-01-31"})
    await run_job("rollup_usage", {"day": "2026-01-31"})
    assert await monthly(db) == [(ADA, "2026-01", 150), (BOB, "2026-01", 7)]


async def test_bad_input(run_job: RunJob, call: Call) -> None:
    ran = await run_job("rollup_usage", {"day": "yesterday"})
    assert ran.error is not None and "day: Input should be a valid date" in ran.error
    with pytest.raises(errors.PermanentJobError, match=r"is not over yet \(today is"):
        await call("rollup_usage", {"day": "2999-01-01"})
