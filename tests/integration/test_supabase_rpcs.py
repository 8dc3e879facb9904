"""The admin RPCs for an app's own admins (schema/0009_app_admins.sql), called the way
PostgREST calls them (`set role` + `request.jwt.claims`, tests/support/supabase.py).

The app is the game platform's (its document, "Phase 4"): a `profiles` table with a role
column and an `is_admin_user()` that reads `auth.uid()`, SECURITY DEFINER, named as the
admin check. Its admin may call every admin function, each audited as `rpc:<sub>`; its
ordinary signed-in user and anon get 42501 from each and see no job. The last tests run on
plain PostgreSQL (the normal fixtures): no auth schema, the owner does everything.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.support import factories, roles, supabase
from tests.support.supabase import PostgREST
from worker import migrations, store
from worker.admin.store import AdminStore

# What an app on Supabase writes (here: the game platform's admin check).
PROFILES_SQL = """
create table profiles (
  id   uuid primary key,
  role text not null default 'member'
);
alter table profiles enable row level security;
"""
CHECK_SQL = """
create function is_admin_user() returns boolean
  language sql
  stable
  security definer
  set search_path = public
as $$
  select exists (select 1 from public.profiles where id = auth.uid() and role = 'admin')
$$;
"""


@dataclass(frozen=True, slots=True)
class App:
    database: supabase.Database
    api: PostgREST
    owner: asyncpg.Connection
    admin: uuid.UUID
    member: uuid.UUID
    jobs: dict[str, int]

    def as_admin(self) -> dict[str, Any]:
        return supabase.claims("authenticated", sub=self.admin)

    def as_member(self) -> dict[str, Any]:
        return supabase.claims("authenticated", sub=self.member)

    async def audit(self) -> list[tuple[str, str, str]]:
        rows = await self.owner.fetch(
            "SELECT actor, action, target FROM job_admin_audit ORDER BY id"
        )
        return [tuple(r) for r in rows]

    async def job(self, job_id: int) -> asyncpg.Record:
        row = await self.owner.fetchrow("SELECT * FROM job_queue WHERE id = $1", job_id)
        assert row is not None
        return row


async def _seed_jobs(owner: asyncpg.Connection) -> dict[str, int]:
    """One job in each state an admin function acts on, and a schedule with a past run."""
    later = datetime.now(UTC) + timedelta(days=1)
    started = datetime.now(UTC) - timedelta(seconds=3)
    jobs = {
        "pending": await owner.fetchval(
            "INSERT INTO job_queue (task_type, run_at) VALUES ('echo', $1) RETURNING id", later
        ),
        "failed": await owner.fetchval(
            "INSERT INTO job_queue (task_type, status, attempts, max_attempts, last_error,"
            " finished_at) VALUES ('echo', 'failed', 3, 3, 'boom', now()) RETURNING id"
        ),
        "running": await owner.fetchval(
            "INSERT INTO job_queue (task_type, queue, status, attempts, locked_by,"
            " lease_expires_at, started_at) VALUES ('echo', 'mail', 'running', 1, 'w1',"
            " now() + interval '1 minute', $1) RETURNING id",
            started,
        ),
        "succeeded": await owner.fetchval(
            "INSERT INTO job_queue (task_type, status, attempts, schedule_name, run_type)"
            " VALUES ('echo', 'succeeded', 1, 'nightly', 'cron') RETURNING id"
        ),
    }
    await owner.execute("SELECT job_schedule_create('nightly', '0 6 * * *', 'echo')")
    await owner.execute(
        "INSERT INTO job_runs (job_id, job_key, queue, run_type, status, reason, attempt,"
        " schedule_name, started_at, finished_at, duration_ms)"
        " VALUES ($1, 'echo', 'default', 'cron', 'succeeded', 'ok', 1, 'nightly', now(), now(), 5)",
        jobs["succeeded"],
    )
    await owner.execute("DELETE FROM job_admin_audit")  # the setup's own rows
    return jobs


@pytest.fixture
async def app() -> AsyncIterator[App]:
    async with supabase.fresh_database() as database:
        await supabase.migrate(database, "core")
        owner = await asyncpg.connect(database.postgres_dsn)
        await store.init_connection(owner)
        try:
            admin, member = uuid.uuid4(), uuid.uuid4()
            await owner.execute(PROFILES_SQL)
            await owner.execute(CHECK_SQL)
            await owner.execute(
                "INSERT INTO profiles (id, role) VALUES ($1, 'admin'), ($2, 'member')",
                admin,
                member,
            )
            named = await owner.fetchval("SELECT job_queue_set_admin_check('is_admin_user()')")
            assert named == "public.is_admin_user()"
            jobs = await _seed_jobs(owner)
            async with PostgREST.connect(database) as api:
                yield App(database, api, owner, admin, member, jobs)
        finally:
            await owner.close()


# Every admin RPC with valid arguments for the seeded app, in an order where each applies:
# (function, arguments, the audit row it writes as (action, target) or None for a read).
def _calls(app: App) -> list[tuple[str, dict[str, Any]]]:
    jobs = app.jobs
    return [
        ("job_schedule_create", {"name": "hourly", "cron": "0 * * * *", "task_type": "echo"}),
        ("job_schedule_update", {"name": "nightly", "priority": 5}),
        ("job_schedule_retime", {"name": "nightly", "cron": "30 6 * * *"}),
        ("job_schedule_toggle", {"name": "nightly", "active": False}),
        ("job_schedules_list", {}),
        ("job_schedule_history", {"name": "nightly", "max_rows": 10}),
        ("job_schedules_history", {"max_rows": 10}),
        ("job_schedule_run_now", {"name": "nightly"}),
        ("job_queue_pause", {"queue": "mail", "reason": "outage"}),
        ("job_queue_resume", {"queue": "mail"}),
        ("job_queue_list", {"status": "failed"}),
        ("job_queue_retry", {"job_id": jobs["failed"]}),
        ("job_queue_cancel", {"job_id": jobs["running"]}),
        ("job_queue_run_now", {"job_id": jobs["pending"]}),
        ("job_queue_enqueue_manual", {"task_type": "echo", "payload": {"message": "hi"}}),
        ("job_schedule_delete", {"name": "nightly"}),
    ]


async def test_the_calls_cover_every_admin_rpc(app: App) -> None:
    """The SECURITY DEFINER functions authenticated may execute are exactly the ones tried
    in these tests, and the admin question itself."""
    executable = await app.owner.fetch(
        "SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace"
        " AND p.prosecdef AND has_function_privilege('authenticated', p.oid, 'EXECUTE')"
        " AND p.proname <> 'is_admin_user'"  # the app's own
    )
    assert {r["proname"] for r in executable} == {name for name, _ in _calls(app)} | {
        "job_queue_is_admin"
    }


async def test_the_app_check_decides_who_is_an_admin(app: App) -> None:
    api = app.api
    [row] = await api.rpc("authenticated", "job_queue_is_admin", jwt=app.as_admin())
    assert row[0] is True
    [row] = await api.rpc("authenticated", "job_queue_is_admin", jwt=app.as_member())
    assert row[0] is False
    stranger = supabase.claims("authenticated", sub=uuid.uuid4())  # not in profiles
    [row] = await api.rpc("authenticated", "job_queue_is_admin", jwt=stranger)
    assert row[0] is False
    [row] = await api.rpc("service_role", "job_queue_is_admin")
    assert row[0] is True
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await api.rpc("anon", "job_queue_is_admin")


async def test_an_admin_calls_every_admin_rpc_and_each_change_is_audited(app: App) -> None:
    api, jobs, actor = app.api, app.jobs, f"rpc:{app.admin}"
    results = {}
    for function, args in _calls(app):
        results[function] = await api.rpc(
            "authenticated", function, jwt=app.as_admin(), commit=True, **args
        )

    assert [r["name"] for r in results["job_schedules_list"]] == ["hourly", "nightly"]
    assert [r["job_key"] for r in results["job_schedule_history"]] == ["echo"]
    assert [r["schedule_name"] for r in results["job_schedules_history"]] == ["nightly"]
    assert [r["id"] for r in results["job_queue_list"]] == [jobs["failed"]]
    [retried] = results["job_queue_retry"]
    assert tuple(retried) == (jobs["failed"], "failed", 3, 4)
    [cancelled] = results["job_queue_cancel"]
    assert tuple(cancelled) == (jobs["running"], "running", 1)
    [[ran_id, ran_schedule]] = results["job_schedule_run_now"]
    [[manual_id]] = results["job_queue_enqueue_manual"]
    assert ran_schedule == "nightly"

    assert (await app.job(jobs["failed"]))["status"] == "pending"
    assert (await app.job(jobs["running"]))["status"] == "cancelled"
    assert (await app.job(jobs["pending"]))["run_at"] <= await app.owner.fetchval("SELECT now()")
    closed = await app.owner.fetchrow(
        "SELECT status, reason, error, worker_id FROM job_runs WHERE job_id = $1", jobs["running"]
    )
    assert tuple(closed) == ("cancelled", "cancelled_by_admin", f"cancelled by {actor}", "w1")
    for job_id in (ran_id, manual_id):
        job = await app.job(job_id)
        assert (job["run_type"], job["requested_by"]) == ("manual", app.admin)
    schedules = await app.owner.fetch("SELECT name FROM job_schedules ORDER BY name")
    assert [r["name"] for r in schedules] == ["hourly"]
    assert await app.owner.fetchval("SELECT count(*) FROM job_queue_pauses") == 0

    assert await app.audit() == [
        (actor, "schedule_create", "schedule:hourly"),
        (actor, "schedule_update", "schedule:nightly"),
        (actor, "schedule_retime", "schedule:nightly"),
        (actor, "schedule_pause", "schedule:nightly"),
        (actor, "schedule_run_now", f"job:{ran_id}"),
        (actor, "queue_pause", "queue:mail"),
        (actor, "queue_resume", "queue:mail"),
        (actor, "job_retry", f"job:{jobs['failed']}"),
        (actor, "job_cancel", f"job:{jobs['running']}"),
        (actor, "job_run_now", f"job:{jobs['pending']}"),
        (actor, "job_enqueue", f"job:{manual_id}"),
        (actor, "schedule_delete", "schedule:nightly"),
    ]
    retry_audit = await app.owner.fetchrow(
        "SELECT detail FROM job_admin_audit WHERE action = 'job_retry'"
    )
    assert retry_audit["detail"] == {
        "id": jobs["failed"],
        "previous_status": "failed",
        "attempts": 3,
        "max_attempts": 4,
    }


async def _state(app: App) -> dict[str, Any]:
    """Everything an admin function could change."""
    fetch = app.owner.fetch
    return {
        "jobs": [
            tuple(r) for r in await fetch("SELECT id, status, run_at FROM job_queue ORDER BY id")
        ],
        "runs": await app.owner.fetchval("SELECT count(*) FROM job_runs"),
        "schedules": [
            tuple(r) for r in await fetch("SELECT name, revision FROM job_schedules ORDER BY name")
        ],
        "pauses": await app.owner.fetchval("SELECT count(*) FROM job_queue_pauses"),
        "audit": await app.audit(),
    }


async def test_a_signed_in_user_who_is_not_an_admin_and_anon_are_refused_everything(
    app: App,
) -> None:
    before = await _state(app)
    for function, args in _calls(app):
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
            await app.api.rpc("authenticated", function, jwt=app.as_member(), commit=True, **args)
        assert str(refused.value) == (
            f"permission denied for function {function}: public.is_admin_user() is not true"
            " for this user"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
            await app.api.rpc("anon", function, commit=True, **args)
        assert str(refused.value) == f"permission denied for function {function}"
    assert await _state(app) == before


async def test_admins_read_job_queue_everyone_signed_in_reads_job_runs(app: App) -> None:
    api = app.api
    everything = sorted(app.jobs.values())
    admin_sees = await api.fetch(
        "authenticated", "SELECT id FROM job_queue ORDER BY id", jwt=app.as_admin()
    )
    assert [r["id"] for r in admin_sees] == everything
    assert await api.fetch("authenticated", "SELECT id FROM job_queue", jwt=app.as_member()) == []
    assert await api.refused("anon", "SELECT id FROM job_queue")
    # The health app's own rule, kept: every signed-in user reads the audit trail.
    for jwt in (app.as_admin(), app.as_member()):
        runs = await api.fetch("authenticated", "SELECT job_key FROM job_runs", jwt=jwt)
        assert [r["job_key"] for r in runs] == ["echo"]
    assert await api.refused("anon", "SELECT job_key FROM job_runs")
    # Reading is all: an admin changes jobs through the functions only.
    for statement in (
        "UPDATE job_queue SET priority = 1",
        "DELETE FROM job_queue",
        "INSERT INTO job_queue (task_type) VALUES ('x')",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await api.fetch("authenticated", statement, jwt=app.as_admin())


async def test_a_manual_run_records_the_signed_in_user(app: App) -> None:
    api, owner = app.api, app.owner
    [[job_id]] = await api.rpc(
        "authenticated",
        "job_queue_enqueue_manual",
        jwt=app.as_admin(),
        commit=True,
        task_type="sync_wearables",
        dedupe_key="manual-sync",
    )
    job = await app.job(job_id)
    assert (job["task_type"], job["run_type"], job["requested_by"]) == (
        "sync_wearables",
        "manual",
        app.admin,
    )
    # The same dedupe key while that job is live: its id, no second job, no audit row.
    [[again]] = await api.rpc(
        "authenticated",
        "job_queue_enqueue_manual",
        jwt=app.as_admin(),
        commit=True,
        task_type="sync_wearables",
        dedupe_key="manual-sync",
    )
    assert again == job_id
    assert await app.audit() == [(f"rpc:{app.admin}", "job_enqueue", f"job:{job_id}")]
    # Only a privileged caller may start a run for someone else.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="for another user"):
        await api.rpc(
            "authenticated",
            "job_queue_enqueue_manual",
            jwt=app.as_admin(),
            task_type="echo",
            requested_by=app.member,
        )
    [[for_member]] = await api.rpc(
        "service_role",
        "job_queue_enqueue_manual",
        commit=True,
        task_type="echo",
        requested_by=app.member,
    )
    [[by_service]] = await api.rpc(
        "service_role", "job_queue_enqueue_manual", commit=True, task_type="echo"
    )
    assert (await app.job(for_member))["requested_by"] == app.member
    assert (await app.job(by_service))["requested_by"] is None
    assert (await app.audit())[-1] == ("service_role", "job_enqueue", f"job:{by_service}")
    # job_queue_enqueue is unchanged: a queue job, whoever's request it runs in.
    [[plain]] = await api.rpc("service_role", "job_queue_enqueue", commit=True, task_type="echo")
    assert ((await app.job(plain))["run_type"], (await app.job(plain))["requested_by"]) == (
        "queue",
        None,
    )
    # The dashboard's runs list names who started a manual run (the enqueue's audit row).
    await owner.execute(
        "INSERT INTO job_runs (job_id, job_key, queue, run_type, status, attempt, user_id,"
        " started_at, finished_at, duration_ms)"
        " VALUES ($1, 'sync_wearables', 'default', 'manual', 'succeeded', 1, $2, now(), now(), 1)",
        job_id,
        app.admin,
    )
    db = await store.connect(app.database.postgres_dsn, max_size=1)
    try:
        async with AdminStore(db.pool).reads() as reads:
            [run] = await reads.runs(status=None, run_type="manual", before=None, limit=10)
    finally:
        await db.close()
    assert (run["job_id"], run["user_id"], run["actor"]) == (job_id, app.admin, f"rpc:{app.admin}")


async def test_with_no_admin_check_no_signed_in_user_is_an_admin(app: App) -> None:
    api = app.api
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await api.rpc(
            "authenticated", "job_queue_set_admin_check", jwt=app.as_admin(), check_function=None
        )
    [[unset]] = await api.rpc(
        "service_role", "job_queue_set_admin_check", commit=True, check_function=None
    )
    assert unset is None
    assert await app.audit() == [("service_role", "admin_check_unset", "admin_check")]
    [[is_admin]] = await api.rpc("authenticated", "job_queue_is_admin", jwt=app.as_admin())
    assert is_admin is False
    assert await api.fetch("authenticated", "SELECT id FROM job_queue", jwt=app.as_admin()) == []
    with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
        await api.rpc("authenticated", "job_queue_list", jwt=app.as_admin())
    assert str(refused.value) == (
        "permission denied for function job_queue_list: this app names no admin check"
        " (job_queue_set_admin_check), so no signed-in user is an admin"
    )
    # service_role stays an admin.
    assert len(await api.rpc("service_role", "job_queue_list")) == len(app.jobs)


async def test_a_dropped_or_replaced_check_lets_nobody_in(app: App) -> None:
    owner, api = app.owner, app.api
    await owner.execute("DROP FUNCTION is_admin_user()")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no longer exists"):
        await api.rpc("authenticated", "job_queue_list", jwt=app.as_admin())
    # Re-created as it was: the stored name and owner match again.
    await owner.execute(CHECK_SQL)
    assert len(await api.rpc("authenticated", "job_queue_list", jwt=app.as_admin())) == len(
        app.jobs
    )
    # Re-defined so that it no longer qualifies (its search_path no longer fixed).
    await owner.execute("ALTER FUNCTION is_admin_user() RESET search_path")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no longer qualifies"):
        await api.rpc("authenticated", "job_queue_list", jwt=app.as_admin())


@pytest.mark.parametrize(
    ("definition", "problem"),
    [
        (
            "create function app_check() returns boolean language sql stable as $$ select true $$",
            "it must fix its search_path (alter function ... set search_path = ...)",
        ),
        (
            "create function app_check() returns integer language sql stable security definer"
            " set search_path = public as $$ select 1 $$",
            "it must be a function returning boolean",
        ),
        (
            "create function app_check(who uuid) returns boolean language sql stable"
            " security definer set search_path = public as $$ select true $$",
            "it must take no arguments",
        ),
    ],
    ids=["search-path", "not-boolean", "arguments"],
)
async def test_an_unfit_admin_check_is_refused(app: App, definition: str, problem: str) -> None:
    await app.owner.execute(definition)
    signature = await app.owner.fetchval(
        "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.proname = 'app_check'"
    )
    with pytest.raises(asyncpg.InvalidParameterValueError) as refused:
        await app.api.rpc("service_role", "job_queue_set_admin_check", check_function=signature)
    assert str(refused.value) == f"cannot use public.{signature} as the admin check: {problem}"


async def test_an_invoker_check_of_another_role_never_runs_as_the_owner(app: App) -> None:
    """A SECURITY INVOKER check runs with the rights of the job tables' owner: one that
    another role owns (here supabase_admin, standing for any role that may create functions)
    would run that role's code with those rights, so it is refused."""
    admin = await asyncpg.connect(app.database.admin_dsn)
    try:
        await admin.execute(
            "create function public.foreign_check() returns boolean language sql stable"
            " set search_path = public as $$ select true $$"
        )
    finally:
        await admin.close()
    with pytest.raises(
        asyncpg.InvalidParameterValueError, match="must be SECURITY DEFINER or belong to postgres"
    ):
        await app.api.rpc(
            "service_role", "job_queue_set_admin_check", check_function="public.foreign_check()"
        )


