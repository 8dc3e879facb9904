"""import-pg-cron against a real pg_cron, holding the apps' own `cron.schedule(...)` commands.

The cluster is the one of tests/integration/test_pgcron.py (.ci/setup-pgcron: PostgreSQL 15
with pg_cron 1.4 on 127.0.0.1:5433, database worker_pgcron; PGCRON_TEST_URL points
elsewhere); without it these tests skip, and fail under CI=true. Other tests share that
cluster, so each test plans only the jobs it scheduled itself (`job_ids`) and unschedules
whatever of them is left.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.integration import test_pgcron
from tests.unit import test_pgcron_parse as seeds
from worker import errors, store
from worker.admin import pgcron

cron_db = test_pgcron.cron_db  # pg_cron's database, with the worker's schema migrated
app_db = test_pgcron.app_db  # a migrated database on that cluster without pg_cron

SERVICE_KEY = "test-service-role-key-7d1c0b"
PROJECT_URL = "https://abcdefgh.supabase.co"  # in Vault: never shown
FUNCTIONS_URL = "https://fn.example.test/functions/v1"  # typed into a command
INLINE_KEY = "test-inline-key-5e4f3a"

# A stand-in for Supabase Vault: the view and columns the seed commands read. Supabase's
# real vault.decrypted_secrets decrypts secrets stored encrypted; this one stores them in
# plain text, which is all the import needs to read them by name.
VAULT = """
CREATE SCHEMA vault;
CREATE TABLE vault.secrets (name text UNIQUE, secret text);
CREATE VIEW vault.decrypted_secrets AS SELECT name, secret AS decrypted_secret FROM vault.secrets;
"""
# The functions the seed commands call (the apps' own do real work; these do none).
FUNCTIONS = """
CREATE FUNCTION public.refresh_issuer_stats_cache() RETURNS void LANGUAGE sql AS 'SELECT';
CREATE FUNCTION public.rollup_daily_usage() RETURNS void LANGUAGE sql AS 'SELECT';
CREATE PROCEDURE public.process_all_pending_orders() LANGUAGE sql AS 'SELECT';
"""
CLEAN_UP = """
DROP SCHEMA IF EXISTS vault CASCADE;
DROP FUNCTION IF EXISTS public.refresh_issuer_stats_cache(), public.rollup_daily_usage();
DROP PROCEDURE IF EXISTS public.process_all_pending_orders();
"""


class Cron:
    """Schedules pg_cron jobs for one test and unschedules what is left of them after."""

    def __init__(self, db: store.Store) -> None:
        self.db = db
        self.suffix = uuid.uuid4().hex[:6]
        self.ids: dict[str, int] = {}

    async def schedule(self, name: str, cron: str, command: str, **options: Any) -> str:
        """pg_cron's own cron.schedule (named, as seed 004 calls it); returns the job name."""
        name = f"{name}-{self.suffix}"
        if "database" in options:
            self.ids[name] = await self.db.pool.fetchval(
                "SELECT cron.schedule_in_database($1, $2, $3, $4)",
                name,
                cron,
                command,
                options["database"],
            )
        else:
            self.ids[name] = await self.db.pool.fetchval(
                "SELECT cron.schedule(job_name => $1, schedule => $2, command => $3)",
                name,
                cron,
                command,
            )
        if options.get("active") is False:
            await self.db.pool.execute("SELECT cron.alter_job($1, active => false)", self.ids[name])
        return name

    async def remaining(self) -> set[str]:
        rows = await self.db.pool.fetch(
            "SELECT jobname FROM cron.job WHERE jobid = ANY($1::bigint[])", list(self.ids.values())
        )
        return {row["jobname"] for row in rows}

    def targets(self) -> list[str]:
        """Audit targets of this test's schedules (job_admin_audit outlives a test here)."""
        return [f"schedule:{name}" for name in self.ids]

    async def audit(self) -> list[asyncpg.Record]:
        return await self.db.pool.fetch(
            "SELECT actor, action, target, detail FROM job_admin_audit"
            " WHERE target = ANY($1::text[]) ORDER BY id",
            self.targets(),
        )

    async def clean_up(self) -> None:
        for name in await self.remaining():
            await self.db.pool.execute("SELECT cron.unschedule($1::bigint)", self.ids[name])


