"""Access control with real roles: who may read, write and call what (README.md, "Access
control"), RLS, the worker's least-privilege role end to end, and SECURITY DEFINER
functions that ignore whatever the caller planted in its schemas.

Every privilege below is an actual attempt under SET ROLE in a rolled-back transaction, not
a has_*_privilege lookup: an attempt also goes through RLS, triggers and definer rights.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.support import roles
from tests.support.proc import last_json, run_cli
from worker import config, maintenance, migrations, presence, scheduler, service, store
from worker.clock import SystemClock

API_ROLES = ("anon", "authenticated", "service_role")
WORKER = "worker"  # the matrix's name for a login role that is a member of job_worker

# table -> role -> the commands it may run (S select, I insert, U update, D delete)
TABLE_MATRIX: dict[str, dict[str, str]] = {
    # authenticated reads job_queue through RLS: rows only when the app's admin check says
    # so (schema/0009_app_admins.sql; with no check named here, none).
    "job_queue": {"anon": "", "authenticated": "S", "service_role": "SIUD", WORKER: "SIUD"},
    "job_runs": {"anon": "", "authenticated": "S", "service_role": "SIUD", WORKER: "SID"},
    "job_schedules": {"anon": "", "authenticated": "", "service_role": "SIUD", WORKER: "SIUD"},
    "job_queue_pauses": {"anon": "", "authenticated": "", "service_role": "SIUD", WORKER: "S"},
    "worker_migrations": {"anon": "", "authenticated": "", "service_role": "S", WORKER: "S"},
    # schema/0005_dashboard.sql: the dashboard's audit trail; the worker's role writes none.
    "job_admin_audit": {"anon": "", "authenticated": "", "service_role": "SIUD", WORKER: ""},
    # schema/0011_workers.sql: a worker announces itself, beats and leaves.
    "job_workers": {"anon": "", "authenticated": "", "service_role": "SIUD", WORKER: "SIUD"},
    # schema/0009_app_admins.sql: the app's admin check, set through its function only.
    "job_admin_check": {"anon": "", "authenticated": "", "service_role": "S", WORKER: ""},
    # schema/0014_workflows.sql: dependency edges; the worker enqueues and prunes them.
    "job_dependencies": {"anon": "", "authenticated": "", "service_role": "SIUD", WORKER: "SID"},
}

TABLE_STATEMENTS: dict[str, dict[str, str]] = {
    "job_queue": {
        "S": "SELECT id FROM job_queue LIMIT 1",
        "I": "INSERT INTO job_queue (task_type) VALUES ('matrix')",
        "U": "UPDATE job_queue SET priority = priority",
        "D": "DELETE FROM job_queue",
    },
    "job_runs": {
        "S": "SELECT id FROM job_runs LIMIT 1",
        "I": "INSERT INTO job_runs (job_id, job_key, queue, run_type, status, attempt,"
        " started_at, finished_at, duration_ms)"
        " VALUES (1, 'matrix', 'default', 'queue', 'succeeded', 1, now(), now(), 0)",
        "U": "UPDATE job_runs SET notes = notes",
        "D": "DELETE FROM job_runs",
    },
    "job_schedules": {
        "S": "SELECT name FROM job_schedules LIMIT 1",
        "I": "INSERT INTO job_schedules (name, cron, task_type, source)"
        " VALUES ('matrix', '* * * * *', 'matrix', 'file')",
        "U": "UPDATE job_schedules SET next_tick_at = next_tick_at",
        "D": "DELETE FROM job_schedules",
    },
    "job_queue_pauses": {
        "S": "SELECT queue FROM job_queue_pauses LIMIT 1",
        "I": "INSERT INTO job_queue_pauses (queue) VALUES ('matrix')",
        "U": "UPDATE job_queue_pauses SET reason = reason",
        "D": "DELETE FROM job_queue_pauses",
    },
    "worker_migrations": {
        "S": "SELECT version FROM worker_migrations LIMIT 1",
        "I": "INSERT INTO worker_migrations (version, name, checksum) VALUES (9999, 'm', 'x')",
        "U": "UPDATE worker_migrations SET name = name",
        "D": "DELETE FROM worker_migrations",
    },
    "job_admin_audit": {
        "S": "SELECT id FROM job_admin_audit LIMIT 1",
        "I": "INSERT INTO job_admin_audit (actor, action, target) VALUES ('m', 'm', 'm')",
        "U": "UPDATE job_admin_audit SET detail = detail",
        "D": "DELETE FROM job_admin_audit",
    },
    "job_workers": {
        "S": "SELECT id FROM job_workers LIMIT 1",
        "I": "INSERT INTO job_workers (id, host, pid, version, heartbeat_s, queues,"
        " concurrency) VALUES ('matrix', 'h', 1, 'v', 5, '{default}', 1)",
        "U": "UPDATE job_workers SET in_flight = in_flight",
        "D": "DELETE FROM job_workers",
    },
    "job_dependencies": {
        "S": "SELECT child_id FROM job_dependencies LIMIT 1",
        "I": "INSERT INTO job_dependencies (child_id, parent_id) VALUES (-1, -2)",
        "U": "UPDATE job_dependencies SET parent_id = parent_id",
        "D": "DELETE FROM job_dependencies",
    },
    "job_admin_check": {
        "S": "SELECT only_row FROM job_admin_check LIMIT 1",
        "I": "INSERT INTO job_admin_check (schema_name, function_name, owner_name, set_by)"
        " VALUES ('public', 'f', 'postgres', 'm')",
        "U": "UPDATE job_admin_check SET set_by = set_by",
        "D": "DELETE FROM job_admin_check",
    },
}

# Every function the core migrations define, called with valid arguments.
FUNCTION_CALLS = {
    "job_queue_enqueue": "SELECT job_queue_enqueue('matrix')",
    "job_queue_enqueue_group": "SELECT job_queue_enqueue_group("
    """'[{"task_type": "matrix"}]', '{"task_type": "matrix"}')""",
    "job_queue_release": "SELECT job_queue_release('{1}')",
    "job_schedule_create": "SELECT job_schedule_create('matrix', '* * * * *', 'matrix')",
    "job_schedule_update": "SELECT job_schedule_update('seeded', cron => '*/5 * * * *')",
    "job_schedule_retime": "SELECT job_schedule_retime('seeded', '*/10 * * * *')",
    "job_schedule_toggle": "SELECT job_schedule_toggle('seeded')",
    "job_schedule_delete": "SELECT job_schedule_delete('seeded')",
    "job_schedules_list": "SELECT * FROM job_schedules_list()",
    "job_schedule_history": "SELECT * FROM job_schedule_history('seeded')",
    "job_queue_pause": "SELECT job_queue_pause('matrix')",
    "job_queue_resume": "SELECT job_queue_resume('seeded')",
    "job_schedule_cron_value": "SELECT job_schedule_cron_value('5', 1)",
    "job_schedule_cron_error": "SELECT job_schedule_cron_error('* * * * *')",
    "job_schedule_timezone_error": "SELECT job_schedule_timezone_error('UTC')",
    "job_schedule_problem": "SELECT job_schedule_problem('n', '* * * * *', 'UTC', 't',"
    " '{}'::jsonb, 'default', 0, NULL, 'latest')",
    "job_queue_notify": "SELECT job_queue_notify()",
    "job_schedules_guard": "SELECT job_schedules_guard()",
    "job_queue_grant_worker": "SELECT job_queue_grant_worker('anon')",
    # schema/0009_app_admins.sql
    "job_schedules_history": "SELECT * FROM job_schedules_history()",
    "job_schedule_run_now": "SELECT * FROM job_schedule_run_now('seeded')",
    "job_queue_list": "SELECT * FROM job_queue_list()",
    "job_queue_retry": "SELECT * FROM job_queue_retry(1)",
    "job_queue_cancel": "SELECT * FROM job_queue_cancel(1)",
    "job_queue_run_now": "SELECT * FROM job_queue_run_now(1)",
    "job_queue_enqueue_manual": "SELECT job_queue_enqueue_manual('matrix')",
    "job_queue_is_admin": "SELECT job_queue_is_admin()",
    "job_queue_set_admin_check": "SELECT job_queue_set_admin_check(NULL)",
    "job_queue_shown": "SELECT job_queue_shown('x')",
    "job_queue_caller_sub": "SELECT job_queue_caller_sub()",
    "job_queue_caller_role": "SELECT job_queue_caller_role()",
    "job_queue_caller_kind": "SELECT job_queue_caller_kind()",
    "job_queue_actor": "SELECT job_queue_actor()",
    "job_queue_audit": "SELECT job_queue_audit('matrix', 'matrix', NULL)",
    "job_queue_admin_check_problem": "SELECT job_queue_admin_check_problem(0)",
    "job_queue_admin_check_function": "SELECT job_queue_admin_check_function()",
    "job_queue_admin_refusal": "SELECT job_queue_admin_refusal()",
    "job_queue_require_admin": "SELECT job_queue_require_admin('matrix')",
    "job_queue_requester": "SELECT job_queue_requester('matrix', NULL)",
}
# The admin RPCs: authenticated holds EXECUTE on them too, but is refused from inside (42501)
# unless the app's admin check says it is an admin, and no check is named here.
_ADMIN = {"service_role"}
_EVERYONE = {*API_ROLES, WORKER}
FUNCTION_MATRIX: dict[str, set[str]] = {
    "job_queue_enqueue": _ADMIN,
    # schema/0014_workflows.sql: a handler fans out (the worker's role), and the worker
    # releases the children of the jobs it finished.
    "job_queue_enqueue_group": {"service_role", WORKER},
    "job_queue_release": {"service_role", WORKER},
    "job_schedule_create": _ADMIN,
    "job_schedule_update": _ADMIN,
    "job_schedule_retime": _ADMIN,
    "job_schedule_toggle": _ADMIN,
    "job_schedule_delete": _ADMIN,
    "job_schedules_list": _ADMIN,
    "job_schedule_history": _ADMIN,
    "job_queue_pause": _ADMIN,
    "job_queue_resume": _ADMIN,
    # The validators the schedules trigger runs as whoever writes: pure, open to all.
    "job_schedule_cron_value": _EVERYONE,
    "job_schedule_cron_error": _EVERYONE,
    "job_schedule_timezone_error": _EVERYONE,
    "job_schedule_problem": _EVERYONE,
    # Trigger functions, and the grant helper that only the tables' owner may run.
    "job_queue_notify": set(),
    "job_schedules_guard": set(),
    "job_queue_grant_worker": set(),
    # schema/0009_app_admins.sql: the new admin RPCs; the admin question itself, which any
    # signed-in user may ask (false here); naming the check; the definers' helpers.
    "job_schedules_history": _ADMIN,
    "job_schedule_run_now": _ADMIN,
    "job_queue_list": _ADMIN,
    "job_queue_retry": _ADMIN,
    "job_queue_cancel": _ADMIN,
    "job_queue_run_now": _ADMIN,
    "job_queue_enqueue_manual": _ADMIN,
    "job_queue_is_admin": {"authenticated", "service_role"},
    "job_queue_set_admin_check": _ADMIN,
    "job_queue_shown": set(),
    "job_queue_caller_sub": set(),
    "job_queue_caller_role": set(),
    "job_queue_caller_kind": set(),
    "job_queue_actor": set(),
    "job_queue_audit": set(),
    "job_queue_admin_check_problem": set(),
    "job_queue_admin_check_function": set(),
    "job_queue_admin_refusal": set(),
    "job_queue_require_admin": set(),
    "job_queue_requester": set(),
}

# SECURITY DEFINER functions authenticated may execute: the admin RPCs, each checking the
# caller first (schema/0009_app_admins.sql), and the check itself. Never anon, never PUBLIC.
END_USER_DEFINERS = {
    "job_schedule_create",
    "job_schedule_update",
    "job_schedule_retime",
    "job_schedule_toggle",
    "job_schedule_delete",
    "job_schedules_list",
    "job_schedule_history",
    "job_schedules_history",
    "job_schedule_run_now",
    "job_queue_pause",
    "job_queue_resume",
    "job_queue_list",
    "job_queue_retry",
    "job_queue_cancel",
    "job_queue_run_now",
    "job_queue_enqueue_manual",
    "job_queue_is_admin",
}

PINNED = ["search_path=pg_catalog, pg_temp"]


class _Rollback(Exception):
    pass


@pytest.fixture
async def admin_dsn(server_dsn: str) -> str:
    await roles.ensure_roles(server_dsn)
    return server_dsn


@contextlib.asynccontextmanager
async def login(admin_dsn: str, database_dsn: str, prefix: str, group: str) -> AsyncIterator[str]:
    """A new login role, member of `group`; dropped afterwards."""
    name = await roles.create_login(admin_dsn, prefix, member_of=group)
    try:
        yield name
    finally:
        await roles.drop_role(admin_dsn, database_dsn, name)


async def migrate(dsn: str, *, reference: bool = False, supabase_defaults: bool = False) -> None:
    db = await store.connect(dsn)
    try:
        if supabase_defaults:
            # What a Supabase project has: every new table, sequence and function in public
            # is granted to the API roles unless a migration revokes it.
            for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
                await db.pool.execute(
                    f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON {kind}"
                    " TO anon, authenticated, service_role"
                )
            await db.pool.execute(
                "GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role"
            )
        await migrations.migrate(db, "reference" if reference else "core")
    finally:
        await db.close()


async def seed(conn: asyncpg.Connection) -> None:
    """One row in each table, as the owner."""
    await conn.execute("INSERT INTO job_queue (task_type) VALUES ('seeded')")
    await conn.execute(
        "INSERT INTO job_runs (job_id, job_key, queue, run_type, status, attempt, started_at,"
        " finished_at, duration_ms) VALUES (1, 'seeded', 'default', 'queue', 'succeeded', 1,"
        " now(), now(), 0)"
    )
    await conn.execute("SELECT job_schedule_create('seeded', '@daily', 'seeded')")
    await conn.execute("INSERT INTO job_queue_pauses (queue) VALUES ('seeded')")
    if await conn.fetchval("SELECT to_regclass('job_admin_audit') IS NOT NULL"):
        await conn.execute(
            "INSERT INTO job_admin_audit (actor, action, target) VALUES ('a', 'b', 'c')"
        )


async def attempt(conn: asyncpg.Connection, role: str, sql: str) -> bool:
    """Whether `role` may run `sql` (rolled back either way). Only 42501 means "may not":
    an RLS refusal of a new row is 42501 too, and a trigger function called directly fails
    with another error after its EXECUTE check passed."""
    try:
        async with conn.transaction():
            await conn.execute(f'SET LOCAL ROLE "{role}"')
            try:
                await conn.execute(sql)
            except asyncpg.InsufficientPrivilegeError:
                raise
            except asyncpg.PostgresError:
                pass
            raise _Rollback
    except asyncpg.InsufficientPrivilegeError:
        return False
    except _Rollback:
        return True


async def visible_rows(conn: asyncpg.Connection, role: str, table: str) -> int | None:
    """Rows `role` sees in `table`; None: it may not read it at all."""
    try:
        async with conn.transaction():
            await conn.execute(f'SET LOCAL ROLE "{role}"')
            count = await conn.fetchval(f"SELECT count(*) FROM {table}")
            raise _Rollback
    except asyncpg.InsufficientPrivilegeError:
        return None
    except _Rollback:
        return int(count)


async def allowed(conn: asyncpg.Connection, role: str, table: str) -> str:
    """The commands (S, I, U, D) `role` may run on `table`."""
    ops = [op for op, sql in TABLE_STATEMENTS[table].items() if await attempt(conn, role, sql)]
    return "".join(ops)


def _roles(worker_login: str) -> dict[str, str]:
    return {**{r: r for r in API_ROLES}, WORKER: worker_login}


# -- the matrix ---------------------------------------------------------------------------


@pytest.mark.parametrize("supabase_defaults", [False, True], ids=["plain", "supabase-defaults"])
async def test_table_and_function_matrix(
    admin_dsn: str, empty_dsn: str, supabase_defaults: bool
) -> None:
    await migrate(empty_dsn, supabase_defaults=supabase_defaults)
    conn = await asyncpg.connect(empty_dsn)
    async with login(admin_dsn, empty_dsn, "jw", roles.WORKER_ROLE) as worker_login:
        try:
            await seed(conn)
            who = _roles(worker_login)
            tables = [t for t in TABLE_MATRIX if await conn.fetchval("SELECT to_regclass($1)", t)]
            assert set(TABLE_MATRIX) - set(tables) <= {"job_admin_audit"}
            actual_tables = {
                table: {name: await allowed(conn, role, table) for name, role in who.items()}
                for table in tables
            }
            assert actual_tables == {t: TABLE_MATRIX[t] for t in tables}

            defined = await conn.fetch(
                "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
            )
            unknown = {r["proname"] for r in defined} - set(FUNCTION_CALLS)
            assert not unknown, f"functions missing from the access matrix: {unknown}"
            actual_functions = {
                fn: {name for name, role in who.items() if await attempt(conn, role, sql)}
                for fn, sql in FUNCTION_CALLS.items()
            }
            assert actual_functions == FUNCTION_MATRIX

            # The identity sequences: nothing for the API roles but service_role.
            for role in ("anon", "authenticated"):
                for table in ("job_queue", "job_runs"):
                    nextval = f"SELECT nextval(pg_get_serial_sequence('{table}', 'id'))"
                    assert not await attempt(conn, role, nextval), (role, table)
        finally:
            await conn.close()


async def test_rls_decides_which_rows_each_role_sees(admin_dsn: str, empty_dsn: str) -> None:
    await migrate(empty_dsn)
    conn = await asyncpg.connect(empty_dsn)
    async with login(admin_dsn, empty_dsn, "jw", roles.WORKER_ROLE) as worker_login:
        try:
            await seed(conn)
            seen = {
                (role, table): await visible_rows(conn, role, table)
                for role in (*API_ROLES, worker_login)
                for table in ("job_queue", "job_runs")
            }
            assert seen == {
                ("anon", "job_queue"): None,
                ("anon", "job_runs"): None,
                ("authenticated", "job_queue"): 0,  # no admin check named: no admin
                ("authenticated", "job_runs"): 1,  # the audit trail, through its policy
                ("service_role", "job_queue"): 1,  # BYPASSRLS, as on Supabase
                ("service_role", "job_runs"): 1,
                (worker_login, "job_queue"): 1,  # the job_worker policies
                (worker_login, "job_runs"): 1,
            }
            # RLS is in force: a grant alone shows nothing, and the worker's rows come from
            # its policy (the owner bypasses RLS, a member of job_worker does not).
            async with conn.transaction():
                await conn.execute("GRANT SELECT ON job_queue TO anon")
                await conn.execute('DROP POLICY "worker job_worker" ON job_queue')
                assert await visible_rows(conn, "anon", "job_queue") == 0
                assert await visible_rows(conn, worker_login, "job_queue") == 0
                assert await conn.fetchval("SELECT count(*) FROM job_queue") == 1
        finally:
            await conn.close()


async def test_worker_role_syncs_file_schedules_but_never_removes_an_admins(
    admin_dsn: str, empty_dsn: str
) -> None:
    await migrate(empty_dsn)
    conn = await asyncpg.connect(empty_dsn)
    async with login(admin_dsn, empty_dsn, "jw", roles.WORKER_ROLE) as worker_login:
        try:
            await seed(conn)  # 'seeded' is an admin schedule
            await conn.execute(f'SET ROLE "{worker_login}"')
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                await conn.execute(
                    "INSERT INTO job_schedules (name, cron, task_type, source)"
                    " VALUES ('mine', '@daily', 't', 'admin')"
                )
            assert await conn.execute("DELETE FROM job_schedules WHERE name = 'seeded'") == (
                "DELETE 0"
            )
            ticked = "UPDATE job_schedules SET next_tick_at = now() WHERE name = 'seeded'"
            assert await conn.execute(ticked) == "UPDATE 1"
            await conn.execute(
                "INSERT INTO job_schedules (name, cron, task_type, source)"
                " VALUES ('from_file', '@daily', 't', 'file')"
            )
            assert await conn.execute("DELETE FROM job_schedules") == "DELETE 1"
            await conn.execute("RESET ROLE")
            names = await conn.fetch("SELECT name FROM job_schedules")
            assert [r["name"] for r in names] == ["seeded"]
        finally:
            await conn.close()


# -- the worker's role, end to end -----------------------------------------------------------


async def test_worker_role_runs_the_worker_and_nothing_else(
    admin_dsn: str, empty_dsn: str, tmp_path: Path
) -> None:
    await migrate(empty_dsn)
    owner = await store.connect(empty_dsn)
    async with login(admin_dsn, empty_dsn, "jw", roles.WORKER_ROLE) as worker_login:
        try:
            member_dsn = roles.as_user(empty_dsn, worker_login)
            for task in ("test_ok", "test_ok", "test_fail_once", "test_permanent"):
                await owner.pool.execute("INSERT INTO job_queue (task_type) VALUES ($1)", task)
            await owner.pool.execute("CREATE TABLE app_private (secret text)")

            done = await asyncio.to_thread(
                run_cli,
                "--once",
                dsn=member_dsn,
                WORKER_HANDLER_MODULES="tests.support.handlers",
            )
            assert done.returncode == 1, done.stderr  # test_permanent failed for good
            summary = last_json(done.stdout)
            assert (summary["succeeded"], summary["retried"], summary["failed"]) == (3, 1, 1)
            runs = await owner.pool.fetchval("SELECT count(*) FROM job_runs")
            assert runs == 5

            migrate_run = await asyncio.to_thread(run_cli, "migrate", dsn=member_dsn)
            assert migrate_run.returncode == 3
            assert "cannot migrate as this database role: permission denied" in migrate_run.stderr
            assert "Traceback" not in migrate_run.stderr

            await _maintenance_as(member_dsn, owner, tmp_path)

            member = await asyncpg.connect(member_dsn)
            try:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await member.fetch("SELECT * FROM app_private")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await member.execute("SELECT job_queue_pause('default')")
            finally:
                await member.close()
        finally:
            await owner.close()


async def test_a_role_that_does_not_own_the_schema_cannot_migrate_even_with_create_rights(
    admin_dsn: str, empty_dsn: str
) -> None:
    """PostgreSQL 14 lets every role create in `public`; there a job_worker login got past
    the permission checks and `migrate` exited 0. The owner check refuses it on every
    version: granted CREATE on public here, the login is still refused and nothing changes."""
    await migrate(empty_dsn)
    owner = await store.connect(empty_dsn)
    async with login(admin_dsn, empty_dsn, "jwc", roles.WORKER_ROLE) as worker_login:
        try:
            await owner.pool.execute(f'GRANT CREATE ON SCHEMA public TO "{worker_login}"')
            before = await owner.pool.fetchval("SELECT count(*) FROM worker_migrations")
            run = await asyncio.to_thread(
                run_cli, "migrate", dsn=roles.as_user(empty_dsn, worker_login)
            )
            assert run.returncode == 3, run.stdout
            assert "cannot migrate as this database role: permission denied" in run.stderr
            assert "the schema belongs to postgres" in run.stderr
            assert "Traceback" not in run.stderr
            assert await owner.pool.fetchval("SELECT count(*) FROM worker_migrations") == before
        finally:
            await owner.close()


async def _maintenance_as(member_dsn: str, owner: store.Store, tmp_path: Path) -> None:
    """The scheduler (with the file sync), the rescuer and the pruner, as the member."""
    schedules = tmp_path / "schedules.toml"
    schedules.write_text('[schedules.every_minute]\ncron = "* * * * *"\ntask_type = "test_ok"\n')
    settings = config.load(
        database_url=member_dsn, schedules_file=schedules, handler_modules=[], worker_id="jw"
    )
    long_ago = datetime.now(UTC) - timedelta(days=400)
    await owner.pool.execute(
        "INSERT INTO job_queue (task_type, status, attempts, max_attempts, locked_by,"
        " lease_expires_at, started_at) VALUES ('test_ok', 'running', 1, 3, 'dead', $1, $1)",
        datetime.now(UTC) - timedelta(hours=1),
    )
    await owner.pool.execute(
        "UPDATE job_queue SET finished_at = $1, created_at = $1 WHERE status = 'succeeded'",
        long_ago,
    )
    await owner.pool.execute("UPDATE job_runs SET started_at = $1", long_ago)
    member = await store.connect(member_dsn)
    try:
        await service.sync_schedule_file(member, settings, service.load_handlers(settings))
        await member.pool.execute(
            "UPDATE job_schedules SET last_tick_at = now() - interval '5 minutes'"
        )
        report = await scheduler.Scheduler(member, settings).run_once()
        assert report.invalid == []
        rescued = await maintenance.Rescuer(member, settings).run_once()
        assert rescued.rescued == 1
        pruned = await maintenance.Pruner(member, settings, SystemClock()).run_once()
        assert pruned.jobs_deleted == 3  # the succeeded ones; failed jobs are kept
        assert pruned.runs_deleted >= 5
        # The workers page's row: announced, beating, gone at a clean shutdown.
        here = presence.Presence(member, settings)
        await here.join()
        await here.beat()
        assert await owner.pool.fetchval("SELECT id FROM job_workers") == "jw"
        await here.leave()
        assert await owner.pool.fetchval("SELECT count(*) FROM job_workers") == 0
    finally:
        await member.close()
    cron_jobs = await owner.pool.fetchval("SELECT count(*) FROM job_queue WHERE run_type = 'cron'")
    assert cron_jobs >= 1


async def test_a_worker_role_created_after_migrating_is_granted_by_the_function(
    admin_dsn: str, empty_dsn: str
) -> None:
    await migrate(empty_dsn)
    group = await roles.create_group(admin_dsn, "jwlate")
    try:
        async with login(admin_dsn, empty_dsn, "jwlate_login", group) as member_name:
            member_dsn = roles.as_user(empty_dsn, member_name)
            member = await asyncpg.connect(member_dsn)
            owner = await asyncpg.connect(empty_dsn)
            try:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await member.fetch("SELECT id FROM job_queue")
                for _ in range(2):  # idempotent: an admin may run it again
                    await owner.execute("SELECT job_queue_grant_worker($1)", group)
                await owner.execute("INSERT INTO job_queue (task_type) VALUES ('test_ok')")
                assert await member.fetchval("SELECT count(*) FROM job_queue") == 1
                with pytest.raises(asyncpg.UndefinedObjectError, match="does not exist"):
                    await owner.execute("SELECT job_queue_grant_worker('no_such_role_here')")
            finally:
                await member.close()
                await owner.close()
            settings = config.load(
                database_url=member_dsn,
                handler_modules=["tests.support.handlers"],
                scheduler=False,
                worker_id="jwlate",
                retry_base_s=0.0,
            )
            summary, _ = await service.run(settings, once=True)
            assert (summary.succeeded, summary.failed) == (1, 0)
    finally:
        await roles.drop_role(admin_dsn, empty_dsn, group)


# -- SECURITY DEFINER ------------------------------------------------------------------------


async def test_security_definer_functions_pin_search_path_and_are_not_public(
    admin_dsn: str, empty_dsn: str
) -> None:
    await migrate(empty_dsn, reference=True)
    conn = await asyncpg.connect(empty_dsn)
    try:
        owner = await conn.fetchval(
            "SELECT tableowner FROM pg_tables"
            " WHERE schemaname = 'public' AND tablename = 'job_queue'"
        )
        assert owner == await conn.fetchval("SELECT current_user")  # the role that migrated
        rows = await conn.fetch(
            "SELECT p.oid::regprocedure::text AS signature, p.proname, p.proconfig,"
            " pg_get_userbyid(p.proowner) AS owner,"
            " has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute,"
            " has_function_privilege('anon', p.oid, 'EXECUTE') AS anon_execute,"
            " has_function_privilege('authenticated', p.oid, 'EXECUTE') AS user_execute"
            " FROM pg_proc p WHERE p.prosecdef AND p.pronamespace = 'public'::regnamespace"
            " ORDER BY 1"
        )
        # The 20 admin functions of the core set and the 2 of the reference set.
        assert len(rows) == 22, [r["signature"] for r in rows]
        problems = [
            (r["signature"], r["proconfig"], r["owner"], r["public_execute"])
            for r in rows
            if r["proconfig"] != PINNED
            or r["owner"] != owner
            or r["public_execute"]
            or r["anon_execute"]
            or (r["user_execute"] and r["proname"] not in END_USER_DEFINERS)
        ]
        assert problems == []
        assert {r["proname"] for r in rows if r["user_execute"]} == END_USER_DEFINERS
    finally:
        await conn.close()


@pytest.mark.parametrize("pinned", [False, True], ids=["before-0004", "migrated"])
async def test_planted_functions_operators_and_tables_never_run_as_the_owner(
    admin_dsn: str, empty_dsn: str, pinned: bool
) -> None:
    """A caller may execute the definers and create objects in public (every role could
    before PostgreSQL 15) and in a schema of its own, first in its search_path. Against the
    schema before 0004 (the control) the planted `format` and `||` run as the owner; after
    it, nothing planted runs, and every write lands in public's tables."""
    owner = await store.connect(empty_dsn)
    try:
        if pinned:
            await migrations.migrate(owner, "reference")
        else:
            await owner.apply_migrations([m for m in migrations.discover() if m.version <= 3])
            await owner.apply_migrations(
                [m for m in migrations.discover("reference") if m.version <= 6]
            )
    finally:
        await owner.close()
    attacker = await roles.create_login(admin_dsn, "evil")
    orders = "queue" if pinned else "trade_orders"  # reference 0009 took the app's name
    try:
        await _arm(empty_dsn, attacker, orders)
        notices, toggle_error = await _attack(roles.as_user(empty_dsn, attacker), orders)
        conn = await asyncpg.connect(empty_dsn)
        try:
            hijacked = await conn.fetchval(
                "SELECT count(*) FROM job_queue_pauses WHERE queue = 'hijacked'"
            )
            enqueued = await conn.fetchval(
                "SELECT count(*) FROM job_queue WHERE task_type IN ('evil_task', 'process_orders')"
            )
            owner_name = await conn.fetchval("SELECT current_user")
        finally:
            await conn.close()
        assert enqueued == 2  # into public.job_queue, not the attacker's temp table
        if pinned:
            assert (notices, hijacked) == ([], 0)
            assert toggle_error == "no schedule named 'no_such_schedule'"
        else:
            # The `||` in the orders trigger and the `format` in the toggle's error.
            assert notices == [f"hijacked as {owner_name}"] * 2
            assert (hijacked, toggle_error) == (1, "hijacked")
    finally:
        await roles.drop_role(admin_dsn, empty_dsn, attacker)


