"""call_function: run an allow-listed SQL function as a job, in place of a pg_cron
`select some_function()`.

The payload names the function (`{"function": "refresh_issuer_stats_cache"}`, optionally
schema-qualified); it runs only if it is one of HANDLERS_CALL_FUNCTIONS, compared as the
functions PostgreSQL resolves both names to (so `public.f` and `f` are the same function).
Only argument-less functions (not procedures) are called, as `SELECT f()` (or
`SELECT count(*) FROM f()` for a set-returning one), in a transaction whose statement
timeout is HANDLERS_CALL_FUNCTION_TIMEOUT_S: PostgreSQL cancels a call that runs too long,
well before the handler's own timeout would leave a connection mid-statement. A function
that raises, or is cancelled, fails the attempt and the engine retries it with backoff; a
name that is not allowed, or does not exist, fails the job for good.

Row count in job_runs: the value of an integer-returning function, the rows of a
set-returning one, otherwise 0. The call commits as one transaction: what the function did
is kept exactly when the job succeeds.
"""

from __future__ import annotations

import asyncpg

from handlers import payloads, sqlnames
from handlers import settings as handler_settings
from handlers.settings import SqlName
from worker import errors, queries
from worker.registry import JobContext, JobResult, handler

Q = queries.load("handlers", "queries.sql")


class CallFunctionPayload(payloads.Payload):
    function: SqlName
    """A function of HANDLERS_CALL_FUNCTIONS, e.g. `public.refresh_issuer_stats_cache`."""


async def allowed(db: sqlnames.Executor, name: str) -> sqlnames.Function:
    """The function `name` resolves to, if HANDLERS_CALL_FUNCTIONS allows it; else
    PermanentJobError saying why."""
    conf = handler_settings.get()
    func = await sqlnames.function(db, name)
    if func is None and name in conf.call_functions:
        raise errors.PermanentJobError(
            f"call_function: function {name}() (HANDLERS_CALL_FUNCTIONS) does not exist "
            "(or takes arguments, or is a procedure)"
        )
    if func is not None:
        for entry in conf.call_functions:
            listed = await sqlnames.function(db, entry)
            if listed is not None and listed.oid == func.oid:
                return func
    raise errors.PermanentJobError(
        f"call_function: function {name!r} is not allowed; HANDLERS_CALL_FUNCTIONS allows "
        f"{conf.call_functions or 'none'}"
    )


@handler("call_function", payload=CallFunctionPayload, max_attempts=3, timeout_s=3600)
async def call_function(ctx: JobContext, payload: CallFunctionPayload) -> JobResult:
    """Call one allow-listed SQL function under a statement timeout; record its row count."""
    func = await allowed(ctx.pool, payload.function)
    timeout_s = handler_settings.get().call_function_timeout_s
    try:
        async with ctx.pool.acquire() as db, db.transaction():
            await db.execute(Q["set_statement_timeout"], f"{round(timeout_s * 1000)}ms")
            rows = await sqlnames.call(db, func)
    except asyncpg.QueryCanceledError as exc:
        raise errors.JobError(
            f"call_function: {func.call} cancelled ({exc}; HANDLERS_CALL_FUNCTION_TIMEOUT_S "
            f"is {timeout_s:g} s)"
        ) from None
    except asyncpg.PostgresError as exc:
        raise errors.JobError(f"call_function: {func.call} failed: {exc}") from None
    if func.returns_set or func.returns in sqlnames.INTEGER_TYPES:
        note = f"{func.call}: {rows} rows"
    else:
        note = f"{func.call}: returned {func.returns}"
    return JobResult(
        rows_affected=rows,
        notes=[note],
        data={"function": func.call, "returns": func.returns, "rows": rows},
    )
