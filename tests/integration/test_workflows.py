"""Workflows against a real PostgreSQL: jobs that wait for their parents (depends_on), groups
with a finalizer, the failure policies, admin cancels and rescues of parents, the sweep
that repairs a release a crash prevented, and three workers racing over chains and
diamonds while a ledger in the database records when each handler ran."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
import pydantic
import pytest

from tests.integration import test_api, test_dashboard_routes
from tests.integration.test_schema import _claim_args, _rows_read
from tests.support import factories
from worker import dispatcher, errors, maintenance, store
from worker.admin import jobs as admin_jobs
from worker.admin import status as admin_status
from worker.admin.store import Actor, AdminStore, JobFilter
from worker.queries import QUERIES
from worker.registry import Handler, JobContext, JobResult, JobSpec, Registry, enqueue_group

LEDGER = """
CREATE TABLE IF NOT EXISTS ledger (
  id bigint generated always as identity, job_id bigint, attempt int,
  started timestamptz, ended timestamptz
)
"""
LIVE = "SELECT count(*) FROM job_queue WHERE status IN ('waiting', 'pending', 'running')"


class Step(pydantic.BaseModel):
    fail: bool = False
    flaky: bool = False
    seconds: float = 0.0


async def _ledger_start(ctx: JobContext) -> int:
    return int(
        await ctx.pool.fetchval(
            "INSERT INTO ledger (job_id, attempt, started) VALUES ($1, $2, clock_timestamp())"
            " RETURNING id",
            ctx.job_id,
            ctx.attempt,
        )
    )


async def step(ctx: JobContext, payload: Step) -> JobResult:
    """Record when this attempt ran (the database's clock); fail when told to."""
    row_id = await _ledger_start(ctx)
    if payload.seconds:
        await anyio.sleep(payload.seconds)
    await ctx.pool.execute("UPDATE ledger SET ended = clock_timestamp() WHERE id = $1", row_id)
    if payload.fail:
        raise errors.PermanentJobError("told to fail")
    if payload.flaky and ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return JobResult(data={"job": ctx.job_id})


async def collect(ctx: JobContext, payload: Step) -> JobResult:
    """A finalizer: what its parents were when it ran."""
    row_id = await _ledger_start(ctx)
    parents = await ctx.parent_results()
    await ctx.pool.execute("UPDATE ledger SET ended = clock_timestamp() WHERE id = $1", row_id)
    return JobResult(data={"parents": [[p.id, p.task_type, p.status, p.result] for p in parents]})


def registry() -> Registry:
    reg = Registry()
    reg.add(Handler("step", step, Step, 3, 30))
    reg.add(Handler("collect", collect, Step, 3, 30))
    return reg


async def enqueue(
    db: store.Store,
    task_type: str = "step",
    payload: dict[str, Any] | None = None,
    depends_on: list[int] | None = None,
    policy: str = "cancel",
) -> int:
    return int(
        await db.pool.fetchval(
            "SELECT job_queue_enqueue($1, $2, depends_on => $3, on_parent_failure => $4)",
            task_type,
            payload or {},
            depends_on,
            policy,
        )
    )


async def status(db: store.Store, *job_ids: int) -> list[str]:
    rows = await db.pool.fetch(
        "SELECT id, status FROM job_queue WHERE id = ANY($1::bigint[])", list(job_ids)
    )
    by_id = {r["id"]: r["status"] for r in rows}
    return [by_id[i] for i in job_ids]


@pytest.fixture
async def ledger(db: store.Store) -> store.Store:
    await db.pool.execute(LEDGER)
    return db


async def run_workers(stores: list[store.Store], make_settings: Any, timeout_s: float = 60) -> None:
    """Dispatchers on `stores` until no job is waiting, pending or running."""
    settings = make_settings(concurrency=8, claim_batch=4, poll_interval_s=0.05)
    workers = [
        dispatcher.Dispatcher(db, registry(), settings.model_copy(update={"worker_id": f"w{n}"}))
        for n, db in enumerate(stores)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        async with asyncio.timeout(timeout_s):
            while await stores[0].pool.fetchval(LIVE):  # noqa: ASYNC110 - polls the database
                await asyncio.sleep(0.05)
    finally:
        for w in workers:
            w.request_stop()
        await asyncio.gather(*tasks)


async def assert_no_child_ran_early(db: store.Store) -> int:
    """Every attempt of every job with parents started after each parent's success was
    committed: after the parent's handler ended and after its finished_at; and only
    once every parent had succeeded (or, for on_parent_failure='run', was final).
    Returns how many (child, parent) edges it checked."""
    rows = await db.pool.fetch(
        """
        SELECT d.child_id, d.parent_id, c.on_parent_failure, p.status AS parent_status,
               p.finished_at AS parent_finished, c.status AS child_status,
               (SELECT max(l.ended) FROM ledger l WHERE l.job_id = d.parent_id) AS parent_ended,
               (SELECT min(l.started) FROM ledger l WHERE l.job_id = d.child_id) AS child_started
          FROM job_dependencies d
          JOIN job_queue c ON c.id = d.child_id
          JOIN job_queue p ON p.id = d.parent_id
        """
    )
    for r in rows:
        if r["child_started"] is None:
            assert r["child_status"] == "cancelled", dict(r)
            continue
        if r["on_parent_failure"] != "run":
            assert r["parent_status"] == "succeeded", dict(r)
        assert r["parent_finished"] is not None, dict(r)
        assert r["child_started"] > r["parent_finished"], dict(r)
        if r["parent_ended"] is not None:
            assert r["child_started"] > r["parent_ended"], dict(r)
    return len(rows)


# -- enqueue ------------------------------------------------------------------------------


async def test_enqueue_decides_from_the_parents_it_locks(db: store.Store) -> None:
    done = await factories.make_job(db, task_type="step", status="succeeded")
    failed = await factories.make_job(db, task_type="step", status="failed")
    live = await enqueue(db)
    assert await status(
        db,
        await enqueue(db, depends_on=[done]),
        await enqueue(db, depends_on=[done, live]),
        await enqueue(db, depends_on=[failed, live]),
        await enqueue(db, depends_on=[failed, live], policy="run"),
        await enqueue(db, depends_on=[failed, done], policy="run"),
        await enqueue(db, depends_on=[]),
    ) == ["pending", "waiting", "cancelled", "waiting", "pending", "pending"]
    flags = await db.pool.fetch(
        "SELECT id, has_children FROM job_queue WHERE id = ANY($1::bigint[]) ORDER BY id",
        [done, failed, live],
    )
    # only the unfinished parent is marked: a final one's children were decided at once
    assert [r["has_children"] for r in flags] == [False, False, True]
    cancelled = await db.pool.fetchval(
        "SELECT max(id) FROM job_queue WHERE status = 'cancelled' AND task_type = 'step'"
    )
    [run] = await factories.runs(db, cancelled)
    assert (run["status"], run["reason"], run["error"]) == (
        "cancelled",
        "parent_failed",
        f"parent job {failed} failed",
    )


async def test_enqueue_refuses_missing_parents_and_bad_arguments(db: store.Store) -> None:
    live = await enqueue(db)
    with pytest.raises(asyncpg.InvalidParameterValueError) as missing:
        await enqueue(db, depends_on=[live, 10**9 + 1, 10**9 + 2, *range(10**9 + 3, 10**9 + 9)])
    assert str(missing.value) == (
        "depends_on: no job 1000000001, 1000000002, 1000000003, 1000000004, 1000000005 (and 3 more)"
    )
    with pytest.raises(asyncpg.InvalidParameterValueError, match="must be cancel or run"):
        await enqueue(db, depends_on=[live], policy="x" * 10_000)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="cannot have a dedupe_key"):
        await db.pool.fetchval(
            "SELECT job_queue_enqueue('step', dedupe_key => 'k', depends_on => $1)", [live]
        )
    with pytest.raises(asyncpg.InvalidParameterValueError) as long_name:
        await db.pool.fetchval("SELECT job_queue_enqueue($1)", "t" * 100_000)
    assert len(str(long_name.value)) < 200
    assert await db.pool.fetchval("SELECT count(*) FROM job_queue") == 1


async def test_enqueue_keeps_every_earlier_argument(db: store.Store) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    job_id = await db.pool.fetchval(
        "SELECT job_queue_enqueue('step', '{\"a\": 1}', $1, 'mail', 5, 2, 'key-1')", later
    )
    again = await db.pool.fetchval(
        "SELECT job_queue_enqueue('step', '{}', null, 'mail', 0, null, 'key-1')"
    )
    traced = await db.pool.fetchval(
        "SELECT job_queue_enqueue('step', concurrency_key => 'coach-7',"
        ' trace_context => \'{"traceparent": "00-ab-cd-01"}\')'
    )
    row = await factories.job(db, job_id)
    assert again == job_id
    assert (row["queue"], row["priority"], row["max_attempts"], row["run_at"]) == (
        "mail",
        5,
        2,
        later,
    )
    assert row["payload"] == {"a": 1} and row["on_parent_failure"] is None
    other = await factories.job(db, traced)
    assert other["concurrency_key"] == "coach-7"
    assert other["trace_context"] == {"traceparent": "00-ab-cd-01"}


# -- running ------------------------------------------------------------------------------


async def test_chain_runs_each_job_after_its_parent(
    ledger: store.Store, make_settings: Any
) -> None:
    db = ledger
    a = await enqueue(db)
    b = await enqueue(db, depends_on=[a])
    c = await enqueue(db, depends_on=[b])
    assert await status(db, a, b, c) == ["pending", "waiting", "waiting"]
    await run_workers([db], make_settings)
    assert await status(db, a, b, c) == ["succeeded"] * 3
    assert await assert_no_child_ran_early(db) == 2
    flags = await db.pool.fetchval("SELECT count(*) FROM job_queue WHERE has_children")
    assert flags == 0  # released: nothing left for the sweep


async def test_diamond_child_reads_both_parents_results(
    ledger: store.Store, make_settings: Any
) -> None:
    db = ledger
    top = await enqueue(db)
    left = await enqueue(db, payload={"seconds": 0.2}, depends_on=[top])
    right = await enqueue(db, depends_on=[top])
    bottom = await enqueue(db, "collect", depends_on=[left, right])
    await run_workers([db], make_settings)
    assert await status(db, top, left, right, bottom) == ["succeeded"] * 4
    assert await assert_no_child_ran_early(db) == 4
    result = (await factories.job(db, bottom))["result"]
    assert result == {
        "parents": [
            [left, "step", "succeeded", {"job": left}],
            [right, "step", "succeeded", {"job": right}],
        ]
    }


async def test_a_parent_retried_before_it_succeeds_holds_its_child(
    ledger: store.Store, make_settings: Any
) -> None:
    db = ledger
    parent = await enqueue(db, payload={"flaky": True})
    child = await enqueue(db, depends_on=[parent])
    await run_workers([db], make_settings)
    assert await status(db, parent, child) == ["succeeded", "succeeded"]
    parent_runs = [r["status"] for r in await factories.runs(db, parent)]
    assert parent_runs == ["retry", "succeeded"]
    attempts = await db.pool.fetch("SELECT job_id, attempt, started FROM ledger ORDER BY started")
    assert [(r["job_id"], r["attempt"]) for r in attempts] == [(parent, 1), (parent, 2), (child, 1)]
    await assert_no_child_ran_early(db)


async def test_failed_parent_cancels_its_descendants_unless_they_run_anyway(
    ledger: store.Store, make_settings: Any
) -> None:
    db = ledger
    root = await enqueue(db, payload={"fail": True, "seconds": 0.2})
    child = await enqueue(db, depends_on=[root])
    grandchild = await enqueue(db, depends_on=[child])
    # runs anyway, once its other parent (a cancelled job) is final too
    regardless = await enqueue(db, "collect", depends_on=[root, child], policy="run")
    await run_workers([db], make_settings)
    assert await status(db, root, child, grandchild, regardless) == [
        "failed",
        "cancelled",
        "cancelled",
        "succeeded",
    ]
    for job_id, parent in ((child, root), (grandchild, child)):
        [run] = await factories.runs(db, job_id)
        assert (run["status"], run["reason"], run["attempt"]) == ("cancelled", "parent_failed", 0)
        assert run["error"] == f"parent job {parent} {'failed' if parent == root else 'cancelled'}"
    result = (await factories.job(db, regardless))["result"]
    assert [p[2] for p in result["parents"]] == ["failed", "cancelled"]
    ran = await db.pool.fetchval("SELECT array_agg(DISTINCT job_id) FROM ledger")
    assert sorted(ran) == [root, regardless]


async def test_group_finalizer_runs_once_after_every_child_and_sees_each_outcome(
    ledger: store.Store, make_settings: Any
) -> None:
    db = ledger
    group = await enqueue_group(
        db.pool,
        [
            JobSpec("step", {"seconds": 0.1}),
            JobSpec("step", {"fail": True}),
            JobSpec("step", {"seconds": 0.3}, queue="default", priority=1),
        ],
        JobSpec("collect"),
    )
    assert await status(db, *group.children, group.finalizer) == ["pending"] * 3 + ["waiting"]
    await run_workers([db], make_settings)
    assert await status(db, *group.children) == ["succeeded", "failed", "succeeded"]
    final = await factories.job(db, group.finalizer)
    assert (final["status"], final["attempts"], final["on_parent_failure"]) == (
        "succeeded",
        1,
        "run",
    )
    assert [p[:3] for p in final["result"]["parents"]] == [
        [group.children[0], "step", "succeeded"],
        [group.children[1], "step", "failed"],
        [group.children[2], "step", "succeeded"],
    ]
    await assert_no_child_ran_early(db)


async def test_a_group_is_all_or_nothing(db: store.Store) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match="group job 2: unknown field"):
        await db.pool.fetchval(
            "SELECT job_queue_enqueue_group($1::text::jsonb, $2::text::jsonb)",
            json.dumps([{"task_type": "step"}, {"task_type": "step", "paylod": {}}]),
            json.dumps({"task_type": "collect"}),
        )
    with pytest.raises(asyncpg.InvalidParameterValueError, match="non-empty JSON array"):
        await enqueue_group(db.pool, [], JobSpec("collect"))
    assert await db.pool.fetchval("SELECT count(*) FROM job_queue") == 0


