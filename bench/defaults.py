"""Both queues as their users run them: defaults, best of a small grid, pickup latency.

    python bench/defaults.py [--dsn URL] [--rounds 3] [--n 20000] [--rtt-ms 2.4]
        [--modes defaults,best,pickup] [--jobs 200] [--spacing-ms 20]

Each run gets a fresh database; the jobs are inserted with one plain SQL statement (no
ANALYZE afterwards, as an app's insert would leave them) and then the contender process is
started, as its users start it:

* worker: `python -m worker` with only DATABASE_URL and WORKER_HANDLER_MODULES=user_jobs
  set (`best` adds WORKER_CLAIM_BATCH and WORKER_CONCURRENCY), default log level (info),
  its output to a file;
* pgqueuer 1.6: `pgq run pgq_jobs:create_pgqueuer` with PGDSN set (`best` adds
  --batch-size), default log level, its output to a file.

drain: the clock runs from starting the process to all jobs committed done (the bench polls
the tables every 5 ms: job_queue has no pending or running `noop` job; pgqueuer's table is
empty, it deletes finished jobs). `jobs_per_s` = n / that. `active_jobs_per_s` is n over the
database's first claim to last outcome (start-up left out); `startup_s` the rest. CPU per
job: the contender process (`worker_us`) and the server backends on its database
(`backend_us`), from /proc at the end, when the server runs on this machine.

pickup: an idle contender (a warm-up job done, then 1 s), jobs inserted one at a time
`--spacing-ms` apart by this process; latency = handler start (the handler appends
perf_counter to a file) - the INSERT's commit returning here; CLOCK_MONOTONIC is system-wide.

`--rtt-ms X` runs the contenders through rtt_proxy.py (a process of its own) adding X ms of
round trip; the bench's own polling and inserts go direct. Rounds are interleaved with the
order rotated each round; the tables give medians, raw JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import harness
import uvloop


@dataclass(frozen=True)
class Spec:
    contender: str  # worker | pgqueuer
    config: str
    settings: dict[str, str] = field(default_factory=dict)  # worker's environment
    batch: int | None = None  # pgqueuer's --batch-size

    def start(self, dsn: str, **extra: str) -> harness.Running:
        if self.contender == "worker":
            return harness.Running(
                harness.worker_argv(), harness.worker_env(dsn, self.settings, **extra)
            )
        return harness.Running(
            harness.pgqueuer_argv(self.batch), harness.pgqueuer_env(dsn, **extra)
        )


def worker_grid(batch: int) -> Spec:
    settings = {"WORKER_CLAIM_BATCH": str(batch), "WORKER_CONCURRENCY": str(4 * batch)}
    return Spec("worker", f"batch={batch},concurrency={4 * batch}", settings)


CONFIGS: dict[str, list[Spec]] = {
    "defaults": [Spec("worker", "defaults"), Spec("pgqueuer", "defaults")],
    "best": [
        worker_grid(10),
        worker_grid(100),
        worker_grid(1000),
        Spec("pgqueuer", "batch=10", batch=10),
        Spec("pgqueuer", "batch=100", batch=100),
        Spec("pgqueuer", "batch=1000", batch=1000),
    ],
    "pickup": [Spec("worker", "defaults"), Spec("pgqueuer", "defaults")],
}


async def prepare(spec: Spec, dsn: str) -> None:
    if spec.contender == "worker":
        await harness.migrate_worker(dsn)
    else:
        await harness.install_pgqueuer(dsn)


def left_query(spec: Spec) -> str:
    return harness.WORKER_LEFT if spec.contender == "worker" else harness.PGQUEUER_LEFT


async def active_window(connection: asyncpg.Connection, spec: Spec) -> tuple[float, float, int]:
    """First claim and last outcome in the database's clock (epoch seconds), jobs done."""
    if spec.contender == "worker":
        row = await connection.fetchrow(
            "SELECT extract(epoch FROM min(started_at))::float8 AS first,"
            " extract(epoch FROM max(finished_at))::float8 AS last,"
            " count(*) FILTER (WHERE status = 'succeeded') AS done"
            " FROM job_queue WHERE task_type = 'noop'"
        )
    else:
        row = await connection.fetchrow(
            "SELECT extract(epoch FROM min(created) FILTER (WHERE status = 'picked'))::float8"
            " AS first, extract(epoch FROM max(created))::float8 AS last,"
            " count(*) FILTER (WHERE status = 'successful') AS done"
            " FROM pgqueuer_log WHERE entrypoint = 'noop'"
        )
    return row["first"], row["last"], row["done"]


