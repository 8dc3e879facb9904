"""What one dispatcher cycle costs the database: write `--batch` outcomes and claim as many
jobs, in the one finish_and_claim statement, timed from the client, `--reps` times.

    python bench/finish_cost.py --dsn postgresql://postgres@127.0.0.1:5432/postgres \
        [--batch 100] [--reps 200] [--waiting 0]

For comparing two versions of the engine's SQL (a schema or query change) on a busy
machine: run it alternately from two checkouts (PYTHONPATH=<checkout>), each on a fresh
database of its own, and compare the medians. `--waiting N` first adds N jobs waiting on a
parent (schema/0014_workflows.sql) that the claim must not read. Prints one JSON line:
median and quartiles in ms per cycle, and jobs/s of the statement alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from worker import migrations, store

TASK = "bench_noop"


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _fill(db: store.Store, jobs: int, waiting: int) -> None:
    for start in range(0, jobs, 1000):
        await db.enqueue_many(TASK, [{"i": i} for i in range(start, min(jobs, start + 1000))])
    if waiting:
        parent = await db.pool.fetchval(
            "INSERT INTO job_queue (task_type, status, has_children)"
            " VALUES ('elsewhere', 'running', true) RETURNING id"
        )
        await db.pool.execute(
            "WITH kids AS (INSERT INTO job_queue (task_type, status, on_parent_failure)"
            " SELECT $2, 'waiting', 'cancel' FROM generate_series(1, $3) RETURNING id)"
            " INSERT INTO job_dependencies (child_id, parent_id) SELECT id, $1 FROM kids",
            parent,
            TASK,
            waiting,
        )


async def _cycles(db: store.Store, batch: int, reps: int) -> list[float]:
    spec = store.ClaimSpec(["default"], batch, [TASK], [3], lease_s=60.0)
    rows = await db.claim(spec, worker_id="bench")
    took: list[float] = []
    for _ in range(reps):
        now = datetime.now(UTC)
        finishes = [
            store.Finish(
                row["id"], row["attempts"], "succeeded", 0.0, None, None, "succeeded",
                "completed", 0, None, now, 1, True,
            )
            for row in rows
        ]  # fmt: skip
        started = time.perf_counter()
        claimed = await db.finish_and_claim(finishes, worker_id="bench", claim=spec)
        took.append(time.perf_counter() - started)
        rows = claimed.rows
    return took


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--waiting", type=int, default=0)
    args = parser.parse_args()
    name = f"fc_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(args.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        db = await store.connect(_with_database(args.dsn, name), max_size=2)
        try:
            await migrations.migrate(db)
            await _fill(db, args.batch * (args.reps + 1), args.waiting)
            took = await _cycles(db, args.batch, args.reps)
        finally:
            await db.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
    q1, median, q3 = statistics.quantiles(took, n=4)
    print(
        json.dumps(
            {
                "batch": args.batch,
                "reps": args.reps,
                "waiting": args.waiting,
                "median_ms": round(median * 1000, 3),
                "q1_ms": round(q1 * 1000, 3),
                "q3_ms": round(q3 * 1000, 3),
                "jobs_per_s": round(args.batch / median),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