# -- admins and the rescuer ---------------------------------------------------------------


async def test_admin_cancel_of_a_parent_releases_its_children(
    db: store.Store, admin: AdminStore
) -> None:
    parent = await enqueue(db)
    doomed = await enqueue(db, depends_on=[parent])
    regardless = await enqueue(db, depends_on=[parent], policy="run")
    actor = Actor("cli:test")
    await admin_jobs.cancel(admin, actor, parent)
    assert await status(db, parent, doomed, regardless) == ["cancelled", "cancelled", "pending"]
    [run] = await factories.runs(db, doomed)
    assert (run["reason"], run["error"]) == ("parent_failed", f"parent job {parent} cancelled")
    # a waiting job itself can be cancelled, and its own children follow
    top = await enqueue(db)
    waiting = await enqueue(db, depends_on=[top])
    below = await enqueue(db, depends_on=[waiting])
    await admin_jobs.cancel(admin, actor, waiting)
    assert await status(db, top, waiting, below) == ["pending", "cancelled", "cancelled"]


async def test_rescuer_releases_the_children_of_a_job_it_fails_for_good(
    db: store.Store, make_settings: Any
) -> None:
    parent = await enqueue(db)
    child = await enqueue(db, depends_on=[parent])
    await db.pool.execute(
        "UPDATE job_queue SET status = 'running', attempts = 3, max_attempts = 3,"
        " lease_expires_at = now() - interval '1 minute' WHERE id = $1",
        parent,
    )
    report = await maintenance.Rescuer(db, make_settings()).run_once()
    assert (report.failed, report.released) == (1, 1)
    assert await status(db, parent, child) == ["failed", "cancelled"]


