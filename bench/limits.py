"""Flow control under a backlog: rate-limit accuracy, concurrency-limit fill, and what the
limits cost the task types that have none.

    python bench/limits.py [--dsn URL] [--rounds 3] [--processes 2] [--rate 100/5s]
        [--seconds 30] [--capped 5] [--job-ms 50] [--n 20000] [--parts rate,fill,cost]

All through `python -m worker` (only DATABASE_URL, WORKER_HANDLER_MODULES=user_jobs and the
bench's BENCH_* handler switches set), `--processes` of them on one database:

* rate: a backlog of `rated` jobs (`@handler(..., rate=RATE)`, no-op) for `--seconds`.
  Claim times (job_queue.started_at, the database clock the limit is kept in): the most
  in any sliding window (`claim_max_window`, must stay <= the limit) and the mean of the
  whole windows from the first claim (target within 5 % of the limit: `claim_accuracy` =
  mean / limit). Handler starts (job_runs.started_at, the worker's clock): the most in any
  sliding window (`start_max_window`); jobs are claimed in bursts at window boundaries, so
  a few ms more start-up jitter in one burst than in the next puts two bursts in one
  window of exactly the limit's length.
* fill: a backlog of `capped` jobs (`concurrency=--capped`, each sleeping `--job-ms`) for
  `--seconds`: the most handlers running at once (`max_running`, never above the limit)
  and the mean (`fill` = mean / limit), from job_runs' start and finish times.
* cost: one process drains `--n` no-op jobs, timed from start to all committed (as
  defaults.py), without and with limited types present: `rated` (rate 10/m) and `capped`
  (concurrency 2, both of its slots taken by jobs another worker runs) each with 5,000
  pending jobs the claim must hold back. Target: with / without >= 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import sys
import time
from typing import Any

import asyncpg
import harness
import uvloop

HELD_BACKLOG = 5000


def window_stats(times: list[float], window_s: float, limit: int) -> dict[str, Any]:
    """Starts per window: the sliding maximum and the mean of the whole fixed windows."""
    times = sorted(times)
    if not times:
        return {"max_window": None, "mean_window": None}
    sliding = max(bisect.bisect_left(times, t + window_s) - i for i, t in enumerate(times))
    whole = int((times[-1] - times[0]) // window_s)
    counts = [
        bisect.bisect_left(times, times[0] + (k + 1) * window_s)
        - bisect.bisect_left(times, times[0] + k * window_s)
        for k in range(whole)
    ]
    mean = sum(counts) / len(counts) if counts else None
    return {
        "max_window": sliding,
        "mean_window": mean,
        "accuracy": None if mean is None else round(mean / limit, 4),
        "windows": len(counts),
    }


def parse_rate(rate: str) -> tuple[int, float]:
    from worker.registry import parse_rate as engine_parse  # noqa: PLC0415 - the engine's own

    return engine_parse(rate)


async def run_for(dsn: str, processes: int, seconds: float, env: dict[str, str]) -> None:
    running = [
        harness.Running(harness.worker_argv(), harness.worker_env(dsn, **env))
        for _ in range(processes)
    ]
    try:
        await asyncio.sleep(seconds)
    finally:
        for each in running:
            code, tail = each.stop()
            if code not in (0, None):
                raise RuntimeError(f"worker exited with {code}: {tail}")


async def rate_part(admin: str, args: argparse.Namespace) -> dict[str, Any]:
    count, window_s = parse_rate(args.rate)
    async with harness.fresh_database(admin) as (_, dsn):
        await harness.migrate_worker(dsn)
        connection = await asyncpg.connect(dsn)
        try:
            backlog = int(count * (args.seconds / window_s + 2) * 2)
            await harness.enqueue_worker(connection, backlog, task_type="rated")
            await run_for(dsn, args.processes, args.seconds, {"BENCH_RATE": args.rate})
            claims = await connection.fetch(
                "SELECT extract(epoch FROM started_at)::float8 AS t FROM job_queue"
                " WHERE task_type = 'rated' AND started_at IS NOT NULL"
            )
            starts = await connection.fetch(
                "SELECT extract(epoch FROM started_at)::float8 AS t FROM job_runs"
                " WHERE job_key = 'rated'"
            )
            pending_attempts = await connection.fetchval(
                "SELECT count(*) FROM job_queue WHERE task_type = 'rated'"
                " AND status = 'pending' AND attempts > 0"
            )
        finally:
            await connection.close()
    claim = window_stats([r["t"] for r in claims], window_s, count)
    handler = window_stats([r["t"] for r in starts], window_s, count)
    return {
        "limit": count,
        "window_s": window_s,
        "claims": len(claims),
        "claim_max_window": claim["max_window"],
        "claim_mean_window": claim["mean_window"],
        "claim_accuracy": claim["accuracy"],
        "start_max_window": handler["max_window"],
        "held_with_attempts": pending_attempts,
    }


def overlap(intervals: list[tuple[float, float]]) -> tuple[int, float]:
    """The most intervals open at once, and the mean number open over their span."""
    if not intervals:
        return 0, 0.0
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    span = max(e for _, e in intervals) - min(s for s, _ in intervals)
    return most, sum(e - s for s, e in intervals) / span if span > 0 else 0.0


async def fill_part(admin: str, args: argparse.Namespace) -> dict[str, Any]:
    async with harness.fresh_database(admin) as (_, dsn):
        await harness.migrate_worker(dsn)
        connection = await asyncpg.connect(dsn)
        try:
            backlog = int(args.capped * args.seconds * 1000 / args.job_ms * 1.5) + 100
            await harness.enqueue_worker(connection, backlog, task_type="capped")
            env = {"BENCH_CAPPED": str(args.capped), "BENCH_JOB_MS": str(args.job_ms)}
            await run_for(dsn, args.processes, args.seconds, env)
            runs = await connection.fetch(
                "SELECT extract(epoch FROM started_at)::float8 AS s,"
                " extract(epoch FROM finished_at)::float8 AS e FROM job_runs"
                " WHERE job_key = 'capped' AND status = 'succeeded'"
            )
            claimed = await connection.fetch(
                "SELECT extract(epoch FROM started_at)::float8 AS s,"
                " extract(epoch FROM finished_at)::float8 AS e FROM job_queue"
                " WHERE task_type = 'capped' AND status = 'succeeded'"
            )
        finally:
            await connection.close()
    # the first and last second are start-up and shutdown: leave them out of the mean
    intervals = sorted((r["s"], r["e"]) for r in runs)
    most, _ = overlap(intervals)
    if intervals:
        lo, hi = intervals[0][0] + 1.0, intervals[-1][1] - 1.0
        inner = [(max(s, lo), min(e, hi)) for s, e in intervals if e > lo and s < hi]
        mean = sum(e - s for s, e in inner) / (hi - lo) if hi > lo else 0.0
    else:
        mean = 0.0
    engine_most, _ = overlap([(r["s"], r["e"]) for r in claimed])
    return {
        "limit": args.capped,
        "jobs": len(runs),
        "max_running": most,
        "claimed_max_running": engine_most,
        "mean_running": round(mean, 3),
        "fill": round(mean / args.capped, 4),
    }


async def cost_once(admin: str, n: int, with_limits: bool) -> dict[str, Any]:
    async with harness.fresh_database(admin) as (_, dsn):
        await harness.migrate_worker(dsn)
        connection = await asyncpg.connect(dsn)
        env: dict[str, str] = {}
        try:
            if with_limits:
                env = {"BENCH_RATE": "10/m", "BENCH_CAPPED": "2"}
                await harness.enqueue_worker(connection, HELD_BACKLOG, task_type="rated")
                await harness.enqueue_worker(connection, HELD_BACKLOG, task_type="capped")
                # both of capped's slots are taken by jobs another worker runs
                await connection.execute(
                    "UPDATE job_queue SET status = 'running', attempts = 1, locked_by = 'other',"
                    " lease_expires_at = now() + interval '1 hour', started_at = now(),"
                    " limit_key = '' WHERE id IN (SELECT id FROM job_queue"
                    " WHERE task_type = 'capped' ORDER BY id LIMIT 2)"
                )
            await harness.enqueue_worker(connection, n)
            running = harness.Running(harness.worker_argv(), harness.worker_env(dsn, **env))
            try:
                done_at = await harness.wait_drained(
                    connection, harness.WORKER_LEFT, "noop", processes=[running.proc]
                )
            finally:
                running.stop()
            capped_runs = await connection.fetchval(
                "SELECT count(*) FROM job_runs WHERE job_key = 'capped'"
            )
        finally:
            await connection.close()
    if capped_runs:
        raise RuntimeError(f"{capped_runs} capped jobs ran past their full limit")
    return {"jobs_per_s": round(n / (done_at - running.started), 1)}


async def amain(args: argparse.Namespace) -> int:
    admin = harness.server_dsn(args)
    info = await harness.server_info(admin)
    print(f"PostgreSQL {info['server_version']}; load {info['load_avg_at_start']}\n")
    records: list[dict[str, Any]] = []
    lines: list[str] = []
    for round_no in range(1, args.rounds + 1):
        parts = []
        if "rate" in args.parts:
            parts.append(("rate", "-", lambda: rate_part(admin, args)))
        if "fill" in args.parts:
            parts.append(("fill", "-", lambda: fill_part(admin, args)))
        if "cost" in args.parts:
            parts.append(("cost", "without", lambda: cost_once(admin, args.n, False)))
            parts.append(("cost", "with", lambda: cost_once(admin, args.n, True)))
        for part, variant, run in harness.rotated(parts, round_no - 1):
            record: dict[str, Any] = {"round": round_no, "part": part, "variant": variant}
            started = time.perf_counter()
            try:
                record |= await run()
            except (RuntimeError, TimeoutError, asyncpg.PostgresError) as exc:
                record["error"] = str(exc)
            harness.log(f"round {round_no} ({time.perf_counter() - started:.0f} s): {record}")
            records.append(record)
    rows = harness.medians(records, ["part", "variant"])
    by = {(r["part"], r["variant"]): r for r in rows}
    if "rate" in args.parts:
        lines += [
            f"### rate limit {args.rate}, {args.processes} processes, "
            f"{args.seconds:g} s of backlog",
            "",
            harness.table(
                [by["rate", "-"]],
                [
                    "limit",
                    "claims",
                    "claim_max_window",
                    "claim_accuracy",
                    "start_max_window",
                    "held_with_attempts",
                    "ok",
                ],
                "claim_accuracy",
            ),
            "",
        ]
    if "fill" in args.parts:
        lines += [
            f"### concurrency limit {args.capped}, {args.job_ms:g} ms jobs, {args.processes} "
            f"processes, {args.seconds:g} s",
            "",
            harness.table(
                [by["fill", "-"]],
                ["limit", "jobs", "max_running", "claimed_max_running", "mean_running", "fill"],
                "fill",
            ),
            "",
        ]
    if "cost" in args.parts:
        cost_rows = [by["cost", "without"], by["cost", "with"]]
        without, with_ = (r.get("jobs_per_s") for r in cost_rows)
        lines += [
            f"### cost for a type without limits: drain {args.n} no-op jobs, one process",
            "",
            harness.table(cost_rows, ["variant", "jobs_per_s", "ok"], "jobs_per_s"),
            "",
            f"with / without: {with_ / without:.3f}" if with_ and without else "",
        ]
    print("\n".join(lines))
    return harness.finish(
        "limits",
        {"server": info, "settings": vars(args), "records": records, "report": lines},
        records,
    )


def parse_args() -> argparse.Namespace:
    parser = harness.parser_for(__doc__)
    parser.add_argument("--processes", type=int, default=2, help="workers sharing the limits")
    parser.add_argument("--rate", default="100/5s", help="the rated handler's rate=")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of a rate/fill run")
    parser.add_argument("--capped", type=int, default=5, help="the capped handler's concurrency")
    parser.add_argument("--job-ms", type=float, default=50.0, help="a capped job's sleep")
    parser.add_argument("--n", type=int, default=20000, help="jobs of the cost drain")
    parser.add_argument("--parts", default="rate,fill,cost")
    args = parser.parse_args()
    args.parts = [p for p in args.parts.split(",") if p]
    if not set(args.parts) <= {"rate", "fill", "cost"}:
        parser.error("--parts: some of rate,fill,cost")
    try:
        parse_rate(args.rate)
    except ValueError as exc:
        parser.error(str(exc))
    if min(args.processes, args.rounds, args.capped, args.n) < 1 or args.seconds < 3:
        parser.error("--processes, --rounds, --capped, --n positive; --seconds at least 3")
    return args


if __name__ == "__main__":
    sys.exit(uvloop.run(amain(parse_args())))
