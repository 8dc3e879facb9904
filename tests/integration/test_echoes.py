"""A refused argument is never echoed whole: every SQL function the migrations create,
called with a 10 MB value in each of its text and jsonb arguments, answers with a short
error (or none). The functions are enumerated from the catalog, so a new one is checked
too."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from worker import store

BIG = "x" * 10_000_000
MAX_ERROR_CHARS = 1000

# A valid value for each argument named so, so that the call reaches the check of the one
# argument that carries the 10 MB value; arguments not listed get NULL.
VALID = {
    "name": "probe_schedule",
    "cron": "@daily",
    "timezone": "UTC",
    "tz": "UTC",
    "expr": "@daily",
    "task_type": "echo",
    "queue": "default",
    "missed": "latest",
    "payload": "{}",
    "status": "pending",
    "priority": "0",
    "max_rows": "10",
}
_TEXT_TYPES = {"text", "jsonb", "name", "character varying", "regprocedure"}


async def _functions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT p.proname, p.oid::regprocedure::text AS signature,
               coalesce(p.proargnames, '{}') AS names,
               array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t) AS types
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' AND p.prokind = 'f'
           AND p.prorettype <> 'trigger'::regtype
         ORDER BY p.proname
        """
    )


def _calls(function: asyncpg.Record) -> list[tuple[str, str, Any]]:
    """(argument name, SQL, parameter): one call per text-like argument."""
    names = list(function["names"]) + [""] * len(function["types"])
    calls = []
    for index, kind in enumerate(function["types"]):
        if kind not in _TEXT_TYPES:
            continue
        args = []
        for other, (name, other_kind) in enumerate(zip(names, function["types"], strict=False)):
            if other == index:
                args.append(f"$1::{kind}")
            elif name in VALID:
                args.append(f"'{VALID[name]}'::{other_kind}")
            else:
                args.append(f"NULL::{other_kind}")
        parameter = json.dumps(BIG) if kind == "jsonb" else BIG
        # Counted, not returned: some results have types the client cannot decode.
        call = f"{function['proname']}({', '.join(args)})"
        calls.append((names[index], f"SELECT count(*) FROM (SELECT {call}) AS called", parameter))
    return calls


def _error_text(exc: asyncpg.PostgresError) -> str:
    return " ".join(str(part or "") for part in (str(exc), getattr(exc, "detail", ""), exc.hint))


@pytest.mark.parametrize("existing_schedule", [False, True])
async def test_no_function_echoes_a_10_mb_argument(
    db: store.Store, existing_schedule: bool
) -> None:
    """With the schedule absent the definers refuse the name; with it present, the other
    fields reach the validators."""
    async with db.pool.acquire() as conn:
        if existing_schedule:
            await conn.execute(
                "INSERT INTO job_schedules (name, cron, task_type) "
                "VALUES ('probe_schedule', '@daily', 'echo')"
            )
        functions = await _functions(conn)
        assert {"job_schedule_create", "job_schedule_update", "job_queue_pause"} <= {
            f["proname"] for f in functions
        }
        refused, long_errors = 0, []
        for function in functions:
            for argument, sql, parameter in _calls(function):
                try:
                    async with conn.transaction():
                        await conn.fetchval(sql, parameter)
                except asyncpg.PostgresError as exc:
                    refused += 1
                    text = _error_text(exc)
                    if len(text) > MAX_ERROR_CHARS:
                        long_errors.append((function["signature"], argument, len(text)))
        assert refused > 10  # the probe reaches the checks, not only NULL refusals
        assert long_errors == []


async def test_direct_writes_to_job_schedules_are_refused_shortly(db: store.Store) -> None:
    """The trigger's refusal of a row written with plain SQL is cut the same way."""
    for column in ("name", "cron", "timezone", "task_type", "queue", "missed"):
        values = {"name": "probe_schedule", "cron": "@daily", "task_type": "echo", column: BIG}
        with pytest.raises(asyncpg.PostgresError) as refused:
            await db.pool.execute(
                "INSERT INTO job_schedules (name, cron, task_type, timezone, queue, missed) "
                "VALUES ($1, $2, $3, coalesce($4, 'UTC'), coalesce($5, 'default'), "
                "coalesce($6, 'latest'))",
                values["name"],
                values["cron"],
                values["task_type"],
                values.get("timezone"),
                values.get("queue"),
                values.get("missed"),
            )
        text = _error_text(refused.value)
        assert len(text) < MAX_ERROR_CHARS, (column, len(text))
        assert "x" * 64 + "..." in text or "longer than" in text, (column, text[:200])