async def test_the_sweep_releases_what_a_crash_after_commit_left_waiting(
    db: store.Store, make_settings: Any
) -> None:
    parent = await enqueue(db)
    child = await enqueue(db, depends_on=[parent])
    # the outcome committed, the worker died before releasing
    await db.pool.execute(
        "UPDATE job_queue SET status = 'succeeded', finished_at = now() WHERE id = $1", parent
    )
    rescuer = maintenance.Rescuer(db, make_settings())
    assert (await rescuer.run_once()).released == 1
    assert await status(db, parent, child) == ["succeeded", "pending"]
    assert (await rescuer.run_once()).released == 0
    plan = await db.pool.fetchval(
        "EXPLAIN (FORMAT JSON) SELECT id FROM job_queue WHERE has_children"
        " AND status IN ('succeeded', 'failed', 'cancelled') ORDER BY id LIMIT 500"
    )
    assert "job_queue_unreleased_idx" in plan


async def test_pruning_takes_a_jobs_edges_along(db: store.Store) -> None:
    old = datetime.now(UTC) - timedelta(days=30)
    parent = await factories.make_job(
        db, task_type="step", status="succeeded", finished_at=old, created_at=old
    )
    child = await enqueue(db, depends_on=[parent])
    await db.pool.execute(
        "UPDATE job_queue SET status = 'succeeded', finished_at = $2, created_at = $2"
        " WHERE id = $1",
        child,
        old,
    )
    deleted = await db.prune_jobs(
        finished_before=datetime.now(UTC) - timedelta(days=7), failed_before=None, limit=100
    )
    assert deleted == 2
    assert await db.pool.fetchval("SELECT count(*) FROM job_dependencies") == 0


