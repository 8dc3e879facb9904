"""How fast the dashboard's pages are on a large table.

Creates a scratch database, migrates it, fills it with `--jobs` jobs in a realistic mix of
states (mostly succeeded history, some pending at the head, a few failed and cancelled) and
about as many job_runs rows spread over two weeks, then serves the dashboard in-process and
times each page over HTTP: the median of `--repeat` requests after one warm-up. The scratch
database is dropped at the end (unless --keep; --reuse NAME times an earlier one again).
With --bulk-jobs N it also times a bulk retry of N failed jobs of their own queue: the
count (the confirmation page) and the batches (the confirmed action).

    python bench/dashboard_pages.py --dsn postgresql://postgres@127.0.0.1:5432/postgres \\
        --jobs 1000000 --bulk-jobs 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker import config, migrations, service, store
from worker.registry import Registry
from worker.web import app as web

PASSWORD = "bench-password-1"

# Bench data only (the worker's own SQL lives in worker/queries.sql). $1 = jobs.
FILL_JOBS = """
INSERT INTO job_queue (queue, task_type, payload, status, priority, run_at, attempts,
                       max_attempts, last_error, schedule_name, run_type, locked_by,
                       lease_expires_at, created_at, started_at, finished_at)
SELECT 'q' || (i % 5), 'task_' || (i % 12), jsonb_build_object('n', i),
       s.status, 0,
       CASE WHEN s.status = 'pending' AND i % 3 = 0 THEN now() + interval '1 hour'
            ELSE t.at END,
       CASE WHEN s.status = 'pending' THEN i % 2 ELSE 1 + (i % 3) END, 5,
       CASE WHEN s.status = 'failed' THEN 'Timeout talking to provider (job ' || i || ')'
            WHEN s.status = 'pending' AND i % 2 = 1 THEN 'HTTP 503 from upstream'
       END,
       CASE WHEN i % 100 = 0 THEN 'schedule_' || (i % 20) END,
       CASE WHEN i % 100 = 0 THEN 'cron' WHEN i % 1000 = 1 THEN 'manual' ELSE 'queue' END,
       CASE WHEN s.status = 'running' THEN 'bench-worker' END,
       CASE WHEN s.status = 'running' THEN now() + interval '1 minute' END,
       t.at, t.at, CASE WHEN s.status IN ('succeeded', 'failed', 'cancelled') THEN t.at END
  FROM generate_series(1, $1::int) AS i
 CROSS JOIN LATERAL (SELECT now() - make_interval(secs => ($1::int - i) * 1209600.0 / $1)
                       AS at) t
 CROSS JOIN LATERAL (SELECT CASE
          WHEN i > $1::int * 0.97 THEN
            CASE WHEN i % 50 = 0 THEN 'running' ELSE 'pending' END
          WHEN i % 50 = 7 THEN 'failed'
          WHEN i % 100 = 13 THEN 'cancelled'
          ELSE 'succeeded' END AS status) s
"""
FILL_RUNS = """
INSERT INTO job_runs (job_id, job_key, queue, run_type, status, reason, attempt, error,
                      worker_id, schedule_name, started_at, finished_at, duration_ms)
SELECT j.id, j.task_type, j.queue, j.run_type,
       CASE j.status WHEN 'failed' THEN 'failed' WHEN 'cancelled' THEN 'cancelled'
                     ELSE 'succeeded' END,
       CASE j.status WHEN 'failed' THEN 'error' ELSE 'ok' END, j.attempts, j.last_error,
       'bench-worker', j.schedule_name, j.started_at, j.started_at + interval '40 ms', 40
  FROM job_queue j
 WHERE j.status IN ('succeeded', 'failed', 'cancelled')
 ORDER BY j.id
"""
FILL_SCHEDULES = """
INSERT INTO job_schedules (name, cron, timezone, task_type, queue)
SELECT 'schedule_' || i, (i % 60) || ' * * * *',
       (ARRAY['UTC', 'Europe/London', 'America/New_York', 'Asia/Tokyo'])[1 + i % 4],
       'task_' || (i % 12), 'q' || (i % 5)
  FROM generate_series(0, 19) AS i
"""
FILL_WORKERS = """
INSERT INTO job_workers (id, host, pid, version, heartbeat_s, queues, concurrency, in_flight,
                         running, last_seen_at)
SELECT 'bench-' || i, 'host-' || i, 1000 + i, '0.1.0', 5, ARRAY['q0', 'q1', 'q2', 'q3', 'q4'],
       50, 30, '[{"task_type": "task_1", "jobs": 30, "job_ids": [1, 2, 3, 4, 5]}]',
       CASE WHEN i > 8 THEN now() - interval '10 minutes' ELSE now() END
  FROM generate_series(1, 10) AS i