async def test_refusals_are_one_line_and_echo_a_short_prefix(app: App) -> None:
    api, admin = app.api, app.as_admin()
    hostile = "evil\nname " + "x" * 5000
    cases = [
        ("job_queue_list", {"status": hostile}, "invalid status 'evil?name xxx"),
        ("job_queue_list", {"queue": hostile}, "invalid queue name 'evil?name xxx"),
        ("job_queue_list", {"task_type": hostile}, "invalid task type 'evil?name xxx"),
        ("job_queue_list", {"max_rows": 0}, "max_rows must be between 1 and 1000, not 0"),
        ("job_schedules_history", {"max_rows": 5000}, "max_rows must be between 1 and 1000"),
        ("job_queue_pause", {"queue": hostile}, "invalid queue name 'evil?name xxx"),
        ("job_queue_enqueue_manual", {"task_type": hostile}, "invalid task type 'evil?name"),
        (
            "job_queue_enqueue_manual",
            {"task_type": "echo", "payload": [1]},
            "payload must be a JSON object",
        ),
        (
            "job_queue_enqueue_manual",
            {"task_type": "echo", "dedupe_key": hostile},
            "dedupe_key 'evil?name xxx",
        ),
        ("job_schedule_toggle", {"name": hostile}, "no schedule named 'evil?name xxx"),
        ("job_schedule_retime", {"name": hostile, "cron": "@daily"}, "no schedule named 'evil"),
        ("job_schedule_update", {"name": hostile, "priority": 1}, "no schedule named 'evil"),
        ("job_schedule_run_now", {"name": hostile}, "no schedule named 'evil?name xxx"),
    ]
    for function, args, start in cases:
        with pytest.raises(asyncpg.PostgresError) as refused:
            await api.rpc("authenticated", function, jwt=admin, **args)
        message = str(refused.value)
        assert refused.value.sqlstate in ("22023", "P0002"), (function, message)
        assert message.startswith(start), (function, message)
        assert "\n" not in message and len(message) < 120, (function, message)
    assert await app.audit() == []


