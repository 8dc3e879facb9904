"""call_function: an allow-listed SQL function as a job (a pg_cron `select fn()` brought over)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.handlers.conftest import Call, RunJob
from worker import errors, store


@pytest.fixture
async def functions(db: store.Store, hsettings: Any) -> None:
    await db.pool.execute(
        """
        INSERT INTO tickers (symbol, current_price) VALUES ('ACME', 10), ('GLOBEX', 4);
        CREATE SCHEMA reporting;
        CREATE FUNCTION reporting.recent_ids() RETURNS SETOF bigint LANGUAGE sql
          AS 'SELECT generate_series(1, 4)::bigint';
        CREATE FUNCTION touch() RETURNS void LANGUAGE sql AS 'SELECT';
        CREATE SEQUENCE warmups;
        CREATE FUNCTION warming_up() RETURNS integer LANGUAGE plpgsql AS $$
        BEGIN
          -- a sequence is not rolled back with the failed call: the second call succeeds
          IF nextval('warmups') = 1 THEN RAISE EXCEPTION 'cache not warm yet'; END IF;
          RETURN 7;
        END $$;
        CREATE FUNCTION slow() RETURNS integer LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(60); RETURN 1; END $$;
        CREATE FUNCTION needs_arg(n int) RETURNS integer LANGUAGE sql AS 'SELECT n';
        CREATE PROCEDURE tidy() LANGUAGE sql AS 'SELECT';
        """
    )
    hsettings(
        call_functions=[
            "refresh_issuer_stats_cache",
            "reporting.recent_ids",
            "touch",
            "warming_up",
            "slow",
            "needs_arg",
            "tidy",
            "gone",
        ]
    )


async def test_an_integer_result_is_the_row_count_in_job_runs(
    db: store.Store, run_job: RunJob, functions: None
) -> None:
    ran = await run_job("call_function", {"function": "refresh_issuer_stats_cache"})
    assert ran.status == "succeeded", ran.error
    assert (ran.last_run["rows_affected"], ran.last_run["notes"]) == (
        2,
        "refresh_issuer_stats_cache(): 2 rows",
    )
    assert await db.pool.fetchval("SELECT count(*) FROM issuer_stats_cache") == 2
    # Schema-qualified or not, it is the same function the allow-list names.
    qualified = await run_job("call_function", {"function": "public.refresh_issuer_stats_cache"})
    assert qualified.status == "succeeded", qualified.error


async def test_a_set_returning_function_counts_its_rows_and_void_counts_none(
    run_job: RunJob, call: Call, functions: None
) -> None:
    ran = await run_job("call_function", {"function": "reporting.recent_ids"})
    assert (ran.status, ran.last_run["rows_affected"]) == ("succeeded", 4)
    assert ran.last_run["notes"] == "reporting.recent_ids(): 4 rows"
    void = await call("call_function", {"function": "touch"})
    assert (void.rows_affected, void.notes) == (0, ["touch(): returned void"])


async def test_a_function_not_on_the_list_fails_for_good(
    db: store.Store, run_job: RunJob, functions: None, hsettings: Any
) -> None:
    hsettings(call_functions=["touch"])
    ran = await run_job("call_function", {"function": "refresh_issuer_stats_cache"}, max_attempts=3)
    assert (ran.status, len(ran.runs)) == ("failed", 1)
    assert ran.error == (
        "PermanentJobError: call_function: function 'refresh_issuer_stats_cache' is not "
        "allowed; HANDLERS_CALL_FUNCTIONS allows ['touch']"
    )
    assert await db.pool.fetchval("SELECT count(*) FROM issuer_stats_cache") == 0
    unknown = await run_job("call_function", {"function": "pg_catalog.pg_terminate_backend"})
    assert unknown.error is not None and "is not allowed" in unknown.error
    injected = await run_job("call_function", {"function": "touch(); DROP TABLE queue; --"})
    assert injected.error is not None and "function: String should match pattern" in injected.error


@pytest.mark.parametrize("name", ["gone", "needs_arg", "tidy"])
async def test_listed_but_not_an_argument_less_function(
    call: Call, functions: None, name: str
) -> None:
    with pytest.raises(errors.PermanentJobError, match=rf"function {name}\(\) .* does not exist"):
        await call("call_function", {"function": name})


async def test_a_function_that_raises_is_retried(run_job: RunJob, functions: None) -> None:
    ran = await run_job("call_function", {"function": "warming_up"}, max_attempts=3)
    assert ran.status == "succeeded", ran.error
    first, second = ran.runs
    assert (first["status"], first["reason"]) == ("retry", "error")
    assert "call_function: warming_up() failed: cache not warm yet" in first["error"]
    assert (second["status"], second["rows_affected"]) == ("succeeded", 7)


async def test_a_slow_function_is_cancelled_by_the_statement_timeout(
    db: store.Store, run_job: RunJob, functions: None, hsettings: Any
) -> None:
    hsettings(call_functions=["slow"], call_function_timeout_s=0.2)
    ran = await run_job("call_function", {"function": "slow"})
    assert ran.status == "failed"
    assert ran.error is not None
    assert "call_function: slow() cancelled (canceling statement due to statement timeout" in (
        ran.error
    )
    assert "HANDLERS_CALL_FUNCTION_TIMEOUT_S is 0.2 s" in ran.error
    # PostgreSQL stopped it (nothing left running), and the timeout did not outlive the call.
    still = await db.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%slow()%' "
        "AND state = 'active' AND pid <> pg_backend_pid()"
    )
    assert still == 0
    async with db.pool.acquire() as conn:
        assert await conn.fetchval("SHOW statement_timeout") == "0"
