"""Task types, queue names, dedupe keys and pause reasons of any text, at the CLI and the
SQL functions: stored verbatim when the table's CHECK constraints allow them, refused
clearly when not, never read as SQL."""

from __future__ import annotations

import json
import uuid

import asyncpg
from hypothesis import given
from hypothesis import strategies as st

from tests.property import fingerprint, inprocess, strategies
from worker import store

MAX_DEDUPE_KEY_CHARS = 512  # job_queue_dedupe_key_check
MAX_REASON_CHARS = 500  # job_queue_pause keeps this much


def _allowed_by_table(task: str, queue: str, dedupe_key: str | None) -> bool:
    """What job_queue's CHECK constraints (and PostgreSQL's text type) accept."""
    return (
        strategies.TASK_TYPE.fullmatch(task) is not None
        and strategies.NAME.fullmatch(queue) is not None
        and (
            dedupe_key is None
            or (len(dedupe_key) <= MAX_DEDUPE_KEY_CHARS and strategies.storable(dedupe_key))
        )
    )


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


@strategies.examples(50)
@given(
    task=strategies.hostile_text,
    queue=strategies.hostile_text,
    dedupe_key=st.none() | strategies.hostile_text,
    user_id=st.none() | st.uuids().map(str) | strategies.hostile_text,
)
def test_cli_enqueue_stores_names_verbatim_or_refuses_them_in_one_line(
    module_dsn: str,
    thread_db: inprocess.ThreadDb,
    *,
    task: str,
    queue: str,
    dedupe_key: str | None,
    user_id: str | None,
) -> None:
    thread_db.run(fingerprint.clean(thread_db.conn))
    argv = ["enqueue", "--force", f"--queue={queue}"]
    argv += [] if dedupe_key is None else [f"--dedupe-key={dedupe_key}"]
    argv += [] if user_id is None else [f"--user-id={user_id}"]
    run = inprocess.run_cli([*argv, "--", task], module_dsn)
    rows = thread_db.fetch("SELECT * FROM job_queue")
    allowed = _allowed_by_table(task, queue, dedupe_key)
    if user_id is not None and _as_uuid(user_id) is None:
        allowed = False
    if dedupe_key == "--":  # argparse reads `--dedupe-key=--` as no value: refused
        allowed = False
    if not allowed:
        run.assert_one_line_refusal()
        assert rows == []
        return
    assert run.code == 0, run.stderr
    [row] = rows
    assert json.loads(run.stdout) == {"job_id": row["id"]}
    assert (row["task_type"], row["queue"], row["dedupe_key"]) == (task, queue, dedupe_key)
    assert row["requested_by"] == (None if user_id is None else _as_uuid(user_id))
    assert (row["run_type"], row["status"], row["payload"]) == ("manual", "pending", {})


@strategies.examples(120)
@given(
    task=strategies.hostile_text,
    queue=strategies.hostile_text,
    dedupe_key=st.none() | strategies.hostile_text,
)
async def test_sql_enqueue_stores_names_verbatim_or_raises_a_check_violation(
    module_db: store.Store, task: str, queue: str, dedupe_key: str | None
) -> None:
    async with fingerprint.rolled_back(module_db) as conn:
        # The module's CLI test commits its last example's job: count from here.
        before = await conn.fetchval("SELECT count(*) FROM job_queue")
        try:
            async with conn.transaction():
                job_id = await conn.fetchval(
                    "SELECT job_queue_enqueue($1, '{}', NULL, $2, 0, NULL, $3)",
                    task,
                    queue,
                    dedupe_key,
                )
        except (UnicodeEncodeError, asyncpg.PostgresError) as exc:
            if strategies.unsendable(exc):  # a lone surrogate: nothing reached SQL
                assert not all(map(strategies.storable, (task, queue, dedupe_key or "")))
                return
            assert isinstance(exc, asyncpg.PostgresError)
            # 23514 check_violation; 22021 a NUL character, which text cannot hold; 22023
            # job_queue_enqueue's own argument check (schema/0014_workflows.sql)
            assert exc.sqlstate in ("23514", "22021", "22023"), exc
            assert not _allowed_by_table(task, queue, dedupe_key)
            assert await conn.fetchval("SELECT count(*) FROM job_queue") == before
            return
        assert _allowed_by_table(task, queue, dedupe_key)
        row = await conn.fetchrow("SELECT * FROM job_queue WHERE id = $1", job_id)
        assert (row["task_type"], row["queue"], row["dedupe_key"]) == (task, queue, dedupe_key)


@strategies.examples(80)
@given(queue=strategies.hostile_text, reason=st.none() | strategies.hostile_text)
async def test_sql_pause_and_resume_store_the_reason_verbatim_or_refuse_the_queue(
    module_db: store.Store, queue: str, reason: str | None
) -> None:
    valid = strategies.NAME.fullmatch(queue) is not None
    async with fingerprint.rolled_back(module_db) as conn:
        try:
            async with conn.transaction():
                changed = await conn.fetchval("SELECT job_queue_pause($1, $2)", queue, reason)
        except (UnicodeEncodeError, asyncpg.PostgresError) as exc:
            if strategies.unsendable(exc):  # a lone surrogate: nothing reached SQL
                assert not (strategies.storable(queue) and strategies.storable(reason or ""))
                return
            assert isinstance(exc, asyncpg.PostgresError)
            assert exc.sqlstate in ("22023", "22021"), exc  # invalid_parameter_value; NUL
            assert not valid or not strategies.storable(reason or "")
            assert await conn.fetchval("SELECT count(*) FROM job_queue_pauses") == 0
            return
        assert valid and changed is True
        row = await conn.fetchrow("SELECT queue, reason FROM job_queue_pauses")
        expected_reason = None if reason is None else reason[:MAX_REASON_CHARS]
        assert (row["queue"], row["reason"]) == (queue, expected_reason)
        assert await conn.fetchval("SELECT job_queue_resume($1)", queue) is True
        assert await conn.fetchval("SELECT count(*) FROM job_queue_pauses") == 0


@strategies.examples(40)
@given(queue=strategies.hostile_text, reason=st.none() | strategies.hostile_text)
def test_cli_pause_and_resume_take_a_valid_queue_or_refuse_it_in_one_line(
    module_dsn: str, thread_db: inprocess.ThreadDb, queue: str, reason: str | None
) -> None:
    thread_db.run(fingerprint.clean(thread_db.conn))
    argv = ["pause", *([] if reason is None else [f"--reason={reason}"]), "--", queue]
    run = inprocess.run_cli(argv, module_dsn)
    rows = thread_db.fetch("SELECT queue, reason FROM job_queue_pauses")
    refused_reason = reason == "--" or not strategies.storable(reason or "")  # see above
    if strategies.NAME.fullmatch(queue) is None or refused_reason:
        run.assert_one_line_refusal()
        assert rows == []
        return
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout) == {"queue": queue, "paused": True, "changed": True}
    expected_reason = None if reason is None else reason[:MAX_REASON_CHARS]
    assert [tuple(r) for r in rows] == [(queue, expected_reason)]
    resumed = inprocess.run_cli(["resume", "--", queue], module_dsn)
    assert json.loads(resumed.stdout) == {"queue": queue, "paused": False, "changed": True}
