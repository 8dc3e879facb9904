"""Hostile JSON payloads through the CLI, the SQL function, plain INSERTs and a running
dispatcher: each is stored as given or refused with a clear error, and a job whose payload
its handler cannot take ends `failed` with a reason; no loop dies, no job is lost."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import asyncpg
import pydantic
from hypothesis import given
from hypothesis import strategies as st

from tests.property import fingerprint, inprocess, strategies
from worker import config, dispatcher, executor, store
from worker.registry import Handler, JobContext, JobResult, Registry


class Strict(pydantic.BaseModel):
    """Refuses everything a generator could produce: only the good job's payload fits."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    marker: Literal["known good"]


class Anything(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


async def strict(ctx: JobContext, payload: Strict) -> JobResult:
    return JobResult(notes=["ran"])


async def echo_back(ctx: JobContext, payload: Anything) -> JobResult:
    # Hands the hostile payload back as the job's result, through the result's encoder.
    return JobResult(data={"echo": payload.model_dump()})


def _registry() -> Registry:
    registry = Registry()
    registry.add(Handler("strict", strict, Strict, max_attempts=1))
    registry.add(Handler("echo_back", echo_back, Anything, max_attempts=1))
    return registry


GOOD = {"marker": "known good"}


def _settings(dsn: str, **overrides: Any) -> config.Settings:
    values: dict[str, Any] = {
        "database_url": dsn,
        "poll_interval_s": 0.05,
        "retry_base_s": 0.0,
        "shutdown_grace_s": 1.0,
        "handler_modules": [],
        "worker_id": "property-worker",
        **overrides,
    }
    return config.load(**values)


def _refused_by_sql(exc: asyncpg.PostgresError) -> None:
    """A clear SQL error: a data exception (22xxx: bad JSON, NUL, lone surrogate, number
    out of range) or the server's stack depth limit (54001), with a message."""
    assert exc.sqlstate[:2] in ("22", "54"), (exc.sqlstate, exc)
    assert str(exc).strip()


# -- the CLI ---------------------------------------------------------------------------------


@strategies.examples(60)
@given(text=strategies.json_text, task=st.sampled_from(["echo", "not_served_here"]))
def test_cli_enqueue_stores_what_it_parsed_or_refuses_in_one_line(
    module_dsn: str, thread_db: inprocess.ThreadDb, text: str, task: str
) -> None:
    before = thread_db.fetch("SELECT count(*) FROM job_queue")[0][0]
    run = inprocess.run_cli(["enqueue", task, "--force", "--payload", text], module_dsn)
    after = thread_db.fetch("SELECT count(*) FROM job_queue")[0][0]
    if run.code != 0:
        run.assert_one_line_refusal()
        assert after == before
        return
    assert after == before + 1
    job_id = json.loads(run.stdout)["job_id"]
    # Compared in PostgreSQL: jsonb prints 1e308 as 309 digits, which Python reads back
    # as an int that is not equal to the float.
    [row] = thread_db.fetch(
        "SELECT task_type, run_type, payload = $2::jsonb AS same FROM job_queue WHERE id = $1",
        job_id,
        json.loads(text),
    )
    assert (row["task_type"], row["run_type"], row["same"]) == (task, "manual", True)


def test_cli_enqueue_refusals_say_what_is_wrong(module_dsn: str) -> None:
    cases = {
        '{"message": NaN}': "NaN is not a JSON value",
        '{"message": "a\\u0000b"}': "NUL character",
        '{"message": "\\ud800"}': "lone surrogate",
        strategies.deep(5000): "nested too deeply",
        "1e400": "too large",
        '{"message": 5}': "invalid payload for 'echo': message: Input should be a valid string",
        "{": "not valid JSON",
    }
    for text, expected in cases.items():
        line = inprocess.run_cli(
            ["enqueue", "echo", "--payload", text], module_dsn
        ).assert_one_line_refusal()
        assert expected in line, (text, line)


# -- SQL -------------------------------------------------------------------------------------


@strategies.examples(80)
@given(
    text=strategies.json_text.filter(strategies.storable),
    how=st.sampled_from(["function", "insert"]),
)
async def test_sql_enqueue_stores_json_text_or_raises_a_clear_sql_error(
    module_db: store.Store, text: str, how: str
) -> None:
    query = (
        "SELECT job_queue_enqueue('hostile', $1::text::jsonb)"
        if how == "function"
        else "INSERT INTO job_queue (task_type, payload) VALUES ('hostile', $1::text::jsonb)"
        " RETURNING id"
    )
    async with fingerprint.rolled_back(module_db) as conn:
        before = await conn.fetchval("SELECT count(*) FROM job_queue")
        try:
            async with conn.transaction():
                job_id = await conn.fetchval(query, text)
        except asyncpg.PostgresError as exc:
            _refused_by_sql(exc)
            assert await conn.fetchval("SELECT count(*) FROM job_queue") == before
            return
        assert await conn.fetchval("SELECT count(*) FROM job_queue") == before + 1
        same = await conn.fetchval(
            "SELECT payload = $2::text::jsonb FROM job_queue WHERE id = $1", job_id, text
        )
        assert same is True


# -- the dispatcher --------------------------------------------------------------------------


async def _insert_raw(db: store.Store, task_type: str, text: str) -> int | None:
    """A plain INSERT of JSON text, as app code would do; None if PostgreSQL refuses it."""
    try:
        return int(
            await db.pool.fetchval(
                "INSERT INTO job_queue (task_type, payload) VALUES ($1, $2::text::jsonb)"
                " RETURNING id",
                task_type,
                text,
            )
        )
    except asyncpg.PostgresError as exc:
        _refused_by_sql(exc)
        return None


@strategies.examples(25)
@given(
    payloads=st.lists(
        st.tuples(st.sampled_from(["strict", "echo_back"]), strategies.json_text),
        min_size=1,
        max_size=4,
    )
)
async def test_dispatcher_fails_hostile_jobs_with_a_reason_and_runs_the_good_one_after(
    module_db: store.Store, module_dsn: str, payloads: list[tuple[str, str]]
) -> None:
    await fingerprint.clean(module_db.pool)
    hostile = {}
    for task_type, text in payloads:
        if strategies.storable(text):
            job_id = await _insert_raw(module_db, task_type, text)
            if job_id is not None:
                hostile[job_id] = task_type
    good = await module_db.enqueue("strict", GOOD)
    worker = dispatcher.Dispatcher(module_db, _registry(), _settings(module_dsn), once=True)
    summary = await asyncio.wait_for(worker.run(), timeout=60)

    assert summary.processed == len(hostile) + 1  # each job ran once (max_attempts 1)
    rows = {r["id"]: r for r in await module_db.pool.fetch("SELECT * FROM job_queue")}
    assert set(rows) == {*hostile, good}  # none lost, none added
    assert rows[good]["status"] == "succeeded"
    runs = await module_db.pool.fetch("SELECT job_id, status, reason FROM job_runs")
    assert sorted(r["job_id"] for r in runs) == sorted(rows)  # one audit row per attempt
    for job_id, task_type in hostile.items():
        row = rows[job_id]
        assert row["status"] in ("succeeded", "failed"), row
        if task_type == "strict":
            assert row["status"] == "failed"
            assert row["last_error"].startswith("PermanentJobError: invalid payload for 'strict'")


class _Recorder:
    """Observer: sets `done` once `expected` outcomes were written."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.outcomes: list[executor.Outcome] = []
        self.done = asyncio.Event()

    def claimed(self, jobs: int, seconds: float) -> None:
        pass

    def finished(self, outcome: executor.Outcome, written: bool) -> None:
        assert written, outcome
        self.outcomes.append(outcome)
        if len(self.outcomes) >= self.expected:
            self.done.set()

    def loop_alive(self, loop: str) -> None:
        pass

    def rescued(self, job: store.Record) -> None:
        raise AssertionError(f"no lease should expire here: {dict(job)}")


WORST_CASES = (
    strategies.deep(10_000),
    strategies.deep(10_000, "object"),
    strategies.deep(990),
    '{"a": ' + strategies.deep(990) + "}",
    json.dumps({"message": "x" * 3_000_000}),
    "[" + ",".join(["1"] * 200_000) + "]",
    "1" + "0" * 5000,
    '{"a": ' + "9" * 20_000 + "}",
    '{"a": 1e308, "b": -1e-320}',
    '{"marker": 5}',
    '{"marker": "known good", "extra": 1}',
    '"known good"',
    "null",
    "[]",
    "{}",
)


async def test_a_running_daemon_survives_the_worst_payloads_and_serves_the_next_job(
    module_db: store.Store, module_dsn: str
) -> None:
    await fingerprint.clean(module_db.pool)
    hostile = [
        await _insert_raw(module_db, task_type, text)
        for text in WORST_CASES
        for task_type in ("strict", "echo_back")
    ]
    assert None not in hostile  # PostgreSQL stores every one of them
    recorder = _Recorder(len(hostile) + 1)
    worker = dispatcher.Dispatcher(
        module_db, _registry(), _settings(module_dsn, concurrency=4), observer=recorder
    )
    task = asyncio.create_task(worker.run())
    try:
        good = await module_db.enqueue("strict", GOOD)  # after the hostile ones
        await asyncio.wait_for(recorder.done.wait(), timeout=30)
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, timeout=30)
    statuses = dict(await module_db.pool.fetch("SELECT id, status FROM job_queue"))
    assert set(statuses) == {*hostile, good}
    assert statuses[good] == "succeeded"
    assert all(statuses[job_id] in ("succeeded", "failed") for job_id in hostile)
    reasons = {(o.job.task_type, o.verdict.reason) for o in recorder.outcomes if o.job.id != good}
    assert ("strict", "permanent_error") in reasons
    failed_strict = await module_db.pool.fetch(
        "SELECT last_error FROM job_queue WHERE task_type = 'strict' AND id <> $1", good
    )
    assert len(failed_strict) == len(WORST_CASES)
    for row in failed_strict:
        assert row["last_error"].startswith("PermanentJobError: invalid payload for 'strict'")