@pytest.fixture
async def cron(cron_db: store.Store) -> AsyncIterator[Cron]:
    await cron_db.pool.execute(CLEAN_UP)
    await cron_db.pool.execute(VAULT + FUNCTIONS)
    await cron_db.pool.execute(
        "INSERT INTO vault.secrets VALUES ('project_url', $1), ('service_role_key', $2)",
        PROJECT_URL,
        SERVICE_KEY,
    )
    jobs = Cron(cron_db)
    try:
        yield jobs
    finally:
        await jobs.clean_up()
        await cron_db.pool.execute(CLEAN_UP)


async def schedule_the_seeds(cron: Cron) -> dict[str, str]:
    """The apps' pg_cron jobs: seeds 002-004's commands, and what fails to convert."""
    filled_in = seeds.ADAPTER_CHECK.replace("<YOUR_SUPABASE_FUNCTIONS_URL>", FUNCTIONS_URL).replace(
        "<YOUR_SUPABASE_SERVICE_ROLE_KEY>", INLINE_KEY
    )
    jobs = [
        ("stats", "refresh-issuer-stats-cache", "*/5 * * * *", seeds.STATS_REFRESH, {}),
        ("adapter", "weekly-adapter-check", "0 3 * * SUN", seeds.ADAPTER_CHECK, {}),
        ("adapter_filled_in", "weekly-adapter-check-live", "0 3 * * SUN", filled_in, {}),
        ("rollup", "daily-usage-rollup", "5 0 * * *", seeds.USAGE_ROLLUP, {}),
        ("vault", "sync_game_platform_stats", "0 * * * *", seeds.VAULT_SYNC, {}),
        ("enqueue", "game_platform_sync_incremental", "*/30 * * * *", seeds.GAME_SYNC, {}),
        (
            "paused",
            "game_platform_totals_sweep_hourly",
            "0 * * * *",
            "select job_queue_enqueue('game_platform_totals_sweep', max_attempts => 3)",
            {"active": False},
        ),
        (
            "cleanup",
            "job_queue_cleanup_daily",
            "15 3 * * *",
            "delete from job_queue where status = 'succeeded'"
            " and finished_at < now() - interval '14 days'",
            {},
        ),
        ("procedure", "process-orders", "* * * * *", "select process_all_pending_orders()", {}),
        ("feb30", "never", "0 0 30 2 *", seeds.STATS_REFRESH, {}),
        ("elsewhere", "other-db", "0 * * * *", seeds.STATS_REFRESH, {"database": "postgres"}),
        (
            "missing_secret",
            "missing-secret",
            "0 * * * *",
            "select net.http_post((select decrypted_secret from vault.decrypted_secrets"
            " where name = 'no_such_secret'))",
            {},
        ),
    ]
    return {
        key: await cron.schedule(name, when, command, **options)
        for key, name, when, command, options in jobs
    }


async def plan(cron: Cron) -> pgcron.Plan:
    async with cron.db.pool.acquire() as conn:
        return await pgcron.plan(conn, job_ids=cron.ids.values())


def steps_by_job(result: pgcron.Plan) -> dict[str, pgcron.Step]:
    return {step.job.jobname or "": step for step in result.steps}


async def everything_written(db: store.Store) -> str:
    """Every row the import could have written a secret into, as text."""
    rows = await db.pool.fetch(
        "SELECT to_jsonb(s)::text AS row FROM job_schedules s"
        " UNION ALL SELECT to_jsonb(a)::text FROM job_admin_audit a"  # earlier tests' too
        " UNION ALL SELECT to_jsonb(q)::text FROM job_queue q"
        " UNION ALL SELECT to_jsonb(r)::text FROM job_runs r"
    )
    return "\n".join(row["row"] for row in rows)


