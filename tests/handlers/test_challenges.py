"""auto_complete_challenges and send_streak_reminders."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from handlers import challenges
from tests.handlers.conftest import Call, RunJob
from worker import store

U = [uuid.UUID(int=i + 1) for i in range(6)]


async def challenge(
    db: store.Store,
    name: str,
    last_day: int,
    members: list[tuple[uuid.UUID, float | None]],
) -> int:
    """A challenge whose last day is `last_day` days from today (UTC); members with their
    completion_rate (None: no stats row)."""
    challenge_id = int(
        await db.pool.fetchval(
            "INSERT INTO challenges (name, start_date, end_date) "
            "VALUES ($1, (now() AT TIME ZONE 'UTC')::date - 7, "
            "(now() AT TIME ZONE 'UTC')::date + $2::int) RETURNING id",
            name,
            last_day,
        )
    )
    await db.pool.executemany(
        "INSERT INTO challenge_members (challenge_id, user_id) VALUES ($1, $2)",
        [(challenge_id, user) for user, _ in members],
    )
    await db.pool.executemany(
        "INSERT INTO challenge_member_stats (challenge_id, user_id, completion_rate) "
        "VALUES ($1, $2, $3)",
        [(challenge_id, user, rate) for user, rate in members if rate is not None],
    )
    return challenge_id


async def statuses(db: store.Store) -> list[tuple[Any, ...]]:
    rows = await db.pool.fetch(
        "SELECT name, status, average_completion_pct::float FROM challenges ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def notifications(db: store.Store, type_prefix: str) -> list[tuple[Any, ...]]:
    rows = await db.pool.fetch(
        "SELECT user_id, type, title, body, data, dedupe_key FROM notifications "
        "WHERE type LIKE $1 ORDER BY dedupe_key, user_id",
        type_prefix + "%",
    )
    return [tuple(r) for r in rows]


async def make_challenges(db: store.Store) -> list[int]:
    return [
        await challenge(db, "walk", -1, [(U[0], 100), (U[1], 60)]),  # 80: completed
        await challenge(db, "swim", -1, [(U[0], 79.99), (U[2], 80)]),  # 79.995: failed
        await challenge(db, "run", 0, [(U[3], 100)]),  # its last day is today: still running
        await challenge(db, "empty", -3, []),  # nobody joined: failed
        await challenge(db, "quiet", -1, [(U[4], 90), (U[5], None)]),  # 90 over the stats rows
    ]


async def test_closes_expired_challenges_and_notifies_each_member(
    db: store.Store, run_job: RunJob
) -> None:
    walk, swim, _, _, quiet = await make_challenges(db)
    ran = await run_job("auto_complete_challenges")
    assert ran.status == "succeeded", ran.error
    assert ran.last_run["rows_affected"] == 4
    assert ran.last_run["notes"] == (
        "closed 4 challenge(s): 2 completed, 2 failed (threshold 80%); 6 member notification(s)"
    )
    assert await statuses(db) == [
        ("walk", "completed", 80.0),
        ("swim", "failed", 80.0),  # stored rounded; judged unrounded
        ("run", "active", None),
        ("empty", "failed", None),
        ("quiet", "completed", 90.0),
    ]

    # The app's own notification, for completed and failed challenges alike.
    def sent(user: uuid.UUID, name: str, challenge_id: int, status: str) -> tuple[Any, ...]:
        data = {"challenge_id": challenge_id, "status": status}
        body = f'Your challenge "{name}" has ended'
        key = f"challenge_closed:{challenge_id}"
        return (user, "challenge_completed", "Challenge Completed!", body, data, key)

    assert await notifications(db, "challenge_") == [
        sent(U[0], "walk", walk, "completed"),
        sent(U[1], "walk", walk, "completed"),
        sent(U[0], "swim", swim, "failed"),
        sent(U[2], "swim", swim, "failed"),
        sent(U[4], "quiet", quiet, "completed"),
        sent(U[5], "quiet", quiet, "completed"),
    ]


async def test_rerun_never_notifies_twice(db: store.Store, call: Call) -> None:
    await make_challenges(db)
    await call("auto_complete_challenges")
    before = (await statuses(db), await notifications(db, "challenge_"))
    again = await call("auto_complete_challenges")
    assert again.rows_affected == 0
    assert (await statuses(db), await notifications(db, "challenge_")) == before
    # Even a challenge reopened by hand and closed again notifies nobody a second time.
    await db.pool.execute("UPDATE challenges SET status = 'active' WHERE name = 'walk'")
    reclosed = await call("auto_complete_challenges")
    assert (reclosed.rows_affected, reclosed.data and reclosed.data["notified"]) == (1, 0)
    assert await notifications(db, "challenge_") == before[1]


async def test_failure_midway_keeps_closed_batches_and_leaves_the_rest_active(
    db: store.Store, run_job: RunJob
) -> None:
    await make_challenges(db)
    await db.pool.execute(
        f"""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.user_id = '{U[2]}' THEN RAISE EXCEPTION 'mailbox full'; END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON notifications FOR EACH ROW EXECUTE FUNCTION refuse();
        """
    )
    ran = await run_job("auto_complete_challenges", {"batch_size": 1})
    assert ran.status == "failed"
    assert ran.error is not None and "mailbox full" in ran.error
    # Oldest last day first: empty (3 days ago) closed, then walk; swim refused (U[2]).
    assert [s[1] for s in await statuses(db)] == [
        "completed",
        "active",
        "active",
        "failed",
        "active",
    ]
    assert len(await notifications(db, "challenge_")) == 2  # walk's, committed with it
    await db.pool.execute("DROP TRIGGER refuse ON notifications")
    again = await run_job("auto_complete_challenges", {"batch_size": 1})
    assert (again.status, again.last_run["rows_affected"]) == ("succeeded", 2)
    assert len(await notifications(db, "challenge_")) == 6


async def test_challenges_bad_input(run_job: RunJob) -> None:
    ran = await run_job("auto_complete_challenges", {"batch_size": 0})
    assert (
        ran.error is not None
        and "batch_size: Input should be greater than or equal to 1" in ran.error
    )
    extra = await run_job("auto_complete_challenges", {"table": "users"})
    assert extra.error is not None and "table: Extra inputs are not permitted" in extra.error


# -- send_streak_reminders ------------------------------------------------------------------

NY, KOLKATA, LA = "America/New_York", "Asia/Kolkata", "America/Los_Angeles"


async def profiles(db: store.Store) -> None:
    await db.pool.executemany(
        "INSERT INTO profiles (id, display_name, timezone) VALUES ($1, $2, $3)",
        [
            (U[0], "ny", NY),
            (U[1], "ny, logged this morning", NY),
            (U[2], "ny, logged last night", NY),
            (U[3], "kolkata", KOLKATA),
            (U[4], "la", LA),
            (U[5], "mars", "Mars/Olympus_Mons"),
        ],
    )
    await db.pool.executemany(
        "INSERT INTO activity_logs (user_id, logged_at) VALUES ($1, $2::text::timestamptz)",
        [
            (U[1], "2026-01-15T12:10:00Z"),  # 07:10 in New York on the 15th
            (U[2], "2026-01-15T04:30:00Z"),  # 23:30 in New York on the 14th
        ],
    )


async def remind(call: Call, at: str) -> tuple[int, list[str]]:
    result = await call("send_streak_reminders", {"as_of": at})
    return result.rows_affected, result.notes


async def reminded(db: store.Store) -> list[tuple[uuid.UUID, str]]:
    rows = await db.pool.fetch(
        "SELECT user_id, dedupe_key FROM notifications WHERE type = 'streak_reminder' "
        "ORDER BY dedupe_key, user_id"
    )
    return [(r["user_id"], r["dedupe_key"]) for r in rows]


async def test_three_time_zones_around_their_eight_oclock(db: store.Store, call: Call) -> None:
    await profiles(db)
    # 07:59:59 in New York, 18:29 in Kolkata, 04:59 in Los Angeles: nobody.
    assert (await remind(call, "2026-01-15T12:59:59Z"))[0] == 0
    # 08:00 in New York: the one who has not logged today, and the one who logged yesterday.
    sent, notes = await remind(call, "2026-01-15T13:00:00Z")
    assert sent == 2
    assert notes[0] == (
        "1 time zone(s) in the 08:00 hour; 2 user(s) had not logged today, 2 reminder(s) "
        "sent, 0 already reminded"
    )
    assert notes[1] == "skipped users with unknown time zone(s): 'Mars/Olympus_Mons'"
    # 08:59:59 in New York: same local day, nothing new.
    assert (await remind(call, "2026-01-15T13:59:59Z"))[0] == 0
    # 08:29 in Kolkata (UTC+05:30) on the 16th.
    assert (await remind(call, "2026-01-16T02:59:00Z"))[0] == 1
    # 08:00 then 09:00 in Los Angeles.
    assert (await remind(call, "2026-01-16T16:00:00Z"))[0] == 1
    assert (await remind(call, "2026-01-16T17:00:00Z"))[0] == 0
    assert await reminded(db) == [
        (U[0], "streak_reminder:2026-01-15"),
        (U[2], "streak_reminder:2026-01-15"),
        (U[3], "streak_reminder:2026-01-16"),
        (U[4], "streak_reminder:2026-01-16"),
    ]


async def test_streak_rerun_sends_nothing_new_and_a_new_local_day_does(
    db: store.Store, run_job: RunJob, call: Call
) -> None:
    await profiles(db)
    first = await run_job("send_streak_reminders", {"as_of": "2026-01-15T13:30:00Z"})
    assert (first.status, first.last_run["rows_affected"]) == ("succeeded", 2)
    again = await run_job("send_streak_reminders", {"as_of": "2026-01-15T13:30:00Z"})
    assert again.last_run["rows_affected"] == 0
    assert (
        "2 user(s) had not logged today, 0 reminder(s) sent, 2 already reminded"
        in (again.last_run["notes"])
    )
    assert (await remind(call, "2026-01-16T13:30:00Z"))[0] == 3  # a new day in New York


async def test_streak_failure_writes_nothing_then_a_retry_sends_all(
    db: store.Store, run_job: RunJob
) -> None:
    await profiles(db)
    await db.pool.execute(
        f"""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.user_id = '{U[2]}' THEN RAISE EXCEPTION 'push service down'; END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON notifications FOR EACH ROW EXECUTE FUNCTION refuse();
        """
    )
    ran = await run_job("send_streak_reminders", {"as_of": "2026-01-15T13:30:00Z"})
    assert ran.status == "failed"
    assert ran.error is not None and "push service down" in ran.error
    assert await reminded(db) == []
    await db.pool.execute("DROP TRIGGER refuse ON notifications")
    again = await run_job("send_streak_reminders", {"as_of": "2026-01-15T13:30:00Z"})
    assert again.last_run["rows_affected"] == 2


async def test_streak_bad_input(run_job: RunJob) -> None:
    ran = await run_job("send_streak_reminders", {"as_of": "2026-01-15T13:30:00"})
    assert ran.error is not None and "as_of: Input should have timezone info" in ran.error


def test_local_days_follow_dst() -> None:
    # New York springs forward on 2026-03-08: that local day lasts 23 hours.
    [zone], unknown = challenges.due_zones(
        [NY, "Not/A_Zone", ""], datetime(2026, 3, 8, 12, 30, tzinfo=UTC), 8
    )
    assert unknown == ["", "Not/A_Zone"]
    assert zone.local_day == date(2026, 3, 8)
    assert zone.day_start == datetime(2026, 3, 8, 5, 0, tzinfo=UTC)
    assert zone.day_end == datetime(2026, 3, 9, 4, 0, tzinfo=UTC)
    assert challenges.due_zones([NY], datetime(2026, 3, 8, 13, 0, tzinfo=UTC), 8)[0] == []