"""
FILL_BULK = """
INSERT INTO job_queue (queue, task_type, status, attempts, max_attempts, last_error,
                       finished_at)
SELECT 'bulk', 'task_1', 'failed', 3, 3, 'HTTP 503 from provider', now()
  FROM generate_series(1, $1::int)
"""
FILL_AUDIT = """
INSERT INTO job_admin_audit (actor, action, target, remote_addr)
SELECT 'alice', 'job_retry', 'job:' || (i * 97), '10.0.0.1' FROM generate_series(1, 5000) AS i
"""


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def fill(dsn: str, jobs: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for label, sql, args in [
            ("jobs", FILL_JOBS, (jobs,)),
            ("job_runs", FILL_RUNS, ()),
            ("schedules", FILL_SCHEDULES, ()),
            ("audit", FILL_AUDIT, ()),
            ("workers", FILL_WORKERS, ()),
        ]:
            t0 = time.perf_counter()
            await conn.execute(sql, *args)
            print(f"filled {label} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        t0 = time.perf_counter()
        await conn.execute("VACUUM ANALYZE job_queue")
        await conn.execute("VACUUM ANALYZE job_runs")
        print(f"vacuum analyze in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        counts = await conn.fetch("SELECT status, count(*) FROM job_queue GROUP BY 1 ORDER BY 1")
        runs = await conn.fetchval("SELECT count(*) FROM job_runs")
        mix = ", ".join(f"{row['status']} {row['count']}" for row in counts)
        print(f"job_queue: {mix}; job_runs: {runs}", file=sys.stderr)
    finally:
        await conn.close()


async def pages(db: store.Store) -> list[tuple[str, str]]:
    """(label, path) of each page to time, with ids taken from the data."""
    row = await db.pool.fetchrow(
        "SELECT (SELECT max(id) FROM job_queue) AS top,"
        " (SELECT max(id) FROM job_queue WHERE status = 'failed') AS failed"
    )
    assert row is not None
    middle = row["top"] // 2
    return [
        ("overview", "/dashboard/"),
        ("jobs (newest)", "/dashboard/jobs"),
        ("jobs page deep in history", f"/dashboard/jobs?before={middle}"),
        ("jobs status=pending", "/dashboard/jobs?status=pending"),
        ("jobs status=running", "/dashboard/jobs?status=running"),
        ("jobs status=succeeded", "/dashboard/jobs?status=succeeded"),
        ("jobs status=failed", "/dashboard/jobs?status=failed"),
        ("jobs status=cancelled&queue=q3", "/dashboard/jobs?status=cancelled&queue=q3"),
        ("jobs queue=q3", "/dashboard/jobs?queue=q3"),
        ("jobs task_type=task_5", "/dashboard/jobs?task_type=task_5"),
        ("jobs q=timeout", "/dashboard/jobs?q=timeout"),
        ("jobs q=<no match>", "/dashboard/jobs?q=no-such-text"),
        ("jobs queue=<empty queue>", "/dashboard/jobs?queue=nobody"),
        ("job detail", f"/dashboard/jobs/{row['failed']}"),
        ("schedules", "/dashboard/schedules"),
        ("schedule detail", "/dashboard/schedules/schedule_0"),
        ("runs", "/dashboard/runs"),
        ("runs status=failed", "/dashboard/runs?status=failed"),
        ("runs run_type=manual", "/dashboard/runs?run_type=manual"),
        ("runs run_type=cron", "/dashboard/runs?run_type=cron"),
        ("enqueue form", "/dashboard/enqueue"),
        ("workers", "/dashboard/workers"),
        ("playbook", "/dashboard/playbook"),
    ]


BULK_PREVIEWS = [
    ("bulk count: retry status=failed", {"action": "retry", "status": "failed"}),
    ("bulk count: retry every state", {"action": "retry"}),
    ("bulk count: cancel queue=q3", {"action": "cancel", "queue": "q3"}),
    ("bulk count: delete q=timeout", {"action": "delete", "q": "timeout"}),
]


async def time_pages(dsn: str, repeat: int) -> list[tuple[str, str, int, float, int]]:
    settings = config.load(
        database_url=dsn, dashboard_users=f"bench:{PASSWORD}", handler_modules=[]
    )
    db = await store.connect(dsn, max_size=4)
    services = service.web_services(settings, db, Registry(), None)
    services.admin.statement_timeout_s = 60
    results: list[tuple[str, str, int, float, int]] = []
    try:
        async with (
            web.serving(web.create_app(services), host="127.0.0.1", port=0) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client,
        ):
            login = await client.post(
                "/dashboard/login", data={"user": "bench", "password": PASSWORD}
            )
            assert login.status_code == 303, login.text
            for label, path in await pages(db):
                status, times_ms = 0, []
                for _ in range(repeat + 1):  # the first is a warm-up
                    t0 = time.perf_counter()
                    response = await client.get(path)
                    times_ms.append((time.perf_counter() - t0) * 1000)
                    status = response.status_code
                rows = len(
                    re.findall(r"<tr data-(?:job-id|run-id|schedule|worker)=", response.text)
                )
                results.append((label, path, status, statistics.median(times_ms[1:]), rows))
            token = _csrf(response.text)
            for label, fields in BULK_PREVIEWS:
                status, times_ms = 0, []
                for _ in range(repeat + 1):
                    t0 = time.perf_counter()
                    response = await client.post(
                        "/dashboard/jobs/bulk", data={**fields, "csrf_token": token}
                    )
                    times_ms.append((time.perf_counter() - t0) * 1000)
                    status = response.status_code
                results.append((label, "POST", status, statistics.median(times_ms[1:]), 0))
    finally:
        await db.close()
    return results


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match is not None
    return match.group(1)


async def time_bulk(dsn: str, jobs: int) -> list[str]:
    """A bulk retry of `jobs` failed jobs of queue 'bulk': the count, then the batches."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(FILL_BULK, jobs)
        await conn.execute("ANALYZE job_queue")
    finally:
        await conn.close()
    settings = config.load(
        database_url=dsn, dashboard_users=f"bench:{PASSWORD}", handler_modules=[]
    )
    db = await store.connect(dsn, max_size=4)
    services = service.web_services(settings, db, Registry(), None)
    lines = []
    try:
        async with (
            web.serving(web.create_app(services), host="127.0.0.1", port=0) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client,
        ):
            await client.post("/dashboard/login", data={"user": "bench", "password": PASSWORD})
            token = _csrf((await client.get("/dashboard/")).text)
            fields = {"action": "retry", "status": "failed", "queue": "bulk", "csrf_token": token}
            t0 = time.perf_counter()
            preview = await client.post("/dashboard/jobs/bulk", data=fields)
            count_ms = (time.perf_counter() - t0) * 1000
            confirm = dict(re.findall(r'name="(expected|max_id)" value="(\d+)"', preview.text))
            t0 = time.perf_counter()
            done = await client.post(
                "/dashboard/jobs/bulk", data={**fields, **confirm, "confirm": "yes"}
            )
            apply_s = time.perf_counter() - t0
            batches = await db.pool.fetch(
                "SELECT (detail->>'jobs')::int AS jobs FROM job_admin_audit"
                " WHERE action = 'jobs_bulk_retry' ORDER BY id"
            )
            lines.append(
                f"bulk retry of {confirm.get('expected')} jobs: count {count_ms:.0f} ms; "
                f"applied in {apply_s:.1f} s ({done.status_code}), {len(batches)} batches, "
                f"{apply_s * 1000 / max(1, len(batches)):.0f} ms a batch on average"
            )
    finally:
        await db.close()
    return lines