async def test_an_apps_own_definer_wrapper_gets_its_callers_answer(app: App) -> None:
    """The seed's create_cron_job(), rewritten onto job_schedule_create: SECURITY DEFINER,
    owned by postgres, granted to authenticated. The request's role decides, not the
    wrapper's owner: the admin gets through (audited as the admin), the member does not."""
    await app.owner.execute(
        """
        create function create_cron_job(job_name text, job_schedule text, task_type text)
          returns text language sql security definer set search_path = public
        as $$ select (job_schedule_create(job_name, job_schedule, task_type)).name $$;
        """
    )
    [[created]] = await app.api.rpc(
        "authenticated",
        "create_cron_job",
        jwt=app.as_admin(),
        commit=True,
        job_name="from_wrapper",
        job_schedule="0 * * * *",
        task_type="echo",
    )
    assert created == "from_wrapper"
    assert await app.audit() == [(f"rpc:{app.admin}", "schedule_create", "schedule:from_wrapper")]
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="not true for this user"):
        await app.api.rpc(
            "authenticated",
            "create_cron_job",
            jwt=app.as_member(),
            job_name="sneaky",
            job_schedule="0 * * * *",
            task_type="echo",
        )


# -- plain PostgreSQL: no Supabase, no auth schema ------------------------------------------