async def _arm(dsn: str, attacker: str, orders: str) -> None:
    """What the application gave the attacker: EXECUTE on the RPCs, inserting its own
    orders, and CREATE on public and on the database."""
    conn = await asyncpg.connect(dsn)
    try:
        database = await conn.fetchval("SELECT current_database()")
        enqueue = await conn.fetchval(  # its signature as of the migrations applied
            "SELECT oid::regprocedure::text FROM pg_proc WHERE proname = 'job_queue_enqueue'"
        )
        for statement in (
            f'GRANT CREATE ON SCHEMA public TO "{attacker}"',
            f'GRANT CREATE ON DATABASE "{database}" TO "{attacker}"',
            f"GRANT EXECUTE ON FUNCTION {enqueue}, job_schedule_toggle(text, boolean)"
            f' TO "{attacker}"',
            f'GRANT INSERT ON {orders} TO "{attacker}"',
            f'CREATE POLICY own_orders ON {orders} FOR INSERT TO "{attacker}" WITH CHECK (true)',
        ):
            await conn.execute(statement)
    finally:
        await conn.close()


_PAYLOAD = """
BEGIN
  RAISE NOTICE 'hijacked as %', current_user;
  INSERT INTO public.job_queue_pauses (queue, reason) VALUES ('hijacked', current_user)
    ON CONFLICT DO NOTHING;
  RETURN 'hijacked';
END
"""


