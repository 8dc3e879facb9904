"""Migrations and the query registry against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker import errors, migrations, store
from worker.admin import store as admin_store
from worker.queries import QUERIES


async def test_migrations_apply_on_an_empty_database_then_do_nothing(empty_dsn: str) -> None:
    db = await store.connect(empty_dsn)
    try:
        applied = await migrations.migrate(db)
        assert [m.version for m in applied] == [m.version for m in migrations.discover()]
        assert await migrations.migrate(db) == []
        tables = {
            r["tablename"]
            for r in await db.pool.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        assert {"job_queue", "job_runs", "job_schedules", "worker_migrations"} <= tables
        rls = await db.pool.fetch(
            "SELECT relname, relrowsecurity FROM pg_class WHERE relname IN "
            "('job_queue', 'job_runs', 'job_schedules')"
        )
        assert all(r["relrowsecurity"] for r in rls) and len(rls) == 3
    finally:
        await db.close()


async def test_concurrent_migrations_apply_each_version_once(empty_dsn: str) -> None:
    dbs = [await store.connect(empty_dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrations.migrate(db) for db in dbs))
        assert sorted(len(r) for r in results) == [0, 0, 0, len(migrations.discover())]
        count = await dbs[0].pool.fetchval("SELECT count(*) FROM worker_migrations")
        assert count == len(migrations.discover())
    finally:
        for db in dbs:
            await db.close()


def test_two_migrate_processes_at_once(empty_dsn: str) -> None:
    env = {**os.environ, "DATABASE_URL": empty_dsn, "WORKER_LOG_FORMAT": "json"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "worker", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    applied = sorted((out for out, _ in outputs), key=len)
    assert applied[0].strip() == '{"applied": []}'
    assert '"0001_job_queue"' in applied[1]


async def test_an_edited_migration_is_refused(empty_dsn: str) -> None:
    db = await store.connect(empty_dsn)
    try:
        await migrations.migrate(db)
        edited = [
            store.Migration(m.migration_set, m.version, m.name, m.sql + "\n-- edited", "x")
            for m in migrations.discover()
        ]
        with pytest.raises(errors.MigrationError, match="was changed after it was applied"):
            await db.apply_migrations(edited)
    finally:
        await db.close()


@pytest.mark.parametrize(
    "name", [*sorted(QUERIES), *(f"admin:{name}" for name in sorted(admin_store.Q))]
)
async def test_every_named_query_prepares(db: store.Store, name: str) -> None:
    sql = admin_store.Q[name.removeprefix("admin:")] if name.startswith("admin:") else QUERIES[name]
    async with db.pool.acquire() as conn:
        await conn.prepare(sql)


async def test_supabase_grants_apply_only_where_roles_exist(empty_dsn: str) -> None:
    db = await store.connect(empty_dsn)
    roles = ("anon", "authenticated", "service_role")
    try:
        existing = {
            r["rolname"]
            for r in await db.pool.fetch(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY($1)", list(roles)
            )
        }
        for role in set(roles) - existing:
            await db.pool.execute(f"CREATE ROLE {role} NOLOGIN")
        await migrations.migrate(db)
        can = await db.pool.fetchrow(
            "SELECT has_table_privilege('service_role', 'job_queue', 'INSERT') AS service_insert,"
            " has_table_privilege('authenticated', 'job_runs', 'SELECT') AS auth_read_runs,"
            " has_table_privilege('authenticated', 'job_queue', 'SELECT') AS auth_read_queue,"
            " has_table_privilege('anon', 'job_runs', 'SELECT') AS anon_read_runs,"
            " has_function_privilege('anon', 'job_queue_enqueue(text,jsonb,timestamptz,text,"
            "integer,integer,text,bigint[],text,text,jsonb)', 'EXECUTE') AS anon_enqueue,"
            " has_function_privilege('service_role', 'job_queue_enqueue(text,jsonb,timestamptz,"
            "text,integer,integer,text,bigint[],text,text,jsonb)', 'EXECUTE') AS service_enqueue"
        )
        assert dict(can) == {
            "service_insert": True,
            "auth_read_runs": True,
            "auth_read_queue": True,  # its rows only to the app's admins (RLS, 0009)
            "anon_read_runs": False,
            "anon_enqueue": False,
            "service_enqueue": True,
        }
    finally:
        await db.close()


def _claim_args(limit: int, task_types: list[str], type_limits: list[Any]) -> list[Any]:
    """finish_and_claim's arguments for a claim alone (no outcomes)."""
    width = len(task_types)
    none: list[Any] = [None] * width
    queues = ["default", "mail", "reports"]
    return [
        *([[]] * 13),
        "w",
        queues,
        limit,
        task_types,
        60.0,
        [3] * width,
        type_limits,
        none,
        none,
        none,
        none,
    ]