# An admin check that reads the claims itself, where there is no auth.uid().
PLAIN_CHECK_SQL = """
create table app_admins (id uuid primary key);
create function app_is_admin() returns boolean
  language sql
  stable
  security definer
  set search_path = pg_catalog
as $$
  select exists (
    select 1 from public.app_admins a
     where a.id::text = current_setting('request.jwt.claims', true)::jsonb ->> 'sub')
$$;
"""


async def test_on_plain_postgres_the_owner_does_everything(db: store.Store) -> None:
    owner = await db.pool.acquire()
    try:
        assert await owner.fetchval("SELECT to_regnamespace('auth')") is None
        who = await owner.fetchval("SELECT current_user")
        failed = await factories.make_job(db, status="failed", attempts=1, max_attempts=1)
        assert await owner.fetchval("SELECT job_queue_is_admin()") is True
        assert [r["id"] for r in await owner.fetch("SELECT * FROM job_queue_list()")] == [failed]
        assert await owner.fetchval("SELECT id FROM job_queue_retry($1)", failed) == failed
        manual = await owner.fetchval("SELECT job_queue_enqueue_manual('echo')")
        await owner.execute("SELECT job_schedule_create('nightly', '@daily', 'echo')")
        await owner.execute("SELECT job_schedule_toggle('nightly', false)")
        assert await owner.fetchval("SELECT job_queue_pause('mail')") is True
        # The control plane names its own actor.
        async with owner.transaction():
            await owner.execute(
                "SELECT set_config('job_queue.actor', 'cli:alice', true),"
                " set_config('job_queue.remote_addr', '10.0.0.7', true)"
            )
            assert await owner.fetchval("SELECT job_queue_resume('mail')") is True
        rows = await owner.fetch(
            "SELECT actor, action, target, remote_addr FROM job_admin_audit ORDER BY id"
        )
    finally:
        await db.pool.release(owner)
    assert [tuple(r) for r in rows] == [
        (who, "job_retry", f"job:{failed}", None),
        (who, "job_enqueue", f"job:{manual}", None),
        (who, "schedule_create", "schedule:nightly", None),
        (who, "schedule_pause", "schedule:nightly", None),
        (who, "queue_pause", "queue:mail", None),
        ("cli:alice", "queue_resume", "queue:mail", "10.0.0.7"),
    ]


