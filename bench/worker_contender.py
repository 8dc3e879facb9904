"""Benchmark contender: this project's worker (the same engine `python -m worker` runs).

Follows the contender contract in bench/README.md (and pgqueuer_contender.py):

    python bench/worker_contender.py --dsn DSN --scenario {drain,pickup,enqueue}
        [--n 20000] [--batch 100] [--jobs 200] [--spacing-ms 20] [--timeout 300]

Configuration: one worker process (uvloop), `--batch k` = at most k jobs per claim
statement, with `concurrency = 4k` slots: the worker keeps two outcome-and-claim
statements in flight, and each needs a batch of jobs running while the other commits.
Every job writes its job_queue transitions and one job_runs audit row, as in production:
nothing is turned off for the benchmark.

* drain: `--n` no-op jobs pre-enqueued (untimed); timed from the dispatcher's start until
  it returns, which is after the last outcome and audit row are committed.
* pickup: an idle daemon dispatcher (LISTEN on, poll interval 30 s so only NOTIFY can wake
  it); a producer process inserts jobs one at a time with a plain INSERT; latency = handler
  start - the moment the producer's committed INSERT returned (CLOCK_MONOTONIC).
* enqueue: `n // 10` single-row INSERT statements, then `n` jobs in `--batch`-row inserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import asyncpg
import pydantic
import uvloop
from common import summarize

from worker import config, dispatcher, migrations, observability, store
from worker.registry import Handler, JobContext, JobResult, Registry

CONTENDER = "worker"
TASK = "noop"


class Payload(pydantic.BaseModel):
    i: int = -1


def log(message: str) -> None:
    print(f"[worker] {message}", file=sys.stderr, flush=True)


def make_settings(args: argparse.Namespace, **overrides: Any) -> config.Settings:
    values: dict[str, Any] = {
        "database_url": args.dsn,
        "claim_batch": args.batch,
        "concurrency": args.concurrency or 4 * args.batch,
        "handler_modules": [],
    }
    values.update(overrides)
    return config.load(**values)


def registry(on_start: Any = None) -> Registry:
    async def noop(ctx: JobContext, payload: Payload) -> JobResult:
        if on_start is not None:
            on_start(payload.i)
        return JobResult()

    reg = Registry()
    reg.add(Handler(TASK, noop, Payload, max_attempts=3, timeout_s=60))
    return reg


async def connect(args: argparse.Namespace) -> store.Store:
    db = await store.connect(args.dsn, max_size=6)
    await migrations.migrate(db)
    return db


async def run_drain(args: argparse.Namespace) -> dict[str, Any]:
    db = await connect(args)
    try:
        for start in range(0, args.n, 1000):
            await db.enqueue_many(TASK, [{"i": i} for i in range(start, min(args.n, start + 1000))])
        await db.pool.execute("ANALYZE job_queue")
        worker = dispatcher.Dispatcher(
            db, registry(), make_settings(args), once=True, keep_results=False
        )
        started = time.perf_counter()
        summary = await worker.run()
        elapsed = time.perf_counter() - started
        runs = await db.pool.fetchval("SELECT count(*) FROM job_runs")
    finally:
        await db.close()
    if summary.succeeded != args.n or runs != args.n:
        raise RuntimeError(f"drained {summary.succeeded} jobs, {runs} audit rows, of {args.n}")
    return {"n": args.n, "jobs_per_s": round(args.n / elapsed, 1), "elapsed_s": round(elapsed, 4)}


async def run_pickup(args: argparse.Namespace) -> dict[str, Any]:
    starts: dict[int, float] = {}
    done = asyncio.Event()

    def on_start(i: int) -> None:
        starts[i] = time.perf_counter()
        if len(starts) >= args.jobs:
            done.set()

    db = await connect(args)
    worker = dispatcher.Dispatcher(
        db, registry(on_start), make_settings(args, poll_interval_s=30.0), keep_results=False
    )
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(1.0)  # listener connected, claimer idle
        commits = await asyncio.to_thread(run_producer_process, args)
        await asyncio.wait_for(done.wait(), timeout=30)
    finally:
        worker.request_stop()
        await task
        await db.close()
    latencies = [(starts[i] - commits[i]) * 1000 for i in range(args.jobs)]
    return {"jobs": args.jobs, "spacing_ms": args.spacing_ms, **summarize(latencies)}


def run_producer_process(args: argparse.Namespace) -> list[float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--role=producer",
            f"--dsn={args.dsn}",
            "--scenario=pickup",
            f"--jobs={args.jobs}",
            f"--spacing-ms={args.spacing_ms}",
        ],
        capture_output=True,
        text=True,
        timeout=args.timeout,
        check=True,
    )
    return [float(t) for t in json.loads(out.stdout.strip().splitlines()[-1])]


async def produce_spaced(args: argparse.Namespace) -> list[float]:
    """Plain INSERTs, one per job, on a fixed schedule; record when each commit returned."""
    db = await store.connect(args.dsn, max_size=1)
    try:
        commits: list[float] = []
        origin = time.perf_counter()
        for i in range(args.jobs):
            delay = origin + i * args.spacing_ms / 1000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await db.enqueue(TASK, {"i": i})
            commits.append(time.perf_counter())
    finally:
        await db.close()
    return commits


async def run_enqueue(args: argparse.Namespace) -> dict[str, Any]:
    db = await connect(args)
    try:
        await db.enqueue(TASK, {"i": -1})  # untimed: prepares the statement
        n_single = max(args.n // 10, 1)
        started = time.perf_counter()
        for i in range(n_single):
            await db.enqueue(TASK, {"i": i})
        single_s = time.perf_counter() - started
        started = time.perf_counter()
        for start in range(0, args.n, args.batch):
            await db.enqueue_many(
                TASK, [{"i": i} for i in range(start, min(args.n, start + args.batch))]
            )
        batch_s = time.perf_counter() - started
    finally:
        await db.close()
    return {
        "n_single": n_single,
        "n_batch": args.n,
        "single_jobs_per_s": round(n_single / single_s, 1),
        "batch_jobs_per_s": round(args.n / batch_s, 1),
    }


SCENARIOS = {"drain": run_drain, "pickup": run_pickup, "enqueue": run_enqueue}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--spacing-ms", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--concurrency", type=int, default=0, help="default: 4 x --batch")
    parser.add_argument("--log-level", default="warning", choices=("info", "warning"))
    parser.add_argument("--role", choices=("main", "producer"), default="main")
    args = parser.parse_args()
    if min(args.n, args.batch, args.jobs) < 1:
        parser.error("--n, --batch and --jobs must be positive")
    return args


async def run(args: argparse.Namespace) -> object:
    if args.role == "producer":
        return await asyncio.wait_for(produce_spaced(args), args.timeout)
    metrics = await asyncio.wait_for(SCENARIOS[args.scenario](args), args.timeout)
    return {
        "contender": CONTENDER,
        "config": f"batch={args.batch},concurrency={args.concurrency or 4 * args.batch}",
        "scenario": args.scenario,
        **metrics,
    }


def main() -> int:
    args = parse_args()
    # Per-job info lines off, as pgqueuer logs nothing per job; bench/README.md gives the
    # cost of leaving them on.
    observability.configure_logging("json", args.log_level)
    try:
        result = uvloop.run(run(args))
    except (TimeoutError, asyncpg.PostgresError, RuntimeError) as exc:
        log(f"failed: {exc}")
        return 3
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