async def drain(admin: str, spec: Spec, n: int, proxy: harness.Proxy | None) -> dict[str, Any]:
    async with harness.fresh_database(admin) as (name, dsn):
        await prepare(spec, dsn)
        connection = await asyncpg.connect(dsn)
        try:
            if spec.contender == "worker":
                await harness.enqueue_worker(connection, n)
            else:
                await harness.enqueue_pgqueuer(connection, n)
            proxy_cpu = proxy.cpu_s() if proxy else 0.0
            running = spec.start(harness.via(dsn, proxy.port) if proxy else dsn)
            try:
                done_at = await harness.wait_drained(
                    connection, left_query(spec), "noop", processes=[running.proc]
                )
                worker_cpu = running.cpu_s()
                backend_cpu = await harness.backend_cpu_s(connection, name)
            finally:
                code, tail = running.stop()
            first, last, done = await active_window(connection, spec)
        finally:
            await connection.close()
    if done != n:
        raise RuntimeError(f"{done} of {n} jobs done; output: {tail}")
    elapsed = done_at - running.started
    metrics: dict[str, Any] = {
        "jobs_per_s": round(n / elapsed, 1),
        "active_jobs_per_s": round(n / max(last - first, 1e-6), 1),
        "startup_s": round(first - running.started_wall, 3),
        "elapsed_s": round(elapsed, 3),
        "worker_us": round(worker_cpu / n * 1e6, 1),
        "backend_us": None if backend_cpu is None else round(backend_cpu / n * 1e6, 1),
        "exit_code": code,
    }
    if proxy:
        metrics["proxy_us"] = round((proxy.cpu_s() - proxy_cpu) / n * 1e6, 1)
    return metrics


INSERT_ONE = {
    "worker": "INSERT INTO job_queue (task_type, payload) VALUES ('noop', jsonb_build_object("
    "'i', $1::int))",
    "pgqueuer": "INSERT INTO pgqueuer (priority, entrypoint, payload, status)"
    " VALUES (0, 'noop', convert_to($1::int::text, 'UTF8'), 'queued')",
}


async def pickup(
    admin: str, spec: Spec, jobs: int, spacing_ms: float, proxy: harness.Proxy | None
) -> dict[str, Any]:
    starts_path = Path(tempfile.mktemp(prefix="bench-starts-"))
    async with harness.fresh_database(admin) as (_, dsn):
        await prepare(spec, dsn)
        connection = await asyncpg.connect(dsn)
        running = spec.start(
            harness.via(dsn, proxy.port) if proxy else dsn, BENCH_STARTS_FILE=str(starts_path)
        )
        try:
            insert = await connection.prepare(INSERT_ONE[spec.contender])
            await insert.fetch(-1)  # warm-up: the process is up and has run a job
            await harness.wait_drained(
                connection, left_query(spec), "noop", processes=[running.proc], timeout_s=60
            )
            await asyncio.sleep(1.0)
            commits = []
            origin = time.perf_counter()
            for i in range(jobs):
                delay = origin + i * spacing_ms / 1000 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await insert.fetch(i)
                commits.append(time.perf_counter())
            await harness.wait_drained(
                connection, left_query(spec), "noop", processes=[running.proc], timeout_s=60
            )
        finally:
            running.stop()
            await connection.close()
    starts = read_starts(starts_path)
    latencies = [(starts[i] - commits[i]) * 1000 for i in range(jobs)]
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49], 3), "p95_ms": round(cuts[94], 3)}


def read_starts(path: Path) -> dict[int, float]:
    """What the handler appended: job number -> perf_counter at its start."""
    starts = {}
    for line in path.read_text().splitlines():
        number, at = line.split()
        starts[int(number)] = float(at)
    path.unlink()
    return starts


async def run_round(
    args: argparse.Namespace, admin: str, round_no: int, proxy: harness.Proxy | None
) -> list[dict[str, Any]]:
    records = []
    for mode in args.modes:
        specs = [s for s in CONFIGS[mode] if s.contender in args.contenders]
        for spec in harness.rotated(specs, round_no - 1):
            record: dict[str, Any] = {
                "round": round_no,
                "mode": mode,
                "contender": spec.contender,
                "config": spec.config,
            }
            harness.log(f"round {round_no} {mode} {spec.contender} {spec.config}")
            try:
                if mode == "pickup":
                    record |= await pickup(admin, spec, args.jobs, args.spacing_ms, proxy)
                else:
                    record |= await drain(admin, spec, args.n, proxy)
            except (RuntimeError, TimeoutError, asyncpg.PostgresError, OSError) as exc:
                record["error"] = str(exc)
            harness.log(f"  -> {record}")
            records.append(record)
    return records