async def test_on_plain_postgres_a_check_reading_the_claims_admits_authenticated(
    server_dsn: str, empty_dsn: str
) -> None:
    """Supabase's roles made by hand, no auth schema: the check reads request.jwt.claims
    itself. A login that is a member of authenticated counts as authenticated, and it may
    neither name an actor nor skip the audit row."""
    await roles.ensure_roles(server_dsn)
    db = await store.connect(empty_dsn)
    admin = uuid.uuid4()
    member_login = await roles.create_login(server_dsn, "appuser", member_of="authenticated")
    try:
        await migrations.migrate(db)
        await db.pool.execute(PLAIN_CHECK_SQL)
        await db.pool.execute("INSERT INTO app_admins (id) VALUES ($1)", admin)
        await db.pool.execute("SELECT job_queue_set_admin_check('app_is_admin()')")
        owner = await db.pool.fetchval("SELECT current_user")
        job = await factories.make_job(db)
        conn = await asyncpg.connect(empty_dsn)
        try:
            for sub, sees in ((admin, [job]), (uuid.uuid4(), [])):
                async with conn.transaction():
                    await conn.execute("SET LOCAL ROLE authenticated")
                    await conn.execute(
                        "SELECT set_config('request.jwt.claims', $1, true)",
                        f'{{"sub": "{sub}", "role": "authenticated"}}',
                    )
                    assert [r["id"] for r in await conn.fetch("SELECT id FROM job_queue")] == sees
            async with conn.transaction():
                await conn.execute("SET LOCAL ROLE authenticated")
                await conn.execute(
                    "SELECT set_config('request.jwt.claims', $1, true),"
                    " set_config('job_queue.actor', 'someone else', true),"
                    " set_config('job_queue.audited_by_caller', 'on', true)",
                    f'{{"sub": "{admin}"}}',
                )
                await conn.execute("SELECT job_queue_pause('mail')")
        finally:
            await conn.close()
        member = await asyncpg.connect(roles.as_user(empty_dsn, member_login))
        try:
            assert await member.fetchval("SELECT job_queue_is_admin()") is False
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="not true for this user"):
                await member.execute("SELECT job_queue_pause('other')")
        finally:
            await member.close()
        audit = await db.pool.fetch("SELECT actor, action FROM job_admin_audit ORDER BY id")
        assert [tuple(r) for r in audit] == [
            (owner, "admin_check_set"),
            (f"rpc:{admin}", "queue_pause"),
        ]
    finally:
        await db.close()
        await roles.drop_role(server_dsn, empty_dsn, member_login)
