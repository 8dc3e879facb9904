"""cleanup: old notifications, processed orders and succeeded jobs, in bounded batches."""

from __future__ import annotations

import uuid
from typing import Any

from tests.handlers.conftest import Call, RunJob
from worker import store

USER = uuid.UUID(int=1)


async def seed(db: store.Store) -> None:
    await db.pool.executemany(
        "INSERT INTO notifications (user_id, type, title, created_at) "
        "VALUES ($1, 'n', $2, now() - make_interval(days => $3))",
        [(USER, f"old {i}", 31 + i) for i in range(5)] + [(USER, "recent", 29)],
    )
    await db.pool.executemany(
        "INSERT INTO queue (user_id, ticker, order_type, amount_usdp, status, date,"
        " processed_at) VALUES ($1, 'ACME', 'buy', 1, $2, now() - interval '1 year', "
        "now() - make_interval(days => $3))",
        [
            (USER, "completed", 91),
            (USER, "failed", 120),
            (USER, "completed", 10),
        ],
    )
    await db.pool.execute(  # pending for a year: never deleted
        "INSERT INTO queue (user_id, ticker, order_type, amount_usdp, date) "
        "VALUES ($1, 'ACME', 'buy', 1, now() - interval '1 year')",
        USER,
    )


async def left(db: store.Store) -> tuple[list[str], list[str]]:
    notes = await db.pool.fetch("SELECT title FROM notifications ORDER BY created_at")
    orders = await db.pool.fetch(
        "SELECT status || ':' || coalesce(extract(day FROM now() - processed_at)::text, '-') AS o"
        " FROM queue ORDER BY id"
    )
    return [r["title"] for r in notes], [r["o"] for r in orders]


async def test_deletes_old_rows_in_batches(db: store.Store, run_job: RunJob) -> None:
    await db.pool.execute("DELETE FROM job_queue")
    await seed(db)
    await db.pool.execute("DELETE FROM job_queue")  # the orders trigger's job: not under test
    ran = await run_job("cleanup", {"batch_size": 2})
    assert ran.status == "succeeded", ran.error
    assert ran.last_run["rows_affected"] == 7
    assert ran.last_run["notes"].splitlines() == [
        "notifications: deleted 5 older than 30 days",
        "orders: deleted 2 older than 90 days",
    ]
    assert await left(db) == (["recent"], ["completed:10", "pending:-"])


async def test_rerun_deletes_nothing_more(db: store.Store, call: Call) -> None:
    await seed(db)
    await call("cleanup")
    before = await left(db)
    again = await call("cleanup")
    assert again.rows_affected == 0
    assert await left(db) == before


async def test_ages_and_batches_come_from_settings(
    db: store.Store, call: Call, hsettings: Any
) -> None:
    await seed(db)
    hsettings(cleanup_order_age_days=5, cleanup_batch_size=1, cleanup_max_batches=2)
    result = await call("cleanup")
    assert result.notes == [
        "notifications: deleted 2 older than 30 days (stopped after 2 batches; more next run)",
        "orders: deleted 2 older than 5 days (stopped after 2 batches; more next run)",
    ]
    assert (await call("cleanup")).rows_affected == 2 + 1


async def test_failure_midway_keeps_deleted_batches(db: store.Store, run_job: RunJob) -> None:
    await seed(db)
    await db.pool.execute("DELETE FROM job_queue")
    await db.pool.execute(
        """
        CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF OLD.title = 'old 1' THEN RAISE EXCEPTION 'legal hold'; END IF;
          RETURN OLD;
        END $$;
        CREATE TRIGGER keep BEFORE DELETE ON notifications FOR EACH ROW EXECUTE FUNCTION keep();
        """
    )
    ran = await run_job("cleanup", {"batch_size": 2})
    assert ran.status == "failed"
    assert ran.error is not None and "legal hold" in ran.error
    # Oldest first: the first batch (old 4, old 3) went; the one holding 'old 1' rolled back.
    assert (await left(db))[0] == ["old 2", "old 1", "old 0", "recent"]
    await db.pool.execute("DROP TRIGGER keep ON notifications")
    again = await run_job("cleanup", {"batch_size": 2})
    assert again.last_run["rows_affected"] == 5
    assert await left(db) == (["recent"], ["completed:10", "pending:-"])


async def test_bad_input(run_job: RunJob) -> None:
    ran = await run_job("cleanup", {"batch_size": -1})
    assert (
        ran.error is not None
        and "batch_size: Input should be greater than or equal to 1" in ran.error
    )
    extra = await run_job("cleanup", {"table": "profiles"})
    assert extra.error is not None and "table: Extra inputs are not permitted" in extra.error


async def test_each_apps_target_alone_and_old_succeeded_jobs(
    db: store.Store, call: Call, hsettings: Any
) -> None:
    await seed(db)
    await db.pool.execute("DELETE FROM job_queue")
    await db.pool.execute(
        "INSERT INTO job_queue (task_type, status, created_at, finished_at)"
        " SELECT 'game_platform_sync', s, now() - make_interval(days => c),"
        " now() - make_interval(days => f)"
        " FROM (VALUES ('succeeded', 20, 15), ('succeeded', 3, 2), ('failed', 90, 90))"
        " AS v(s, c, f)"
    )
    await db.pool.execute(
        "INSERT INTO job_queue (task_type, created_at)"
        " VALUES ('game_platform_sync', now() - interval '90 days')"
    )
    jobs = await call("cleanup", {"targets": ["jobs"]})
    assert (jobs.rows_affected, jobs.notes) == (1, ["jobs: deleted 1 older than 14 days"])
    left_jobs = await db.pool.fetch("SELECT status FROM job_queue ORDER BY id")
    assert [r["status"] for r in left_jobs] == ["succeeded", "failed", "pending"]
    notifications, orders_left = await left(db)
    assert len(notifications) == 6
    assert orders_left == ["completed:91", "failed:120", "completed:10", "pending:-"]
    orders = await call("cleanup", {"targets": ["orders"]})
    assert orders.notes == ["orders: deleted 2 older than 90 days"]
    assert (await left(db))[0][0] == "old 4"  # notifications untouched
    hsettings(cleanup_job_age_days=1)
    assert (await call("cleanup", {"targets": ["jobs", "jobs"]})).notes == [
        "jobs: deleted 1 older than 1 days"
    ]


async def test_targets_are_a_closed_set(run_job: RunJob) -> None:
    ran = await run_job("cleanup", {"targets": ["profiles"]})
    assert ran.error is not None and "targets.0: Input should be 'notifications'" in ran.error
    empty = await run_job("cleanup", {"targets": []})
    assert empty.error is not None and "targets: List should have at least 1 item" in empty.error
