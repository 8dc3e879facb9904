"""Cron strings, timezones and whole schedule definitions of any text: worker/scheduler.py's
checks and the SQL functions of schema/0002_schedules.sql refuse the same things in the same
words (the scheduler's docstring says "word for word"), the admin functions accept exactly
what Python accepts, and whatever they store the scheduler can run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
from hypothesis import given
from hypothesis import strategies as st

from tests.property import fingerprint, inprocess, strategies
from worker import scheduler, store

NOW = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # a DST night in Europe
VALID = {
    "name": "victim",
    "cron": "*/5 * * * *",
    "timezone": "Europe/London",
    "task_type": "echo",
    "payload": {"message": "hi"},
    "queue": "default",
    "priority": 0,
    "max_attempts": None,
    "missed": "latest",
}
_FIELDS = tuple(VALID)


def _sometimes(valid: Any, hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the valid value, so checks further down the list are reached too."""
    return st.one_of(st.just(valid), st.just(valid), hostile)


definitions = st.fixed_dictionaries(
    {
        "name": _sometimes("victim", strategies.hostile_text),
        "cron": _sometimes("*/5 * * * *", strategies.cron_text),
        "timezone": _sometimes("Europe/London", strategies.timezone_text),
        "task_type": _sometimes("echo", strategies.hostile_text),
        "payload": _sometimes({"message": "hi"}, strategies.json_values),
        "queue": _sometimes("default", strategies.hostile_text),
        "priority": _sometimes(0, st.integers(-(2**31), 2**31 - 1)),
        "max_attempts": _sometimes(None, st.integers(-(2**31), 2**31 - 1)),
        "missed": _sometimes("latest", st.sampled_from(["skip", "all"]) | strategies.hostile_text),
    }
)


def _receivable(fields: dict[str, Any]) -> bool:
    """asyncpg can send these values (no NUL, no lone surrogate in text or JSON)."""
    text = json.dumps(fields, ensure_ascii=False)
    return strategies.storable(text) and "\\u0000" not in text


async def _sql_check(db: store.Store, function: str, *args: Any) -> str | None:
    placeholders = ", ".join(f"${i}" for i in range(1, len(args) + 1))
    result: str | None = await db.pool.fetchval(f"SELECT {function}({placeholders})", *args)
    return result


@strategies.examples(300)
@given(expr=strategies.cron_text)
async def test_cron_checks_agree_word_for_word(module_db: store.Store, expr: str) -> None:
    problem = scheduler.cron_error(expr)
    if not strategies.storable(expr):
        assert problem is not None  # and PostgreSQL could not even receive it
        return
    assert await _sql_check(module_db, "job_schedule_cron_error", expr) == problem, expr


@strategies.examples(300)
@given(tz=strategies.timezone_text)
async def test_timezone_checks_agree_word_for_word(module_db: store.Store, tz: str) -> None:
    problem = scheduler.timezone_error(tz)
    if not strategies.storable(tz):
        assert problem is not None
        return
    assert await _sql_check(module_db, "job_schedule_timezone_error", tz) == problem, tz


@strategies.examples(200)
@given(fields=definitions)
async def test_schedule_checks_agree_word_for_word(
    module_db: store.Store, fields: dict[str, Any]
) -> None:
    problem = scheduler.schedule_problem(fields)
    if not _receivable(fields):
        return
    sql = await _sql_check(
        module_db,
        "job_schedule_problem",
        *(fields[f] for f in _FIELDS),
    )
    assert sql == problem, fields


def _assert_runnable(row: asyncpg.Record) -> None:
    """What the SQL functions stored, the scheduler can plan (it uses Python's rules)."""
    todo = scheduler.plan(
        row["cron"],
        row["timezone"],
        row["missed"],
        last_tick_at=NOW,
        now=NOW,
        grace_s=300,
        backfill_max=10,
    )
    assert todo.next_tick_at > NOW


def _refused_like_python(exc: asyncpg.PostgresError, problem: str | None, priority: Any) -> None:
    """The trigger's 22023 in Python's words; or, for a priority beyond smallint, the
    column's own 22003 "smallint out of range": the value is cast before the trigger runs
    (both refuse it, in other words; the CLI never sends one: it checks -1000..1000)."""
    if exc.sqlstate == "22003":
        assert not -(2**15) <= priority < 2**15, exc
        assert problem is not None
        return
    assert exc.sqlstate == "22023", exc
    assert str(exc) == problem


@strategies.examples(150)
@given(fields=definitions)
async def test_create_accepts_exactly_what_python_accepts_and_stores_it_verbatim(
    module_db: store.Store, fields: dict[str, Any]
) -> None:
    if not _receivable(fields):
        return
    # job_schedule_create trims spaces around the cron expression, then checks it.
    expected = {**fields, "cron": fields["cron"].strip(" ")}
    problem = scheduler.schedule_problem(expected)
    async with fingerprint.rolled_back(module_db) as conn:
        try:
            async with conn.transaction():
                row = await conn.fetchrow(
                    "SELECT * FROM job_schedule_create(name => $1, cron => $2, timezone => $3,"
                    " task_type => $4, payload => $5, queue => $6, priority => $7,"
                    " max_attempts => $8, missed => $9)",
                    *(fields[f] for f in _FIELDS),
                )
        except asyncpg.PostgresError as exc:
            _refused_like_python(exc, problem, fields["priority"])
            assert await conn.fetchval("SELECT count(*) FROM job_schedules") == 0
            return
    assert problem is None, (problem, fields)
    assert {f: row[f] for f in _FIELDS} == expected
    _assert_runnable(row)