async def test_the_dry_run_plans_each_seed_job_and_changes_nothing(cron: Cron) -> None:
    names = await schedule_the_seeds(cron)
    async with cron.db.pool.acquire() as conn:
        # pg_cron 1.4 has no cron.timezone setting; a session's placeholder is not one.
        await conn.execute("SET cron.timezone = 'America/New_York'")
        result = await pgcron.plan(conn, job_ids=cron.ids.values())
    assert (result.database, result.timezone) == ("worker_pgcron", "GMT")
    steps = steps_by_job(result)

    def conversion(key: str) -> pgcron.Conversion:
        step = steps[names[key]]
        assert isinstance(step, pgcron.Conversion), step
        return step

    def reason(key: str) -> str:
        step = steps[names[key]]
        assert isinstance(step, pgcron.Refusal), step
        return step.reason

    assert conversion("stats").schedule == pgcron.Schedule(
        name=names["stats"],
        cron="*/5 * * * *",
        timezone="GMT",
        task_type="call_function",
        payload={"function": "refresh_issuer_stats_cache"},
    )
    assert conversion("rollup").schedule.payload == {"function": "public.rollup_daily_usage"}
    vault = conversion("vault")
    assert vault.schedule.payload == {"endpoint": names["vault"]}
    assert vault.endpoint is not None
    assert vault.endpoint.setting() == {
        "url": f"{PROJECT_URL}/functions/v1/sync",
        "secret": f"Bearer {SERVICE_KEY}",
        "secret_header": "Authorization",
        "timeout_s": 10.0,
    }
    live = conversion("adapter_filled_in")
    assert live.endpoint is not None and live.endpoint.secret == f"Bearer {INLINE_KEY}"
    enqueue = conversion("enqueue").schedule
    assert (enqueue.task_type, enqueue.payload, enqueue.max_attempts, enqueue.active) == (
        "game_platform_sync",
        {"dryRun": False, "coachId": None},
        3,
        True,
    )
    paused = conversion("paused").schedule
    assert (paused.task_type, paused.active) == ("game_platform_totals_sweep", False)

    assert "is not an http(s) URL" in reason("adapter")
    assert reason("cleanup") == "a DELETE, not a select of one function"
    assert reason("procedure") == (
        "process_all_pending_orders() is not a plain function (call_function selects it)"
    )
    assert reason("feb30").startswith("cron '0 0 30 2 *': day-of-month 30 never occurs")
    assert reason("elsewhere").startswith("runs in database 'postgres', not 'worker_pgcron'")
    assert reason("missing_secret") == "vault secret 'no_such_secret': the vault holds none"

    table = pgcron.format_plan(result)
    assert "vault:service_role_key" in table
    for secret in (SERVICE_KEY, PROJECT_URL, INLINE_KEY):
        assert secret not in table
    # A dry run: every job still in pg_cron, no schedule, no audit row.
    assert await cron.remaining() == set(names.values())
    assert await cron.db.pool.fetchval("SELECT count(*) FROM job_schedules") == 0
    assert await cron.audit() == []