async def main(args: argparse.Namespace) -> None:
    name = args.reuse or f"dashboard_bench_{os.getpid()}"
    dsn = with_database(args.dsn, name)
    if not args.reuse:
        admin = await asyncpg.connect(args.dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
    try:
        db = await store.connect(dsn, max_size=2)
        try:
            await migrations.migrate(db)
        finally:
            await db.close()
        if not args.reuse:
            await fill(dsn, args.jobs)
        results = await time_pages(dsn, args.repeat)
        print(f"\n{args.jobs} jobs; median of {args.repeat} requests per page\n")
        print(f"| {'page':<34} | status | rows | median ms |")
        print(f"| {'-' * 34} | ------ | ---- | --------: |")
        for label, _path, status, median_ms, rows in results:
            print(f"| {label:<34} | {status:>6} | {rows:>4} | {median_ms:>9.1f} |")
        if args.bulk_jobs:
            for line in await time_bulk(dsn, args.bulk_jobs):
                print(f"\n{line}")
    finally:
        if not args.keep and not args.reuse:
            admin = await asyncpg.connect(args.dsn)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="admin DSN; a scratch database is created")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per page")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", metavar="NAME", help="time a database kept earlier")
    parser.add_argument("--bulk-jobs", type=int, default=0, help="also time a bulk retry")
    asyncio.run(main(parser.parse_args()))