async def _attack(dsn: str, orders: str) -> tuple[list[str], str]:
    """Plant the objects, call the definers; returns the notices seen and the message of
    a toggle on a schedule that does not exist."""
    conn = await asyncpg.connect(dsn)
    notices: list[str] = []
    conn.add_log_listener(lambda _conn, message: notices.append(message.message))
    try:
        await conn.execute("CREATE SCHEMA lair")
        for schema in ("public", "lair"):
            await conn.execute(
                f"CREATE FUNCTION {schema}.format(text, text) RETURNS text LANGUAGE plpgsql"
                f" AS $${_PAYLOAD}$$"
            )
            await conn.execute(
                f"CREATE FUNCTION {schema}.evil_cat(text, bigint) RETURNS text LANGUAGE plpgsql"
                f" AS $${_PAYLOAD}$$"
            )
            await conn.execute(
                f"CREATE OPERATOR {schema}.|| (LEFTARG = text, RIGHTARG = bigint,"
                f" FUNCTION = {schema}.evil_cat)"
            )
        await conn.execute(
            "CREATE TEMP TABLE job_queue (id bigint, task_type text, payload jsonb, queue text,"
            " status text, dedupe_key text)"
        )
        await conn.execute(
            "CREATE TEMP TABLE job_queue_pauses (queue text primary key, paused_by text,"
            " reason text)"
        )
        await conn.execute("SET search_path = lair, pg_temp, public, pg_catalog")
        await conn.execute("SELECT public.job_queue_enqueue('evil_task')")
        await conn.execute(
            f"INSERT INTO public.{orders} (user_id, ticker, order_type, amount_usdp)"
            " VALUES (gen_random_uuid(), 'X', 'buy', 1)"
        )
        with pytest.raises(asyncpg.PostgresError) as raised:
            await conn.execute("SELECT public.job_schedule_toggle('no_such_schedule')")
        temp_rows = await conn.fetchval("SELECT count(*) FROM pg_temp.job_queue")
        assert temp_rows == 0
        await asyncio.sleep(0)  # let asyncpg deliver the last notices
        return [n for n in notices if n.startswith("hijacked")], str(raised.value)
    finally:
        await conn.close()


