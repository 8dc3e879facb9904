"""refresh_metrics: allow-listed materialized views and refresh functions."""

from __future__ import annotations

from typing import Any

import pytest

from handlers import metrics
from tests.handlers.conftest import Call, RunJob
from worker import errors, store


@pytest.fixture
async def views(db: store.Store, hsettings: Any) -> None:
    await db.pool.execute(
        """
        CREATE TABLE scores (team text, points int);
        INSERT INTO scores VALUES ('red', 1), ('red', 2), ('blue', 5);
        CREATE MATERIALIZED VIEW team_totals AS
          SELECT team, sum(points) AS points FROM scores GROUP BY team;
        CREATE UNIQUE INDEX team_totals_team ON team_totals (team);
        CREATE SCHEMA reporting;
        CREATE MATERIALIZED VIEW reporting.score_rows AS SELECT 100 / points AS inverse FROM scores;
        """
    )
    hsettings(
        metrics_views=["team_totals", "reporting.score_rows", "challenge_stats"],
        metrics_functions=["refresh_challenge_stats"],
    )


async def test_refreshes_views_and_calls_functions_with_rows_in_notes(
    db: store.Store, run_job: RunJob, views: None
) -> None:
    await db.pool.execute("INSERT INTO scores VALUES ('green', 4)")
    ran = await run_job("refresh_metrics")
    assert ran.status == "succeeded", ran.error
    assert ran.last_run["notes"].splitlines() == [
        "team_totals: 3 rows (concurrently)",
        "reporting.score_rows: 4 rows (plain)",  # no unique index
        "challenge_stats: 0 rows (plain)",  # created WITH NO DATA: the first refresh is plain
        "refresh_challenge_stats(): 0 rows",
    ]
    assert ran.last_run["rows_affected"] == 7
    assert await db.pool.fetchval("SELECT points FROM team_totals WHERE team = 'green'") == 4


async def test_rerun_changes_nothing_and_uses_concurrently_once_populated(
    db: store.Store, call: Call, views: None
) -> None:
    await call("refresh_metrics")
    before = await db.pool.fetch("SELECT * FROM team_totals ORDER BY team")
    again = await call("refresh_metrics", {"views": ["challenge_stats", "team_totals"]})
    assert again.notes == [
        "challenge_stats: 0 rows (concurrently)",
        "team_totals: 2 rows (concurrently)",
    ]
    assert await db.pool.fetch("SELECT * FROM team_totals ORDER BY team") == before


async def test_payload_picks_from_the_allow_lists_only(
    db: store.Store, run_job: RunJob, views: None
) -> None:
    only = await run_job("refresh_metrics", {"functions": ["refresh_challenge_stats"]})
    assert only.last_run["notes"] == "refresh_challenge_stats(): 0 rows"
    refused = await run_job("refresh_metrics", {"views": ["team_totals", "pg_catalog.pg_class"]})
    assert refused.error == (
        "PermanentJobError: refresh_metrics: view(s) 'pg_catalog.pg_class' not allowed; "
        "HANDLERS_METRICS_VIEWS allows ['team_totals', 'reporting.score_rows', 'challenge_stats']"
    )
    injected = await run_job("refresh_metrics", {"views": ["team_totals; DROP TABLE scores"]})
    assert injected.error is not None and "views.0: String should match pattern" in injected.error
    assert await db.pool.fetchval("SELECT count(*) FROM scores") == 3


async def test_a_missing_view_fails_before_anything_is_refreshed(
    db: store.Store, call: Call, views: None, hsettings: Any
) -> None:
    hsettings(metrics_views=["team_totals", "gone"])
    await db.pool.execute("INSERT INTO scores VALUES ('green', 4)")
    with pytest.raises(
        errors.PermanentJobError, match=r"materialized view 'gone' .* does not exist"
    ):
        await call("refresh_metrics")
    assert await db.pool.fetchval("SELECT count(*) FROM team_totals") == 2  # untouched


async def test_failure_midway_leaves_each_view_refreshed_or_as_it_was(
    db: store.Store, run_job: RunJob, views: None
) -> None:
    await db.pool.execute("INSERT INTO scores VALUES ('green', 4), ('black', 0)")
    ran = await run_job("refresh_metrics", {"views": ["team_totals", "reporting.score_rows"]})
    assert ran.status == "failed"
    assert ran.error is not None and "division by zero" in ran.error
    assert await db.pool.fetchval("SELECT count(*) FROM team_totals") == 4  # refreshed
    assert await db.pool.fetchval("SELECT count(*) FROM reporting.score_rows") == 3  # as it was


async def test_nothing_configured_is_a_successful_note(run_job: RunJob) -> None:
    ran = await run_job("refresh_metrics")
    assert ran.status == "succeeded"
    assert (ran.last_run["rows_affected"], ran.last_run["notes"]) == (
        0,
        metrics.NOT_CONFIGURED_NOTE,
    )


async def test_a_set_returning_function_reports_its_rows(
    db: store.Store, call: Call, hsettings: Any
) -> None:
    await db.pool.execute(
        "CREATE FUNCTION refresh_team_stats() RETURNS SETOF int LANGUAGE sql "
        "AS 'SELECT generate_series(1, 3)'"
    )
    hsettings(metrics_functions=["refresh_team_stats", "refresh_metric_views"])
    result = await call("refresh_metrics", {"functions": ["refresh_team_stats"]})
    assert result.notes == ["refresh_team_stats(): 3 rows"]
    with pytest.raises(errors.PermanentJobError, match=r"function refresh_metric_views\(\)"):
        await call("refresh_metrics")