# -- the claim ----------------------------------------------------------------------------


async def test_waiting_jobs_are_never_read_by_the_claim(db: store.Store) -> None:
    """20,000 waiting jobs in front of 30 pending ones: the claim takes the 30 and reads
    about that many rows (waiting jobs are not in the claim's index)."""
    parent = await enqueue(db)
    await db.pool.execute(
        "INSERT INTO job_queue (task_type, status, on_parent_failure)"
        " SELECT 'noop', 'waiting', 'cancel' FROM generate_series(1, 20000)"
    )
    await db.pool.execute(
        "INSERT INTO job_dependencies (child_id, parent_id)"
        " SELECT id, $1 FROM job_queue WHERE status = 'waiting'",
        parent,
    )
    await db.pool.execute(
        "INSERT INTO job_queue (task_type) SELECT 'noop' FROM generate_series(1, 29)"
    )
    args = _claim_args(100, ["noop", "step"], [None, None])
    async with db.pool.acquire() as conn:
        statement = await conn.prepare(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES["finish_and_claim"]
        )
        tr = conn.transaction()
        await tr.start()
        try:
            plan = json.loads(await statement.fetchval(*args))
            claimed = await conn.fetchval(
                "SELECT count(*) FROM job_queue WHERE status = 'running' AND locked_by = 'w'"
            )
        finally:
            await tr.rollback()
    assert claimed == 30
    assert _rows_read(plan) < 500, _rows_read(plan)