@strategies.examples(150)
@given(
    cron=st.none() | strategies.cron_text,
    tz=st.none() | strategies.timezone_text,
    how=st.sampled_from(["retime", "update"]),
)
async def test_retime_and_update_accept_exactly_what_python_accepts(
    module_db: store.Store, cron: str | None, tz: str | None, how: str
) -> None:
    if cron is None and tz is None:
        cron = "0 * * * *"
    if not strategies.storable(cron or "") or not strategies.storable(tz or ""):
        return
    changes = {k: v for k, v in (("cron", cron), ("timezone", tz)) if v is not None}
    if "cron" in changes:
        changes["cron"] = changes["cron"].strip(" ")
    problem = scheduler.schedule_problem(changes)
    query = (
        "SELECT * FROM job_schedule_retime('victim', $1, $2)"
        if how == "retime"
        else "SELECT * FROM job_schedule_update('victim', cron => $1, timezone => $2)"
    )
    async with fingerprint.rolled_back(module_db) as conn:
        await conn.execute(
            "SELECT FROM job_schedule_create('victim', $1, $2, $3::jsonb, $4)",
            VALID["cron"],
            VALID["task_type"],
            VALID["payload"],
            VALID["timezone"],
        )
        try:
            async with conn.transaction():
                row = await conn.fetchrow(query, cron, tz)
        except asyncpg.PostgresError as exc:
            assert exc.sqlstate == "22023", exc
            assert str(exc) == problem
            stored = await conn.fetchrow("SELECT cron, timezone FROM job_schedules")
            assert tuple(stored) == (VALID["cron"], VALID["timezone"])
            return
    assert problem is None, (problem, changes)
    assert row["cron"] == changes.get("cron", VALID["cron"])
    assert row["timezone"] == changes.get("timezone", VALID["timezone"])
    _assert_runnable(row)


@strategies.examples(40)
@given(
    name=_sometimes("nightly", strategies.hostile_text),
    cron=_sometimes("0 6 * * *", strategies.cron_text),
    tz=_sometimes("Europe/London", strategies.timezone_text),
    queue=_sometimes("default", strategies.hostile_text),
)
def test_cli_schedules_add_stores_what_python_accepts_or_refuses_in_one_line(
    module_dsn: str, thread_db: inprocess.ThreadDb, *, name: str, cron: str, tz: str, queue: str
) -> None:
    thread_db.run(fingerprint.clean(thread_db.conn))
    argv = ["schedules", "add", f"--cron={cron}", f"--timezone={tz}", f"--queue={queue}"]
    argv += ["--task=echo", '--payload={"message": "hi"}', "--", name]
    run = inprocess.run_cli(argv, module_dsn)
    rows = thread_db.fetch("SELECT name, cron, timezone, queue FROM job_schedules")
    fields = {"name": name, "cron": cron, "timezone": tz, "queue": queue}
    if scheduler.schedule_problem(fields) is not None:
        run.assert_one_line_refusal()
        assert rows == []
        return
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["schedule"]["name"] == name
    # The CLI sends the expression as given; job_schedule_create trims spaces around it.
    assert [tuple(r) for r in rows] == [(name, cron.strip(" "), tz, queue)]


@strategies.examples(30)
@given(
    action=st.sampled_from(["set", "pause", "resume", "remove", "history"]),
    name=strategies.hostile_text,
)
def test_cli_schedule_actions_on_any_name_answer_in_one_line(
    module_dsn: str, thread_db: inprocess.ThreadDb, action: str, name: str
) -> None:
    extra = ["--cron=0 7 * * *"] if action == "set" else []
    run = inprocess.run_cli(["schedules", action, *extra, "--", name], module_dsn)
    if run.code == 0:  # only history answers for a schedule that does not exist
        assert action == "history"
        assert "no runs of schedule" in run.stdout
    else:
        line = run.assert_one_line_refusal()
        # A name outside the grammar is refused before the database is asked.
        assert "invalid schedule name" in line or "no schedule named" in line, line


async def test_posix_timezone_strings_are_refused_in_sql_as_in_python(
    module_db: store.Store,
) -> None:
    """What 0006_hardening.sql fixes, as fixed examples: PostgreSQL's timezone setting
    takes POSIX strings such as FOO/BAR5, which are no IANA zone (the scheduler refuses
    them, so a schedule stored with one would never run)."""
    for tz in ("FOO/BAR5", "Foo/Bar5", "Europe/London5", "X/Y-1", "ABC/DEF+3", "Etc/GMT+15"):
        expected = f"unknown timezone '{tz}': use an IANA name such as UTC or Europe/London"
        assert scheduler.timezone_error(tz) == expected
        assert await _sql_check(module_db, "job_schedule_timezone_error", tz) == expected
    assert await _sql_check(module_db, "job_schedule_timezone_error", "etc/gmt+5") == (
        "unknown timezone 'etc/gmt+5': did you mean 'Etc/GMT+5'?"
    )
