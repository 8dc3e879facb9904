"""The demo's seed data makes the business handlers do real work, then nothing on a re-run."""

from __future__ import annotations

import re
from typing import Any

from handlers import demo_data, game_platform, wearables
from tests.handlers.conftest import drain
from worker import store


async def run_demo(db: store.Store, make_settings: Any) -> dict[str, Any]:
    jobs = await demo_data.prepare(db.pool)
    for task_type, payload in jobs:
        await db.enqueue(task_type, payload)
    task_types = {t for t, _ in jobs} | {"process_orders"}
    summary = await drain(db, make_settings(), *sorted(task_types))
    assert summary.failed == 0 and summary.retried == 0, summary.results
    return {r["task_type"]: r for r in summary.results}


async def test_demo_jobs_do_real_work_then_nothing_new(db: store.Store, make_settings: Any) -> None:
    first = await run_demo(db, make_settings)
    assert set(first) == {t for t, _ in demo_data.JOBS} | {"process_orders"}
    assert first["process_orders"]["rows_affected"] == 5
    assert first["rollup_usage"]["rows_affected"] == 2
    assert first["snapshot_prices"]["rows_affected"] == 3
    assert first["auto_complete_challenges"]["notes"] == [
        "closed 2 challenge(s): 1 completed, 1 failed (threshold 80%); 6 member notification(s)"
    ]
    assert "from 2 user(s), 2450 character(s)" in first["rollup_usage"]["notes"][0]  # no login
    assert first["sync_wearables"]["notes"] == [wearables.PLACEHOLDER_NOTE]
    assert first["game_platform_sync"]["notes"] == [game_platform.NOT_CONFIGURED_NOTE]
    assert first["call_function"]["notes"] == ["refresh_issuer_stats_cache(): 3 rows"]
    assert await db.pool.fetchval("SELECT count(*) FROM issuer_stats_cache") == 3
    # Runs alongside auto_complete_challenges: before or after it closed the challenges.
    assert re.fullmatch(
        r"challenge_stats: [12] rows \(plain\)", first["refresh_metrics"]["notes"][0]
    )
    statuses = await db.pool.fetch("SELECT status, count(*) FROM queue GROUP BY 1 ORDER BY 1")
    assert [tuple(r) for r in statuses] == [("completed", 3), ("failed", 2)]

    again = await run_demo(db, make_settings)
    assert again["process_orders"]["rows_affected"] == 5  # each run places new orders
    for task_type in ("rollup_usage", "snapshot_prices", "auto_complete_challenges"):
        assert again[task_type]["rows_affected"] == 0, task_type