def _rows_read(plan: Any) -> int:
    """Tuples the executed plan read from job_queue: rows its scans returned plus rows
    their filters removed, over all loops."""
    total = 0
    todo = [plan[0]["Plan"]]
    while todo:
        node = todo.pop()
        todo.extend(node.get("Plans", []))
        if node.get("Relation Name") == "job_queue":
            loops = node.get("Actual Loops", 1)
            total += (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * loops
    return total


def _entries_read(plan: Any) -> int:
    """Index entries and tuples the executed plan's scans of job_queue and its indexes
    returned or filtered out, over all loops (a bitmap index scan counts every entry it
    found, dead ones included)."""
    total = 0
    todo = [plan[0]["Plan"]]
    while todo:
        node = todo.pop()
        todo.extend(node.get("Plans", []))
        on_queue = node.get("Relation Name") == "job_queue" or str(
            node.get("Index Name", "")
        ).startswith("job_queue")
        if on_queue and "Scan" in node["Node Type"]:
            loops = node.get("Actual Loops", 1)
            total += (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * loops
    return total


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
async def test_writing_outcomes_reads_only_the_jobs_written(
    db: store.Store, plan_cache_mode: str
) -> None:
    """Between two vacuums the running index still points at every job that ran since
    (10,000 here). An outcome write that found its rows through it read all those entries:
    40 outcomes cost ~7 ms instead of ~1 ms (measured during a drain). It must look the
    jobs up by id."""
    await db.pool.execute("ALTER TABLE job_queue SET (autovacuum_enabled = false)")
    await db.pool.execute(
        "INSERT INTO job_queue (task_type, status, attempts, locked_by)"
        " SELECT 'noop', 'running', 1, 'w' FROM generate_series(1, 10040)"
    )
    await db.pool.execute(
        "UPDATE job_queue SET status = 'succeeded', locked_by = NULL WHERE id > 40"
    )
    now = datetime.now(UTC)
    outcomes = [
        store.Finish(i, 1, "succeeded", 0.0, None, None, "succeeded", "ok", 0, None, now, 0, True)
        for i in range(1, 41)
    ]
    args = [*map(list, zip(*outcomes, strict=True)), *_claim_args(0, ["noop"], [None])[13:]]
    async with db.pool.acquire() as conn:
        await conn.execute(f"SET plan_cache_mode = {plan_cache_mode}")
        statement = await conn.prepare(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES["finish_and_claim"]
        )
        for _ in range(3):  # a generic plan is cached after the first runs: check it too
            tr = conn.transaction()
            await tr.start()
            try:
                plan = json.loads(await statement.fetchval(*args))
                written = await conn.fetchval(
                    "SELECT count(*) FROM job_queue WHERE status = 'succeeded' AND id <= 40"
                )
            finally:
                await tr.rollback()
            assert written == 40
            assert _entries_read(plan) < 500, _entries_read(plan)
        await conn.execute("RESET plan_cache_mode")


def _rows_handled(node: Any) -> int:
    """Rows every node of a plan (sub)tree produced or filtered out, over all loops."""
    rows = (
        node.get("Actual Rows", 0)
        + node.get("Rows Removed by Filter", 0)
        + node.get("Rows Removed by Join Filter", 0)
    ) * node.get("Actual Loops", 1)
    return rows + sum(_rows_handled(child) for child in node.get("Plans", []))


async def _executed_plan(conn: Any, sql: str, *args: Any) -> Any:
    """Run `sql` on `conn` (its cached plan, generic on engine connections) and return the
    plan it executed, read through auto_explain: EXPLAIN of a prepared statement would
    plan it afresh with the values given."""
    logged: list[str] = []

    def keep(_conn: object, message: Any) -> None:
        logged.append(message.message)

    conn.add_log_listener(keep)
    try:
        await conn.execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;"
            " SET auto_explain.log_analyze = on; SET auto_explain.log_format = json;"
            " SET client_min_messages = log"
        )
        await conn.fetch(sql, *args)
        await conn.execute("RESET client_min_messages; SET auto_explain.log_min_duration = -1")
    finally:
        conn.remove_log_listener(keep)
    message = next(m for m in reversed(logged) if '"Plan"' in m)  # "duration: … plan: {…}"
    return json.loads(message[message.index("{") :])


async def test_a_large_outcome_batch_is_not_joined_row_by_row(db: store.Store) -> None:
    """1,000 outcomes in one statement (batch 1000), on an engine connection whose generic
    plan was made while the table was empty (a worker starting on a fresh database): each
    job is written once. A plan that joined the outcomes and rescanned all of them for
    each job handled a million rows (0.5 s of a drain cycle). The executed plan is read
    with auto_explain (_executed_plan)."""
    n = 1000
    claim_args = _claim_args(n, ["noop"], [None])
    empty = [*([[]] * 13), *claim_args[13:]]
    async with db.pool.acquire() as conn:
        await conn.fetch(QUERIES["finish_and_claim"], *empty)  # plans it: the table is empty
        await conn.execute(
            "INSERT INTO job_queue (task_type, payload) SELECT 'noop', '{}'"
            " FROM generate_series(1, $1)",
            n,
        )
        claimed = await conn.fetch(QUERIES["finish_and_claim"], *empty)
        assert len(claimed) == n + 1  # the jobs, then the row of what was written
        now = datetime.now(UTC)
        outcomes = [
            store.Finish(
                r["id"],
                r["attempts"],
                "succeeded",
                0.0,
                None,
                None,
                "succeeded",
                "ok",
                0,
                None,
                now,
                0,
                True,
            )
            for r in sorted(claimed[:n], key=lambda r: r["id"])
        ]
        args = [*map(list, zip(*outcomes, strict=True)), *_claim_args(0, ["noop"], [None])[13:]]
        plan = await _executed_plan(conn, QUERIES["finish_and_claim"], *args)
        written = await conn.fetchval("SELECT count(*) FROM job_queue WHERE status = 'succeeded'")
    assert written == n
    [write] = [p for p in plan["Plan"]["Plans"] if p.get("Subplan Name") == "CTE written"]
    assert _rows_handled(write) <= 5 * n, _rows_handled(write)


async def test_of_two_outcomes_of_one_job_in_a_batch_the_current_attempts_is_written(
    db: store.Store,
) -> None:
    """A batch can hold an outcome whose lease was lost (the flusher waited out a database
    restart) beside the outcome of the attempt that took the job again: the statement finds
    each job's values by its position in the id-sorted arrays, and must take the later
    one, the current attempt's. Taking the first, it wrote neither: the job stayed running
    until its lease expired and ran once more."""
    job_id = await db.pool.fetchval(
        "INSERT INTO job_queue (task_type, status, attempts, locked_by, started_at)"
        " VALUES ('noop', 'running', 2, 'w', now()) RETURNING id"
    )
    now = datetime.now(UTC)

    def outcome(attempt: int, status: str) -> store.Finish:
        return store.Finish(
            job_id, attempt, status, 0.0, None, None, status, "ok", attempt, None, now, 0, True
        )

    stale, current = outcome(1, "failed"), outcome(2, "succeeded")
    assert await db.finish([stale, current], worker_id="w") == {job_id}
    row = await db.pool.fetchrow("SELECT status, attempts FROM job_queue WHERE id = $1", job_id)
    assert (row["status"], row["attempts"]) == ("succeeded", 2)
    runs = await db.pool.fetch("SELECT attempt, status FROM job_runs WHERE job_id = $1", job_id)
    assert [(r["attempt"], r["status"]) for r in runs] == [(2, "succeeded")]


async def test_a_claim_beside_an_analyzed_backlog_reads_only_what_it_claims(
    db: store.Store,
) -> None:
    """200,000 rows of a paused queue, with statistics (autovacuum gives a bulk-filled
    table some soon): the claim's generic plan must still find its rows by id. With the
    locked ids joined back to job_queue, the planner hash-joined them against a scan of
    the whole table (~0.1 s here, 1.3-1.7 s at a million rows)."""
    await db.pool.execute(
        "INSERT INTO job_queue (queue, task_type) SELECT 'paused', 'noop'"
        " FROM generate_series(1, 200000)"
    )
    await db.pool.execute("INSERT INTO job_queue_pauses (queue) VALUES ('paused')")
    await db.pool.execute(
        "INSERT INTO job_queue (task_type) SELECT 'noop' FROM generate_series(1, 300)"
    )
    await db.pool.execute("ANALYZE job_queue")
    args = _claim_args(100, ["noop"], [None])
    async with db.pool.acquire() as conn:
        for _ in range(2):  # the first run makes the generic plan, the second uses it
            plan = await _executed_plan(conn, QUERIES["finish_and_claim"], *args)
        claimed = await conn.fetchval("SELECT count(*) FROM job_queue WHERE status = 'running'")
    assert claimed == 200
    assert _rows_handled(plan["Plan"]) < 20_000, _rows_handled(plan["Plan"])


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh", "analyzed"])
@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
async def test_claim_plans_never_read_what_they_cannot_take(
    db: store.Store, plan_cache_mode: str, analyzed: bool
) -> None:
    """60,000 pending rows the claim may not take (a paused queue, a queue it does not
    serve, a task type another service serves, a limited type at its limit, rows due
    tomorrow) stand in front of 30 it may take, at several priorities and in three queues:
    the claim reads about what it takes, so its cost does not grow with the rest. Fresh:
    a freshly filled table must not need an ANALYZE; analyzed: autovacuum soon gives it
    statistics, which must not lead the planner to scan the table either."""
    later = datetime.now(UTC) + timedelta(days=1)
    fillers = [
        ("paused", "noop", None, 0),
        ("elsewhere", "noop", None, 0),
        ("default", "someone_elses", None, 0),
        ("mail", "capped", None, 0),
        ("default", "noop", later, -5),
        ("mail", "noop", later, 0),
    ]
    for queue, task_type, run_at, priority in fillers:
        await db.pool.execute(
            "INSERT INTO job_queue (queue, task_type, priority, run_at)"
            " SELECT $1, $2, $4, coalesce($3, now()) FROM generate_series(1, 10000)",
            queue,
            task_type,
            run_at,
            priority,
        )
    await db.pool.execute(
        "INSERT INTO job_queue (queue, task_type, status, limit_key)"
        " SELECT 'mail', 'capped', 'running', '' FROM generate_series(1, 2)"
    )
    for priority in (3, 7):
        await db.pool.execute(
            "INSERT INTO job_queue (queue, task_type, priority)"
            " SELECT q, 'noop', $1 FROM unnest(ARRAY['default', 'reports', 'mail']) q,"
            " generate_series(1, 5)",
            priority,
        )
    await db.pool.execute("INSERT INTO job_queue_pauses (queue) VALUES ('paused')")
    await db.ensure_limit_rows(["capped"])
    if analyzed:
        await db.pool.execute("ANALYZE job_queue")
    args = _claim_args(100, ["noop", "capped", "other_here"], [None, 2, None])
    async with db.pool.acquire() as conn:
        await conn.execute(f"SET plan_cache_mode = {plan_cache_mode}")
        statement = await conn.prepare(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES["finish_and_claim"]
        )
        for _ in range(3):  # a generic plan is cached after the first runs: check it too
            tr = conn.transaction()
            await tr.start()
            try:
                plan = json.loads(await statement.fetchval(*args))
                claimed = await conn.fetchval(
                    "SELECT count(*) FROM job_queue WHERE status = 'running' AND locked_by = 'w'"
                )
            finally:
                await tr.rollback()  # claim the same jobs again next time
            assert claimed == 30, claimed
            assert _rows_read(plan) < 500, _rows_read(plan)
        await conn.execute("RESET plan_cache_mode")