def ratio(rows: list[dict[str, Any]], metric: str, config: str | None = None) -> str:
    """worker / pgqueuer on `metric`: of the given config, else of each one's best."""
    best: dict[str, float] = {}
    for row in rows:
        value = row.get(metric)
        if value is None or (config is not None and row["config"] != config):
            continue
        best[row["contender"]] = max(best.get(row["contender"], 0.0), value)
    if "worker" not in best or not best.get("pgqueuer"):
        return "-"
    return f"{best['worker'] / best['pgqueuer']:.2f}x"


def report(args: argparse.Namespace, records: list[dict[str, Any]]) -> list[str]:
    rows = harness.medians(records, ["mode", "contender", "config"])
    out = []
    drain_columns = [
        "contender",
        "config",
        "jobs_per_s",
        "active_jobs_per_s",
        "startup_s",
        "worker_us",
        "backend_us",
        *(["proxy_us"] if args.rtt_ms else []),
        "ok",
    ]
    where = f"through the proxy, +{args.rtt_ms:g} ms RTT" if args.rtt_ms else "loopback"
    for mode in args.modes:
        mode_rows = [r for r in rows if r["mode"] == mode]
        if mode == "pickup":
            out += [f"### pickup, idle, {args.jobs} jobs {args.spacing_ms:g} ms apart ({where})"]
            out += [
                "",
                harness.table(
                    mode_rows, ["contender", "config", "p50_ms", "p95_ms", "ok"], "p50_ms"
                ),
            ]
        else:
            out += [f"### {mode}: drain {args.n} no-op jobs ({where}), jobs/s", ""]
            out += [harness.table(mode_rows, drain_columns, "jobs_per_s")]
            if mode == "defaults":
                out += ["", f"worker / pgqueuer at defaults: {ratio(mode_rows, 'jobs_per_s')}"]
            else:
                out += [
                    "",
                    f"best against best: {ratio(mode_rows, 'jobs_per_s')}; batch 10: "
                    + ratio(
                        [
                            {**r, "config": "b10"}
                            for r in mode_rows
                            if r["config"] in ("batch=10", "batch=10,concurrency=40")
                        ],
                        "jobs_per_s",
                    ),
                ]
        out.append("")
    return out


async def amain(args: argparse.Namespace) -> int:
    admin = harness.server_dsn(args)
    info = await harness.server_info(admin)
    print(
        f"PostgreSQL {info['server_version']}, fsync={info['fsync']}, "
        f"synchronous_commit={info['synchronous_commit']}; load {info['load_avg_at_start']}\n"
    )
    proxy = None
    cost: list[dict[str, Any]] = []
    if args.rtt_ms:
        cost = await harness.proxy_cost(admin, args.rtt_ms)
        print("SELECT 1 round trip, ms:\n\n" + harness.table(cost, ["path", "p50_ms", "p95_ms"]))
        print()
        proxy = harness.Proxy(admin, args.rtt_ms)
    records: list[dict[str, Any]] = []
    try:
        for round_no in range(1, args.rounds + 1):
            records += await run_round(args, admin, round_no, proxy)
    finally:
        if proxy:
            proxy.close()
    lines = report(args, records)
    print("\n".join(lines))
    name = f"defaults_rtt{args.rtt_ms:g}" if args.rtt_ms else "defaults"
    return harness.finish(
        name,
        {"server": info, "proxy_cost": cost, "records": records, "report": lines},
        records,
    )


def parse_args() -> argparse.Namespace:
    parser = harness.parser_for(__doc__)
    parser.add_argument("--n", type=int, default=20000, help="jobs per drain")
    parser.add_argument("--modes", default="defaults,best,pickup")
    parser.add_argument("--contenders", default="worker,pgqueuer")
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="run through rtt_proxy.py")
    parser.add_argument("--jobs", type=int, default=200, help="pickup jobs per run")
    parser.add_argument("--spacing-ms", type=float, default=20.0)
    args = parser.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    args.contenders = [c for c in args.contenders.split(",") if c]
    if not set(args.modes) <= set(CONFIGS) or not set(args.contenders) <= {"worker", "pgqueuer"}:
        parser.error(f"--modes: {','.join(CONFIGS)}; --contenders: worker,pgqueuer")
    if min(args.n, args.rounds, args.jobs) < 1 or args.rtt_ms < 0:
        parser.error("--n, --rounds and --jobs must be positive, --rtt-ms 0 or more")
    return args


if __name__ == "__main__":
    sys.exit(uvloop.run(amain(parse_args())))