async def test_apply_moves_each_convertible_job_and_keeps_its_secrets_out_of_rows(
    cron: Cron,
) -> None:
    names = await schedule_the_seeds(cron)
    planned = await plan(cron)
    async with cron.db.pool.acquire() as conn:
        report = await pgcron.apply(conn, planned, actor="ops@example.test")
    assert report.failed == ()
    moved = {c.schedule.name for c in report.converted}
    assert moved == {
        names[key] for key in ("stats", "adapter_filled_in", "rollup", "vault", "enqueue", "paused")
    }
    # Moved jobs left pg_cron; the rest stayed, untouched.
    assert await cron.remaining() == set(names.values()) - moved

    rows = await cron.db.pool.fetch(
        "SELECT name, cron, timezone, task_type, payload, max_attempts, active, paused_by,"
        " missed, source FROM job_schedules ORDER BY name"
    )
    by_name = {row["name"]: dict(row) for row in rows}
    assert set(by_name) == moved
    assert by_name[names["vault"]] == {
        "name": names["vault"],
        "cron": "0 * * * *",
        "timezone": "GMT",
        "task_type": "call_endpoint",
        "payload": {"endpoint": names["vault"]},
        "max_attempts": None,
        "active": True,
        "paused_by": None,
        "missed": "latest",
        "source": "admin",
    }
    assert by_name[names["paused"]]["active"] is False
    assert by_name[names["paused"]]["paused_by"] == "admin"
    assert by_name[names["enqueue"]]["max_attempts"] == 3

    audit = await cron.audit()
    assert [(a["actor"], a["action"], a["target"]) for a in audit] == [
        ("ops@example.test", "schedule_import_pg_cron", f"schedule:{c.schedule.name}")
        for c in report.converted
    ]
    assert audit[0]["detail"]["pg_cron"]["jobid"] == report.converted[0].job.jobid

    written = await everything_written(cron.db)
    shown = pgcron.format_report(report)
    for secret in (SERVICE_KEY, PROJECT_URL, INLINE_KEY):
        assert secret not in written
        assert secret not in shown
    settings = json.loads(pgcron.endpoint_settings(report))
    assert settings[names["vault"]]["secret"] == f"Bearer {SERVICE_KEY}"
    assert settings[names["adapter_filled_in"]]["secret"] == f"Bearer {INLINE_KEY}"
    assert pgcron.call_functions_setting(report) == (
        "refresh_issuer_stats_cache,public.rollup_daily_usage"
    )


async def test_a_job_changed_or_a_name_taken_since_the_plan_stays_in_pg_cron(cron: Cron) -> None:
    changed = await cron.schedule("changed", "0 * * * *", seeds.STATS_REFRESH)
    taken = await cron.schedule("taken", "0 * * * *", seeds.USAGE_ROLLUP)
    fine = await cron.schedule("fine", "0 * * * *", seeds.GAME_SYNC)
    planned = await plan(cron)
    await cron.db.pool.execute(
        "SELECT cron.alter_job($1, schedule => '*/10 * * * *')", cron.ids[changed]
    )
    await cron.db.pool.execute(
        "SELECT name FROM job_schedule_create($1, '0 * * * *', 'refresh_metrics')", taken
    )
    async with cron.db.pool.acquire() as conn:
        report = await pgcron.apply(conn, planned, actor="ops")
    assert [c.schedule.name for c in report.converted] == [fine]
    assert {c.schedule.name: why for c, why in report.failed} == {
        changed: "changed in pg_cron since the plan was made: plan again",
        taken: f"a schedule named '{taken}' already exists",
    }
    # Nothing of the failed ones was written: no schedule, no audit row; still in pg_cron.
    assert await cron.remaining() == {changed, taken}
    schedules = await cron.db.pool.fetch("SELECT name, task_type FROM job_schedules ORDER BY name")
    assert sorted((r["name"], r["task_type"]) for r in schedules) == sorted(
        [(fine, "game_platform_sync"), (taken, "refresh_metrics")]
    )
    # The setup's own job_schedule_create is audited by the function; the import, once.
    assert [(row["action"], row["target"]) for row in await cron.audit()] == [
        ("schedule_create", f"schedule:{taken}"),
        ("schedule_import_pg_cron", f"schedule:{fine}"),
    ]


async def test_the_import_refuses_a_database_without_pg_cron(
    app_db: tuple[str, store.Store],
) -> None:
    database, app = app_db
    async with app.pool.acquire() as conn:
        with pytest.raises(errors.WorkerError) as refusal:
            await pgcron.plan(conn)
    assert str(refusal.value) == (
        f"pg_cron is not installed in database '{database}' (no cron.job): connect to "
        "database 'worker_pgcron' (cron.database_name)"
    )


async def test_every_pgcron_query_prepares(cron: Cron) -> None:
    async with cron.db.pool.acquire() as conn:
        for name, sql in pgcron.Q.items():
            try:
                await conn.prepare(sql)
            except asyncpg.PostgresError as exc:  # pragma: no cover - the failure message
                pytest.fail(f"{name}: {exc}")