# Every admin command, as the worker's role runs it: what the role may not do, it is told in
# one line naming the right it lacks (SQLSTATE 42501), exit code 2.
ADMIN_COMMANDS = [
    ("pause", "default"),
    ("resume", "default"),
    ("retry", "{job}"),
    ("cancel", "{job}"),
    ("enqueue", "test_ok"),
    ("schedules", "list"),
    ("schedules", "add", "nightly", "--cron", "@daily", "--task", "test_ok"),
    ("schedules", "set", "nightly", "--cron", "@hourly"),
    ("schedules", "pause", "nightly"),
    ("schedules", "resume", "nightly"),
    ("schedules", "remove", "nightly"),
    ("schedules", "history", "nightly"),
]


async def test_admin_commands_as_the_worker_role_are_one_line_refusals(
    admin_dsn: str, empty_dsn: str
) -> None:
    await migrate(empty_dsn)
    owner = await asyncpg.connect(empty_dsn)
    try:
        job = await owner.fetchval(
            "INSERT INTO job_queue (task_type, status) VALUES ('test_ok', 'failed') RETURNING id"
        )
        async with login(admin_dsn, empty_dsn, "jw", roles.WORKER_ROLE) as worker_login:
            member_dsn = roles.as_user(empty_dsn, worker_login)
            for command in ADMIN_COMMANDS:
                argv = [arg.format(job=job) for arg in command]
                done = await asyncio.to_thread(
                    run_cli, *argv, dsn=member_dsn, WORKER_HANDLER_MODULES="tests.support.handlers"
                )
                assert done.returncode == 2, (argv, done.stderr[-2000:])
                [line] = done.stderr.splitlines()
                assert line.startswith("error: permission denied for "), (argv, line)
                assert "cannot run admin commands" in line, (argv, line)
                assert done.stdout == "", argv
        unchanged = await owner.fetchrow(
            "SELECT (SELECT status FROM job_queue WHERE id = $1) AS status,"
            " (SELECT count(*) FROM job_schedules) AS schedules,"
            " (SELECT count(*) FROM job_queue_pauses) AS pauses",
            job,
        )
        assert tuple(unchanged) == ("failed", 0, 0)
    finally:
        await owner.close()