# -- races ----------------------------------------------------------------------------------


@pytest.fixture
async def pools(db_dsn: str, ledger: store.Store) -> AsyncIterator[list[store.Store]]:
    stores = [await store.connect(db_dsn, max_size=4) for _ in range(3)]
    yield stores
    for each in stores:
        await each.close()


async def test_three_workers_never_start_a_child_before_its_parents_succeeded(
    ledger: store.Store, pools: list[store.Store], make_settings: Any
) -> None:
    """Chains, diamonds and fan-ins over three workers, with children enqueued while their
    parents run and finish (the enqueue's lock against the finish) and parents finishing
    at once (the release's lock on the child)."""
    db = ledger
    rand = random.Random(16)

    def quick() -> dict[str, Any]:
        return {"seconds": rand.choice([0, 0, 0.01, 0.03])}

    roots = [await enqueue(db, payload=quick()) for _ in range(40)]
    settings = make_settings(concurrency=8, claim_batch=4, poll_interval_s=0.05)
    workers = [
        dispatcher.Dispatcher(s, registry(), settings.model_copy(update={"worker_id": f"w{n}"}))
        for n, s in enumerate(pools)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    children: list[int] = []
    try:
        for n in range(0, len(roots) - 1, 2):
            a, b = roots[n], roots[n + 1]
            both = await enqueue(db, payload=quick(), depends_on=[a, b])
            chain = await enqueue(db, payload=quick(), depends_on=[both])
            fan_in = await enqueue(db, "collect", depends_on=[a, both, chain])
            failing = await enqueue(db, payload={"fail": n % 8 == 0}, depends_on=[b])
            after = await enqueue(db, payload=quick(), depends_on=[failing, a])
            children += [both, chain, fan_in, failing, after]
            await asyncio.sleep(rand.choice([0, 0.01, 0.02]))
        async with asyncio.timeout(60):
            while await db.pool.fetchval(LIVE):  # noqa: ASYNC110 - polls the database
                await asyncio.sleep(0.05)
    finally:
        for w in workers:
            w.request_stop()
        await asyncio.gather(*tasks)
    edges = await assert_no_child_ran_early(db)
    assert edges == 20 * 9
    counts = dict(
        await db.pool.fetch(
            "SELECT status, count(*) FROM job_queue WHERE id = ANY($1::bigint[]) GROUP BY 1",
            children,
        )
    )
    # 5 of the 20 `failing` fail, and cancel their `after`
    assert counts == {"succeeded": 90, "failed": 5, "cancelled": 5}
    stranded = await db.pool.fetchval("SELECT count(*) FROM job_queue WHERE has_children")
    assert stranded == 0


# -- visible: admin show, status, the HTTP API, the dashboard, the CLI -----------------------


async def test_show_lists_parents_and_children_and_status_counts_waiting(
    db: store.Store, admin: AdminStore
) -> None:
    top = await enqueue(db)
    mid = await enqueue(db, depends_on=[top])
    low = await enqueue(db, "collect", depends_on=[top, mid])
    shown = await admin_jobs.show(admin, mid)
    assert [(p["id"], p["task_type"], p["status"]) for p in shown["parents"]] == [
        (top, "step", "pending")
    ]
    assert [(c["id"], c["status"]) for c in shown["children"]] == [(low, "waiting")]
    assert [c["id"] for c in (await admin_jobs.show(admin, top))["children"]] == [mid, low]
    report = await admin_status.report(admin, Registry())
    assert report["waiting"] == 2
    assert {"queue": "default", "task_type": "step", "status": "waiting", "jobs": 1} in report[
        "counts"
    ]


async def test_http_api_enqueues_with_parents_and_shows_them(
    db: store.Store, make_settings: Any
) -> None:
    parent = await enqueue(db)
    async with test_api.api(db, make_settings) as client:
        made = await client.post(
            "/api/v1/jobs",
            json={"task_type": "step", "force": True, "depends_on": [parent]},
            headers=test_api.bearer(test_api.ADMIN),
        )
        assert made.status_code == 201, made.text
        assert made.json()["status"] == "waiting"
        child = made.json()["job_id"]
        regardless = await client.post(
            "/api/v1/jobs",
            json={
                "task_type": "step",
                "force": True,
                "depends_on": [parent, child],
                "on_parent_failure": "run",
            },
            headers=test_api.bearer(test_api.ADMIN),
        )
        assert regardless.status_code == 201, regardless.text
        missing = await client.post(
            "/api/v1/jobs",
            json={"task_type": "step", "force": True, "depends_on": [parent, 10**12]},
            headers=test_api.bearer(test_api.ADMIN),
        )
        assert missing.status_code == 422, missing.text
        assert missing.json()["detail"] == f"depends_on: no job {10**12}"
        assert missing.json()["errors"][0]["pointer"] == "#/depends_on"
        both = await client.post(
            "/api/v1/jobs",
            json={"task_type": "step", "force": True, "depends_on": [parent], "dedupe_key": "k"},
            headers=test_api.bearer(test_api.ADMIN),
        )
        assert both.status_code == 422, both.text
        detail = await client.get(f"/api/v1/jobs/{child}", headers=test_api.bearer(test_api.ADMIN))
        assert detail.status_code == 200, detail.text
        body = detail.json()
        assert [(p["id"], p["status"]) for p in body["parents"]] == [(parent, "pending")]
        assert [(c["id"], c["status"]) for c in body["children"]] == [
            (regardless.json()["job_id"], "waiting")
        ]
        listed = await client.get(
            "/api/v1/jobs?status=waiting", headers=test_api.bearer(test_api.ADMIN)
        )
        assert [j["id"] for j in listed.json()["jobs"]] == [regardless.json()["job_id"], child]
        cancelled = await client.post(
            f"/api/v1/jobs/{parent}/cancel", headers=test_api.bearer(test_api.ADMIN)
        )
        assert cancelled.status_code == 200, cancelled.text
    assert await status(db, parent, child, regardless.json()["job_id"]) == [
        "cancelled",
        "cancelled",
        "pending",
    ]


async def test_dashboard_job_page_lists_parents_and_children(
    db: store.Store, make_settings: Any
) -> None:
    parent = await enqueue(db)
    child = await enqueue(db, "collect", depends_on=[parent])
    async with test_dashboard_routes.running_site(db, make_settings) as site:
        await site.login()
        page = await site.client.get(f"/dashboard/jobs/{child}")
        assert page.status_code == 200
        assert 'id="parents"' in page.text
        assert f'<a href="/dashboard/jobs/{parent}">{parent}</a>' in page.text
        assert "badge-waiting" in page.text
        top = await site.client.get(f"/dashboard/jobs/{parent}")
        assert f'<a href="/dashboard/jobs/{child}">{child}</a>' in top.text
        overview = await site.client.get("/dashboard/")
        assert 'data-testid="count-waiting"' in overview.text
        listed = await site.client.get("/dashboard/jobs?status=waiting")
        assert f'<a href="/dashboard/jobs/{child}">{child}</a>' in listed.text
    plan = await admin_jobs.bulk_plan(AdminStore(db.pool), "cancel", JobFilter())
    assert plan.counts == {"waiting": 1, "pending": 1, "running": 0}
    done = await admin_jobs.bulk_apply(
        AdminStore(db.pool),
        Actor("test"),
        "cancel",
        JobFilter(status="pending"),
        max_id=plan.max_id or 0,
        expected=1,
    )
    assert done.changed == 1
    assert await status(db, parent, child) == ["cancelled", "cancelled"]
    [run] = await factories.runs(db, child)
    assert run["reason"] == "parent_failed"
