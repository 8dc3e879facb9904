"""The scheduler against a real PostgreSQL: exactly-once across replicas, missed-tick
policies, the SQL functions' checks, the file sync, the loop and the CLI."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from tests.support import factories, handlers
from tests.support.clock import FakeClock
from tests.support.factories import ACTOR
from tests.support.proc import run_cli, worker_env
from worker import dispatcher, errors, scheduler, service, store
from worker.admin.store import AdminStore
from worker.registry import REGISTRY, Registry
from worker.scheduler import next_tick

NY = "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


async def add(
    db: store.Store,
    name: str,
    cron: str,
    *,
    since: datetime,
    tz: str = "UTC",
    task_type: str = "ok",
    missed: str = "latest",
) -> None:
    """A schedule whose ticks after `since` are owed (a plain INSERT, as an app could do)."""
    await db.pool.execute(
        "INSERT INTO job_schedules (name, cron, timezone, task_type, missed, last_tick_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        name,
        cron,
        tz,
        task_type,
        missed,
        since,
    )


def expected_ticks(cron: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    found, tick = [], next_tick(cron, tz, start)
    while tick <= end:
        found.append(tick)
        tick = next_tick(cron, tz, tick)
    return found


async def cron_jobs(db: store.Store, name: str) -> list[datetime]:
    rows = await db.pool.fetch(
        "SELECT run_at FROM job_queue WHERE schedule_name = $1 AND run_type = 'cron'"
        " ORDER BY run_at",
        name,
    )
    return [row["run_at"] for row in rows]


@pytest.fixture
async def replicas(db_dsn: str) -> AsyncIterator[list[store.Store]]:
    """Three more Stores, one connection each: three worker replicas."""
    stores = [await store.connect(db_dsn, min_size=1, max_size=1) for _ in range(3)]
    yield stores
    for each in stores:
        await each.close()


# -- exactly once ----------------------------------------------------------------------------


async def test_three_replicas_enqueue_each_tick_exactly_once(
    db: store.Store, replicas: list[store.Store], make_settings: Any
) -> None:
    start = utc(2026, 11, 1, 4, 30)  # New York falls back at 06:00 UTC, inside the run
    end = start + timedelta(hours=3)
    schedules = {
        "every_minute": ("* * * * *", "UTC"),
        "ny_quarter_hour": ("*/15 * * * *", NY),
        "ny_hourly": ("@hourly", NY),
        "ny_1am": ("*/20 1 * * *", NY),  # a repeated hour: runs in its first pass only
    }
    for name, (cron, tz) in schedules.items():
        await add(db, name, cron, tz=tz, since=start)
    settings = make_settings()
    # The replicas' clocks disagree (-7 s, 0, +13 s), and the third one lags: it passes
    # only every 4th step, so it often works from a stale view of the table.
    skews = [timedelta(seconds=-7), timedelta(0), timedelta(seconds=13)]
    crons = [scheduler.Scheduler(r, settings) for r in replicas]
    now, step, lost = start, 0, 0
    while now < end:
        now += timedelta(seconds=30)
        step += 1
        reports = await asyncio.gather(
            *(
                cron.run_once(now + skew)
                for i, (cron, skew) in enumerate(zip(crons, skews, strict=True))
                if i < 2 or step % 4 == 0
            )
        )
        lost += sum(report.taken for report in reports)
        if step % 7 == 0:  # jobs finish: the dedupe index stops covering them
            await db.pool.execute("UPDATE job_queue SET status = 'succeeded'")
    seen_until = end + max(skews)
    for name, (cron, tz) in schedules.items():
        assert await cron_jobs(db, name) == expected_ticks(cron, tz, start, seen_until), name
    assert len(await cron_jobs(db, "ny_1am")) == 3
    assert len(await cron_jobs(db, "every_minute")) == 180
    duplicates = await db.pool.fetchval(
        "SELECT count(*) FROM (SELECT dedupe_key FROM job_queue GROUP BY 1 HAVING count(*) > 1)"
        " AS d"
    )
    assert duplicates == 0
    assert lost > 0  # the replicas did race for the same ticks


async def test_a_stale_replica_cannot_enqueue_a_tick_whose_job_already_finished(
    db: store.Store, replicas: list[store.Store], make_settings: Any
) -> None:
    t0 = utc(2026, 6, 1, 12)
    await add(db, "m", "*/10 * * * *", since=t0)
    now = t0 + timedelta(minutes=10, seconds=5)
    late = replicas[0]
    [stale] = await late.due_schedules(now)  # the late replica reads the row...
    report = await scheduler.Scheduler(db, make_settings()).run_once(now)  # ...another fires
    assert [(name, tick) for name, tick, _ in report.enqueued] == [
        ("m", t0 + timedelta(minutes=10))
    ]
    await db.pool.execute("UPDATE job_queue SET status = 'succeeded', finished_at = now()")
    # The dedupe key alone would let the late replica in now (it covers live jobs only)...
    tick = t0 + timedelta(minutes=10)
    key = scheduler.dedupe_key("m", tick)
    # ...but its write is conditional on the last_tick_at it read, which has moved.
    written = await late.fire_schedule(
        "m",
        revision=stale["revision"],
        seen_last_tick_at=stale["last_tick_at"],
        last_tick_at=tick,
        next_tick_at=tick + timedelta(minutes=10),
        ticks=[tick],
        dedupe_keys=[key],
    )
    assert written is None
    assert len(await cron_jobs(db, "m")) == 1


async def test_an_admin_edit_between_read_and_write_wins(
    db: store.Store, make_settings: Any
) -> None:
    t0 = utc(2026, 6, 1, 12)
    await add(db, "m", "*/10 * * * *", since=t0)
    [seen] = await db.due_schedules(t0 + timedelta(minutes=11))
    # paused while the pass was planning:
    await AdminStore(db.pool).toggle_schedule(ACTOR, "m", False)
    tick = t0 + timedelta(minutes=10)
    written = await db.fire_schedule(
        "m",
        revision=seen["revision"],
        seen_last_tick_at=seen["last_tick_at"],
        last_tick_at=tick,
        next_tick_at=tick,
        ticks=[tick],
        dedupe_keys=[scheduler.dedupe_key("m", tick)],
    )
    assert written is None
    assert await cron_jobs(db, "m") == []


async def test_a_cron_job_is_a_real_job_with_retries_and_an_audit_trail(
    db: store.Store, make_settings: Any
) -> None:
    t0 = utc(2026, 6, 1, 12)
    await add(db, "flaky_every_hour", "0 * * * *", since=t0, task_type="fail_once")
    report = await scheduler.Scheduler(db, make_settings()).run_once(t0 + timedelta(hours=1))
    [(_, tick, job_id)] = report.enqueued
    job = await factories.job(db, job_id)
    assert (job["run_type"], job["schedule_name"], job["run_at"]) == (
        "cron",
        "flaky_every_hour",
        tick,
    )
    assert job["dedupe_key"] == "schedule:flaky_every_hour:2026-06-01T13:00:00Z"
    worker = dispatcher.Dispatcher(db, handlers.registry(), make_settings(), once=True)
    summary = await asyncio.wait_for(worker.run(), timeout=30)
    assert (summary.retried, summary.succeeded) == (1, 1)
    runs = await factories.schedule_runs(db, "flaky_every_hour", 10)
    assert [(r["status"], r["attempt"], r["run_type"]) for r in runs] == [
        ("succeeded", 2, "cron"),
        ("retry", 1, "cron"),
    ]
    [listed] = await factories.schedules(db)
    assert (listed["last_job_id"], listed["last_job_status"], listed["last_run_status"]) == (
        job_id,
        "succeeded",
        "succeeded",
    )
    assert listed["next_tick_at"] == tick + timedelta(hours=1)


# -- missed ticks ----------------------------------------------------------------------------


async def test_missed_tick_policies(db: store.Store, make_settings: Any) -> None:
    t0 = utc(2026, 6, 1, 12)
    for missed in ("latest", "skip", "all"):
        await add(db, missed, "*/10 * * * *", since=t0, missed=missed)
    cron = scheduler.Scheduler(db, make_settings(scheduler_grace_s=60))
    now = t0 + timedelta(minutes=65)  # nobody ran 6 ticks; the newest is 5 minutes old
    report = await cron.run_once(now)
    assert len(report.enqueued) == 7
    tick = [t0 + timedelta(minutes=10 * n) for n in range(1, 7)]
    assert await cron_jobs(db, "latest") == tick[-1:]
    assert await cron_jobs(db, "skip") == []
    assert await cron_jobs(db, "all") == tick
    rows = await db.pool.fetch("SELECT last_tick_at, next_tick_at FROM job_schedules")
    assert {(r["last_tick_at"], r["next_tick_at"]) for r in rows} == {
        (tick[-1], t0 + timedelta(minutes=70))
    }
    assert (await cron.run_once(now)).enqueued == []  # handled: nothing twice
    # An on-time tick runs under `skip` too.
    on_time = await cron.run_once(t0 + timedelta(minutes=70, seconds=20))
    assert sorted(name for name, _, _ in on_time.enqueued) == ["all", "latest", "skip"]


async def test_backfill_is_bounded(db: store.Store, make_settings: Any) -> None:
    t0 = utc(2026, 6, 1, 12)
    await add(db, "all", "* * * * *", since=t0, missed="all")
    cron = scheduler.Scheduler(db, make_settings(scheduler_backfill_max=5))
    with structlog.testing.capture_logs() as logs:
        await cron.run_once(t0 + timedelta(hours=2))
    assert await cron_jobs(db, "all") == [
        t0 + timedelta(hours=2) - timedelta(minutes=n) for n in range(4, -1, -1)
    ]
    [skipped] = [e for e in logs if e["event"] == "schedule_ticks_skipped"]
    assert (skipped["schedule"], skipped["policy"]) == ("all", "all")


async def test_retime_and_resume_owe_no_earlier_tick(db: store.Store, make_settings: Any) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=3)
    await add(db, "retimed", "0 * * * *", since=long_ago)
    await add(db, "resumed", "0 * * * *", since=long_ago)
    await AdminStore(db.pool).update_schedule(ACTOR, "retimed", {"cron": "*/5 * * * *"})
    await AdminStore(db.pool).toggle_schedule(ACTOR, "resumed", False)
    await AdminStore(db.pool).toggle_schedule(ACTOR, "resumed", True)
    now = await db.database_now()
    report = await scheduler.Scheduler(db, make_settings()).run_once(now)
    assert report.enqueued == []
    rows = await db.pool.fetch("SELECT name, last_tick_at, next_tick_at FROM job_schedules")
    assert all(now - timedelta(seconds=5) < r["last_tick_at"] <= now for r in rows)
    assert all(r["next_tick_at"] > now for r in rows)


async def test_an_invalid_row_is_reported_once_and_skipped(
    db: store.Store, make_settings: Any
) -> None:
    t0 = utc(2026, 6, 1, 12)
    await add(db, "good", "*/10 * * * *", since=t0)
    await add(db, "bad_here", "*/10 * * * *", since=t0)
    # A row the checks never saw (written before them, or with the trigger disabled).
    await db.pool.execute("ALTER TABLE job_schedules DISABLE TRIGGER job_schedules_guard")
    await db.pool.execute(
        "UPDATE job_schedules SET timezone = 'Mars/Olympus' WHERE name = 'bad_here'"
    )
    cron = scheduler.Scheduler(db, make_settings())
    with structlog.testing.capture_logs() as logs:
        first = await cron.run_once(t0 + timedelta(minutes=11))
        second = await cron.run_once(t0 + timedelta(minutes=12))
    assert [name for name, _, _ in first.enqueued] == ["good"]
    assert first.invalid == second.invalid == ["bad_here"]
    assert [e["schedule"] for e in logs if e["event"] == "schedule_invalid"] == ["bad_here"]


# -- invalid input ------------------------------------------------------------------------------

_BAD = [
    {"name": "bad name"},
    {"cron": "61 * * * *"},
    {"cron": "0 0 30 2 *"},
    {"cron": "@reboot"},
    {"timezone": "Mars/Olympus"},
    {"timezone": "europe/london"},
    {"task_type": "no spaces allowed"},
    {"payload": [1, 2]},
    {"queue": "bad queue"},
    {"priority": 5000},
    {"max_attempts": 0},
    {"missed": "sometimes"},
]


async def test_sql_refuses_invalid_schedules_with_the_same_message(db: store.Store) -> None:
    for bad in _BAD:
        fields: dict[str, Any] = {
            "name": "s",
            "cron": "*/5 * * * *",
            "task_type": "ok",
            "payload": {},
            "timezone": "UTC",
            "queue": "default",
            "priority": 0,
            "max_attempts": None,
            "missed": "latest",
            **bad,
        }
        message = scheduler.schedule_problem(fields)
        assert message is not None
        # The RPC, a plain INSERT (the Supabase table editor), and the store (the CLI).
        with pytest.raises(asyncpg.InvalidParameterValueError) as rpc:
            await db.pool.fetchrow(
                "SELECT * FROM job_schedule_create(name => $1, cron => $2, task_type => $3,"
                " payload => $4, timezone => $5, queue => $6, priority => $7,"
                " max_attempts => $8, missed => $9)",
                *fields.values(),
            )
        with pytest.raises(asyncpg.InvalidParameterValueError) as insert:
            await db.pool.execute(
                "INSERT INTO job_schedules (name, cron, task_type, payload, timezone, queue,"
                " priority, max_attempts, missed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                *fields.values(),
            )
        with pytest.raises(errors.ScheduleError) as cli:
            await AdminStore(db.pool).create_schedule(
                ACTOR, store.ScheduleDef(**fields, active=True, source="admin")
            )
        assert str(rpc.value) == str(insert.value) == str(cli.value) == message, bad
    assert await factories.schedules(db) == []


async def test_sql_refuses_bad_updates_duplicates_and_unknown_names(db: store.Store) -> None:
    await db.pool.execute("SELECT job_schedule_create('s', '*/5 * * * *', 'ok')")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="minute step 0"):
        await db.pool.execute("SELECT job_schedule_retime('s', '*/0 * * * *')")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown timezone 'PST'"):
        await db.pool.execute("UPDATE job_schedules SET timezone = 'PST'")
    with pytest.raises(
        asyncpg.UniqueViolationError, match=r"^a schedule named 's' already exists$"
    ):
        await db.pool.execute("SELECT job_schedule_create('s', '@daily', 'ok')")
    with pytest.raises(asyncpg.NoDataFoundError, match=r"^no schedule named 'nope'$"):
        await db.pool.execute("SELECT job_schedule_toggle('nope')")
    assert await AdminStore(db.pool).update_schedule(ACTOR, "nope", {"cron": "@daily"}) is None
    assert await db.pool.fetchval("SELECT job_schedule_delete('nope')") is False


async def test_sql_and_python_agree_on_every_cron_expression(db: store.Store) -> None:
    rng = random.Random(4)
    alphabet = "0123456789*/-,@ abcdefjnoqstuwLH#?\t"
    pieces = ["*", "*/5", "1-5", "0", "59", "60", "mon", "jan", "sun-sat", "7", "5/15", "1,2"]
    samples = {
        *("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(300)),
        *(
            " ".join(rng.choice(pieces) for _ in range(rng.choice((4, 5, 5, 5, 6))))
            for _ in range(300)
        ),
        *scheduler.ALIASES,
        "@every",
        "0 0 31 2,4 *",
        "0 0 29 2 *",
    }
    rows = await db.pool.fetch(
        "SELECT e, job_schedule_cron_error(e) AS problem FROM unnest($1::text[]) AS e",
        sorted(samples),
    )
    disagreements = [
        (r["e"], r["problem"], scheduler.cron_error(r["e"]))
        for r in rows
        if r["problem"] != scheduler.cron_error(r["e"])
    ]
    assert disagreements == []
    assert sum(r["problem"] is None for r in rows) > 15  # the sample had valid ones too


async def test_sql_and_python_agree_on_timezones(db: store.Store) -> None:
    names = [
        "UTC", "Etc/UTC", "GMT", "Europe/London", "America/New_York", "Asia/Kolkata",
        "Australia/Lord_Howe", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "EST5EDT",
        "utc", "europe/paris", "PST", "UTC+3", "<+05>-5", "posix/Europe/London", "localtime",
        "Mars/Olympus", "America", "", "Europe/London ",
    ]  # fmt: skip
    rows = await db.pool.fetch(
        "SELECT n, job_schedule_timezone_error(n) AS problem FROM unnest($1::text[]) AS n", names
    )
    assert [(r["n"], r["problem"]) for r in rows] == [
        (n, scheduler.timezone_error(n)) for n in names
    ]


async def test_admin_functions_are_for_service_role_and_the_apps_admins(empty_dsn: str) -> None:
    db = await store.connect(empty_dsn)
    try:
        for role in ("anon", "authenticated", "service_role"):
            exists = await db.pool.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            if not exists:
                await db.pool.execute(f"CREATE ROLE {role} NOLOGIN")
        from worker import migrations  # noqa: PLC0415

        await migrations.migrate(db)
        can = await db.pool.fetchrow(
            "SELECT has_function_privilege('service_role', 'job_schedule_create(text,text,text,"
            "jsonb,text,text,integer,integer,text,boolean)', 'EXECUTE') AS service_create,"
            " has_function_privilege('anon', 'job_schedules_list()', 'EXECUTE') AS anon_list,"
            " has_function_privilege('authenticated', 'job_schedule_toggle(text,boolean)',"
            " 'EXECUTE') AS auth_toggle,"
            " has_function_privilege('service_role', 'job_schedule_history(text,integer)',"
            " 'EXECUTE') AS service_history"
        )
        assert dict(can) == {
            "service_create": True,
            "anon_list": False,
            "auth_toggle": True,  # checked inside: the app's admins only (0009)
            "service_history": True,
        }
        async with db.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL ROLE authenticated")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no admin check"):
                await conn.execute("SELECT job_schedule_toggle('nightly')")
    finally:
        await db.close()


# -- the schedule file -------------------------------------------------------------------------


def _file(path: Path, **schedules: str) -> Path:
    path.write_text("".join(f"[schedules.{name}]\n{body}\n" for name, body in schedules.items()))
    return path


def _registry() -> Registry:
    return handlers.registry()


async def _states(db: store.Store) -> dict[str, tuple[Any, ...]]:
    rows = await db.pool.fetch("SELECT name, cron, active, paused_by, source FROM job_schedules")
    return {r["name"]: (r["cron"], r["active"], r["paused_by"], r["source"]) for r in rows}


async def test_file_sync_keeps_an_admins_pause(
    db: store.Store, make_settings: Any, tmp_path: Path
) -> None:
    path = tmp_path / "schedules.toml"
    settings = make_settings(schedules_file=path)
    body = 'cron = "{}"\ntask_type = "ok"\n'
    _file(path, a=body.format("0 2 * * *"), b=body.format("0 3 * * *"))
    await service.sync_schedule_file(db, settings, _registry())
    await AdminStore(db.pool).create_schedule(
        ACTOR, scheduler.spec(name="c", cron="@daily", task_type="ok").to_def("admin")
    )
    await AdminStore(db.pool).toggle_schedule(ACTOR, "a", False)  # an admin pauses a file schedule
    # The file changes a's timing and pauses b itself.
    _file(path, a=body.format("0 4 * * *"), b=body.format("0 3 * * *") + "active = false\n")
    await service.sync_schedule_file(db, settings, _registry())
    assert await _states(db) == {
        "a": ("0 4 * * *", False, "admin", "file"),
        "b": ("0 3 * * *", False, "file", "file"),
        "c": ("@daily", True, None, "admin"),
    }
    # The file resumes b (its own pause) but cannot resume a; it drops nothing yet.
    _file(path, a=body.format("0 4 * * *"), b=body.format("0 3 * * *"))
    await service.sync_schedule_file(db, settings, _registry())
    states = await _states(db)
    assert (states["a"][1:3], states["b"][1:3]) == ((False, "admin"), (True, None))
    # A schedule gone from the file is removed; the admin's own schedule stays.
    _file(path, a=body.format("0 4 * * *"))
    await service.sync_schedule_file(db, settings, _registry())
    assert sorted(await _states(db)) == ["a", "c"]


async def test_file_sync_reports_unserved_task_types_and_refuses_bad_payloads(
    db: store.Store, make_settings: Any, tmp_path: Path
) -> None:
    path = _file(
        tmp_path / "s.toml", elsewhere='cron = "@daily"\ntask_type = "served_by_another_app"\n'
    )
    settings = make_settings(schedules_file=path)
    with structlog.testing.capture_logs() as logs:
        await service.sync_schedule_file(db, settings, _registry())
    assert {"event": "schedule_task_unserved", "schedule": "elsewhere",
            "task_type": "served_by_another_app", "log_level": "warning"} in logs  # fmt: skip
    _file(path, slow='cron = "@daily"\ntask_type = "sleep"\npayload = { seconds = "long" }\n')
    with pytest.raises(errors.ConfigError, match="schedule 'slow': invalid payload for 'sleep'"):
        await service.sync_schedule_file(db, settings, _registry())


async def test_concurrent_syncs_of_an_apps_file(db: store.Store, make_settings: Any) -> None:
    import handlers.bundled  # noqa: PLC0415 - registers the bundled handlers

    settings = make_settings(schedules_file=handlers.APPS["challenges"].schedules)
    await asyncio.gather(*(service.sync_schedule_file(db, settings, REGISTRY) for _ in range(3)))
    rows = await factories.schedules(db)
    assert len(rows) == 4 and all(r["source"] == "file" for r in rows)
    # Shipped off: it fails for good until its allow-list setting names the view.
    assert {r["name"] for r in rows if not r["active"]} == {"challenge_stats_refresh"}


# -- the loop ------------------------------------------------------------------------------------


async def test_the_loop_enqueues_due_ticks_and_reports_alive(
    db: store.Store, make_settings: Any
) -> None:
    now = await db.database_now()
    await add(db, "m", "* * * * *", since=now - timedelta(minutes=3))
    cron = scheduler.Scheduler(db, make_settings(scheduler_interval_s=0.05), FakeClock(now))
    alive = asyncio.Event()
    task = asyncio.create_task(cron.run(lambda loop: alive.set()))
    try:
        await asyncio.wait_for(alive.wait(), timeout=10)
    finally:
        task.cancel()
    assert await cron_jobs(db, "m") == [now.replace(second=0, microsecond=0)]


async def test_a_host_whose_clock_is_off_does_not_schedule(
    db: store.Store, make_settings: Any
) -> None:
    now = await db.database_now()
    await add(db, "m", "* * * * *", since=now - timedelta(minutes=3))
    clock = FakeClock(now + timedelta(hours=1))
    cron = scheduler.Scheduler(db, make_settings(scheduler_interval_s=0.05), clock)
    passes = 0
    done = asyncio.Event()

    def alive(loop: str) -> None:
        nonlocal passes
        passes += 1
        if passes == 2:
            done.set()

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(cron.run(alive))
        try:
            await asyncio.wait_for(done.wait(), timeout=10)
        finally:
            task.cancel()
    assert await cron_jobs(db, "m") == []
    [skew] = [e for e in logs if e["event"] == "scheduler_clock_skew"]  # logged once
    assert skew["skew_s"] < -3500


async def test_the_daemon_syncs_the_file_and_runs_due_ticks(
    db: store.Store, db_dsn: str, tmp_path: Path
) -> None:
    path = _file(
        tmp_path / "s.toml",
        from_file='cron = "0 0 1 1 *"\ntask_type = "echo"\npayload = { message = "new year" }\n',
    )
    now = await db.database_now()
    await db.pool.execute(
        "INSERT INTO job_schedules (name, cron, task_type, payload, last_tick_at)"
        " VALUES ('hello', '* * * * *', 'echo', '{\"message\": \"tick\"}', $1)",
        now - timedelta(minutes=2),
    )
    env = worker_env(
        db_dsn,
        WORKER_SCHEDULER="on",
        WORKER_SCHEDULES_FILE=str(path),
        WORKER_SCHEDULER_INTERVAL_S="0.2",
    )
    with (tmp_path / "worker.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker", env=env, stderr=log
        )
        try:
            status = None
            for _ in range(300):  # the first pass runs the newest missed tick at once
                status = await db.pool.fetchval(
                    "SELECT status FROM job_runs WHERE schedule_name = 'hello'"
                )
                if status is not None or process.returncode is not None:
                    break
                await asyncio.sleep(0.05)
            assert status == "succeeded", (tmp_path / "worker.log").read_text()
            assert "from_file" in await _states(db)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            returncode = await asyncio.wait_for(process.wait(), timeout=30)
    assert returncode == 0, (tmp_path / "worker.log").read_text()


# -- the CLI --------------------------------------------------------------------------------------


def test_cli_manages_schedules(db_dsn: str) -> None:
    added = run_cli(
        "schedules", "add", "nightly", "--cron", "0 6 * * *", "--timezone", "Europe/London",
        "--task", "echo", "--payload", '{"message": "good morning"}', "--missed", "skip",
        dsn=db_dsn,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["schedule"]["missed"] == "skip"
    changed = run_cli("schedules", "set", "nightly", "--cron", "30 6 * * 1-5", dsn=db_dsn)
    assert changed.returncode == 0, changed.stderr
    paused = run_cli("schedules", "pause", "nightly", dsn=db_dsn)
    assert paused.returncode == 0, paused.stderr
    listed = run_cli("schedules", "list", dsn=db_dsn)
    assert listed.returncode == 0, listed.stderr
    [line] = [line for line in listed.stdout.splitlines() if line.startswith("nightly")]
    assert line.split()[:6] == ["nightly", "paused", "(admin)", "30", "6", "*"]
    removed = run_cli("schedules", "remove", "nightly", dsn=db_dsn)
    assert (removed.returncode, removed.stdout.strip()) == (0, '{"removed": "nightly"}')


def test_cli_refuses_bad_input_with_one_line(db_dsn: str) -> None:
    cases = {
        ("add", "x", "--cron", "61 * * * *", "--task", "echo"):
            "error: invalid cron expression '61 * * * *': minute value 61 is out of range 0-59",
        ("add", "x", "--cron", "@daily", "--task", "echo", "--timezone", "Mars/Olympus"):
            "error: unknown timezone 'Mars/Olympus': use an IANA name such as UTC or "
            "Europe/London",
        ("add", "x", "--cron", "@daily", "--task", "bad type"):
            "error: invalid task type 'bad type': use 1-128 of A-Z a-z 0-9 _ . : -",
        ("add", "x", "--cron", "@daily", "--task", "nosuch"):
            "error: no handler for task type 'nosuch' in this worker",
        ("resume", "ghost"): "error: no schedule named 'ghost'",
    }  # fmt: skip
    processes = {
        args: subprocess.Popen(
            [sys.executable, "-m", "worker", "schedules", *args],
            env=worker_env(db_dsn),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in cases
    }
    for args, process in processes.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == 2, (args, err)
        assert err.startswith(cases[args]), (args, err)
        assert err.count("\n") == 1 and out == "", (args, err)
