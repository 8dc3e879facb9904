"""SQL injection through every CLI argument and every SQL function argument: the schema,
privileges, roles and every other row stay as they were; the call does what it is
documented to do (store the text verbatim, or refuse it) and nothing else."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from hypothesis import given
from hypothesis import strategies as st

from tests.property import fingerprint, inprocess, strategies
from worker import store

injections = st.one_of(st.sampled_from(strategies.INJECTIONS), strategies.hostile_text)

SEED = (
    "INSERT INTO job_queue (task_type, payload) VALUES ('seed', '{\"n\": 1}')",
    "INSERT INTO job_queue_pauses (queue, reason) VALUES ('q0', 'seed')",
    "INSERT INTO job_schedules (name, cron, task_type) VALUES ('victim', '0 * * * *', 'echo')",
)
SEED_ROWS = """
    SELECT (SELECT array_agg(row(id, task_type, payload::text, status)::text ORDER BY id)
              FROM job_queue WHERE task_type = 'seed'),
           (SELECT array_agg(row(queue, reason)::text) FROM job_queue_pauses WHERE queue = 'q0'),
           (SELECT row(name, cron, timezone, task_type, payload::text, queue, active)::text
              FROM job_schedules WHERE name = 'victim')"""

LAST_JOB = "SELECT count(*) = 1 FROM job_queue WHERE id = (SELECT max(id) FROM job_queue) AND "

# (call with the injected text as $1, table a success adds a row to, proof it is verbatim)
SQL_CALLS: tuple[tuple[str, str | None, str | None], ...] = (
    (
        "SELECT job_queue_enqueue($1)",
        "job_queue",
        LAST_JOB + "task_type = $1",
    ),
    (
        "SELECT job_queue_enqueue('t', jsonb_build_object('message', $1::text))",
        "job_queue",
        LAST_JOB + "payload->>'message' = $1",
    ),
    (
        "SELECT job_queue_enqueue('t', '{}', NULL, $1)",
        "job_queue",
        LAST_JOB + "queue = $1",
    ),
    (
        "SELECT job_queue_enqueue('t', '{}', NULL, 'default', 0, NULL, $1)",
        "job_queue",
        LAST_JOB + "dedupe_key = $1",
    ),
    (
        "SELECT job_queue_pause($1)",
        "job_queue_pauses",
        "SELECT count(*) = 1 FROM job_queue_pauses WHERE queue = $1",
    ),
    (
        "SELECT job_queue_pause('q1', $1)",
        "job_queue_pauses",
        "SELECT count(*) = 1 FROM job_queue_pauses WHERE queue = 'q1' AND reason = left($1, 500)",
    ),
    ("SELECT job_queue_resume($1)", None, None),
    (
        "SELECT count(*) FROM job_schedule_create($1, '0 * * * *', 'echo')",
        "job_schedules",
        "SELECT count(*) = 1 FROM job_schedules WHERE name = $1",
    ),
    (
        "SELECT count(*) FROM job_schedule_create('s2', $1, 'echo')",
        "job_schedules",
        "SELECT count(*) = 1 FROM job_schedules WHERE name = 's2' AND cron = btrim($1)",
    ),
    (
        "SELECT count(*) FROM job_schedule_create('s2', '0 * * * *', $1)",
        "job_schedules",
        "SELECT count(*) = 1 FROM job_schedules WHERE name = 's2' AND task_type = $1",
    ),
    (
        "SELECT count(*) FROM job_schedule_create('s2', '0 * * * *', 'echo',"
        " jsonb_build_object('m', $1::text))",
        "job_schedules",
        "SELECT count(*) = 1 FROM job_schedules WHERE name = 's2' AND payload->>'m' = $1",
    ),
    (
        "SELECT count(*) FROM job_schedule_create('s2', '0 * * * *', 'echo', '{}', $1)",
        "job_schedules",
        "SELECT count(*) = 1 FROM job_schedules WHERE name = 's2' AND timezone = $1",
    ),
    (
        "SELECT count(*) FROM job_schedule_create('s2', '0 * * * *', 'echo', '{}', 'UTC', $1)",
        "job_schedules",
        "SELECT count(*) = 1 FROM job_schedules WHERE name = 's2' AND queue = $1",
    ),
    (
        "SELECT count(*) FROM job_schedule_create('s2', '0 * * * *', 'echo', '{}', 'UTC',"
        " 'default', 0, NULL, $1)",
        "job_schedules",
        "SELECT count(*) = 1 FROM job_schedules WHERE name = 's2' AND missed = $1",
    ),
    ("SELECT count(*) FROM job_schedule_update($1, cron => '0 1 * * *')", None, None),
    ("SELECT count(*) FROM job_schedule_update('victim', cron => $1)", None, None),
    ("SELECT count(*) FROM job_schedule_update('victim', timezone => $1)", None, None),
    ("SELECT count(*) FROM job_schedule_update('victim', task_type => $1)", None, None),
    ("SELECT count(*) FROM job_schedule_update('victim', queue => $1)", None, None),
    ("SELECT count(*) FROM job_schedule_update('victim', missed => $1)", None, None),
    (
        "SELECT count(*) FROM job_schedule_update('victim',"
        " payload => jsonb_build_object('m', $1::text))",
        None,
        "SELECT count(*) = 1 FROM job_schedules WHERE name = 'victim' AND payload->>'m' = $1",
    ),
    ("SELECT count(*) FROM job_schedule_retime($1, '0 1 * * *')", None, None),
    ("SELECT count(*) FROM job_schedule_retime('victim', $1)", None, None),
    ("SELECT count(*) FROM job_schedule_retime('victim', '0 1 * * *', $1)", None, None),
    ("SELECT count(*) FROM job_schedule_toggle($1)", None, None),
    ("SELECT job_schedule_delete($1)", None, None),
    ("SELECT count(*) FROM job_schedule_history($1)", None, None),
    # schema/0009_app_admins.sql
    ("SELECT job_queue_enqueue_manual($1)", "job_queue", LAST_JOB + "task_type = $1"),
    (
        "SELECT job_queue_enqueue_manual('t', jsonb_build_object('message', $1::text))",
        "job_queue",
        LAST_JOB + "payload->>'message' = $1",
    ),
    ("SELECT job_queue_enqueue_manual('t', '{}', NULL, $1)", "job_queue", LAST_JOB + "queue = $1"),
    (
        "SELECT job_queue_enqueue_manual('t', '{}', NULL, 'default', 0, NULL, $1)",
        "job_queue",
        LAST_JOB + "dedupe_key = $1",
    ),
    ("SELECT count(*) FROM job_queue_list($1)", None, None),
    ("SELECT count(*) FROM job_queue_list(queue => $1)", None, None),
    ("SELECT count(*) FROM job_queue_list(task_type => $1)", None, None),
    ("SELECT count(*) FROM job_schedule_run_now($1)", "job_queue", None),
)

_SCHEMA: dict[str, Any] = {}


def _untouched(seeded: asyncpg.Record, targets_victim: bool) -> tuple[Any, ...]:
    """The seed rows the call must leave alone: all, or all but the schedule it changes."""
    return tuple(seeded)[:2] if targets_victim else tuple(seeded)


async def _baseline_schema(conn: fingerprint.Connection) -> dict[str, Any]:
    if not _SCHEMA:
        _SCHEMA.update(await fingerprint.schema(conn))
    return _SCHEMA


def _expected_counts(before: dict[str, int], table: str | None) -> dict[str, int]:
    return before if table is None else {**before, table: before[table] + 1}


@strategies.examples(200)
@given(call=st.sampled_from(SQL_CALLS), text=injections.filter(strategies.storable))
async def test_sql_function_arguments_are_data_never_sql(
    module_db: store.Store, call: tuple[str, str | None, str | None], text: str
) -> None:
    query, table, verbatim = call
    async with fingerprint.rolled_back(module_db) as conn:
        schema = await _baseline_schema(conn)
        for statement in SEED:
            await conn.execute(statement)
        seeded = await conn.fetchrow(SEED_ROWS)
        before = await fingerprint.row_counts(conn)
        try:
            async with conn.transaction():
                await conn.fetch(query, text)
            succeeded = True
        except asyncpg.PostgresError as exc:
            # invalid input (22xxx), check or unique violation (23xxx), no such schedule
            assert exc.sqlstate[:2] in ("22", "23", "P0"), (exc.sqlstate, exc)
            succeeded = False
        assert await fingerprint.schema(conn) == schema
        targets_victim = "'victim'" in query
        assert _untouched(await conn.fetchrow(SEED_ROWS), targets_victim) == _untouched(
            seeded, targets_victim
        )
        after = await fingerprint.row_counts(conn)
        if not succeeded:
            assert after == before
            return
        if after != before:  # a name that matched nothing changes nothing
            expected = dict(_expected_counts(before, table))
            if "job_queue_enqueue(" not in query:  # the admin functions audit their changes
                expected["job_admin_audit"] = before["job_admin_audit"] + 1
            assert after == expected, (query, text)
        if verbatim is not None and (table is None or after != before):
            assert await conn.fetchval(verbatim, text) is True, (query, text)


def _seed(conn: asyncpg.Connection) -> Any:
    async def work() -> Any:
        await fingerprint.clean(conn)
        for statement in SEED:
            await conn.execute(statement)
        return await conn.fetchrow(SEED_ROWS)

    return work()


# (argv with {} where the injected text goes, table a success adds a row to)
CLI_CALLS: tuple[tuple[tuple[str, ...], str | None], ...] = (
    (("enqueue", "--force", "--", "{}"), "job_queue"),
    (("enqueue", "echo", "--payload={}"), "job_queue"),
    (("enqueue", "--force", "--queue={}", "--", "t"), "job_queue"),
    (("enqueue", "--force", "--dedupe-key={}", "--", "t"), "job_queue"),
    (("enqueue", "--force", "--user-id={}", "--", "t"), "job_queue"),
    (("pause", "--reason={}", "--", "q1"), "job_queue_pauses"),
    (("pause", "--", "{}"), "job_queue_pauses"),
    (("resume", "--", "{}"), None),
    (
        ("schedules", "add", "--cron=0 * * * *", "--task=echo", "--force", "--", "{}"),
        "job_schedules",
    ),
    (("schedules", "add", "--cron={}", "--task=t", "--force", "--", "s2"), "job_schedules"),
    (("schedules", "add", "--cron=0 * * * *", "--task={}", "--force", "--", "s2"), "job_schedules"),
    (
        ("schedules", "add", "--cron=@daily", "--task=t", "--timezone={}", "--", "s2"),
        "job_schedules",
    ),
    (("schedules", "add", "--cron=@daily", "--task=t", "--queue={}", "--", "s2"), "job_schedules"),
    (
        ("schedules", "add", "--cron=@daily", "--task=t", "--payload={}", "--", "s2"),
        "job_schedules",
    ),
    (("schedules", "set", "--cron={}", "--", "victim"), None),
    (("schedules", "set", "--timezone={}", "--", "victim"), None),
    (("schedules", "set", "--cron=0 1 * * *", "--", "{}"), None),
    (("schedules", "pause", "--", "{}"), None),
    (("schedules", "resume", "--", "{}"), None),
    (("schedules", "remove", "--", "{}"), None),
    (("schedules", "history", "--", "{}"), None),
)


def _argv(template: tuple[str, ...], text: str) -> list[str]:
    """The text in place of {}; where a JSON payload goes, inside a JSON string."""
    payload = json.dumps({"message": text})
    return [
        part.replace("{}", payload if part.startswith("--payload=") else text, 1)
        for part in template
    ]


@strategies.examples(60)
@given(call=st.sampled_from(CLI_CALLS), text=injections)
def test_cli_arguments_are_data_never_sql(
    module_dsn: str,
    thread_db: inprocess.ThreadDb,
    call: tuple[tuple[str, ...], str | None],
    text: str,
) -> None:
    template, table = call
    seeded = thread_db.run(_seed(thread_db.conn))
    schema = thread_db.run(_baseline_schema(thread_db.conn))
    before = thread_db.run(fingerprint.row_counts(thread_db.conn))
    run = inprocess.run_cli(
        _argv(template, text), module_dsn, WORKER_HANDLER_MODULES="handlers.bundled"
    )
    assert thread_db.run(fingerprint.schema(thread_db.conn)) == schema
    targets_victim = template[-1] == "victim"
    assert _untouched(thread_db.fetch(SEED_ROWS)[0], targets_victim) == _untouched(
        seeded, targets_victim
    )
    after = thread_db.run(fingerprint.row_counts(thread_db.conn))
    if run.code != 0:
        run.assert_one_line_refusal()
        assert after == before
        return
    assert "Traceback" not in run.stderr
    if after != before:
        # A change from the command line is audited: one job_admin_audit row more.
        expected = _expected_counts(_expected_counts(before, table), "job_admin_audit")
        assert after == expected, (template, text)
