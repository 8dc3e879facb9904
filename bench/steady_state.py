"""Steady state: one real worker process through 100,000 jobs with the pruner on.

Usage::

    python bench/steady_state.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
        [--jobs 100000] [--rate 400] [--retain-s 60] [--prune-interval-s 5]
        [--sample-s 2] [--json PATH]

Without --dsn (and $BENCH_DATABASE_URL) a throwaway embedded PostgreSQL in a temp dir;
with it, a fresh database `steady_<random>` on that server, dropped at the end.

The harness starts `python -m worker` (metrics endpoint on, scheduler off, retention of
`--retain-s` seconds for succeeded jobs and job_runs, pruner every `--prune-interval-s`),
enqueues jobs at a steady `--rate` per second in small batches (90 % noop, 8 % echo, 2 %
flaky jobs that retry once), and samples every `--sample-s`: the worker's RSS, jobs done,
attempts from /metrics, and for job_queue and job_runs their total size, heap and index
sizes, live and dead tuples (pg_stat_user_tables) and autovacuum counts. It prints
Markdown tables: RSS at 10/25/50/75/100 % of the jobs with a least-squares slope over the
second half, and table sizes over time, which should plateau once retention kicks in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil

from worker import migrations, store

TABLES = ("job_queue", "job_runs")
MILESTONES = (0.10, 0.25, 0.50, 0.75, 1.00)
FEED_TICK_S = 0.1
# Per 100 jobs: the mix the harness enqueues (task type, payload, count).
MIX = (
    ("noop", {"user_id": "8d5e1c2a-0000-4000-8000-000000000000", "pad": "x" * 120}, 90),
    ("echo", {"message": "steady state"}, 8),
    ("flaky", {"fail_times": 1}, 2),
)
# The retry of a flaky job is one more attempt; every other job is one attempt.
RETRIES_PER_100 = 2

STATS_SQL = """
SELECT s.relname AS table_name,
       pg_total_relation_size(s.relid) AS total_bytes,
       pg_relation_size(s.relid) AS heap_bytes,
       pg_indexes_size(s.relid) AS index_bytes,
       s.n_live_tup AS live, s.n_dead_tup AS dead,
       s.autovacuum_count AS autovacuums, s.autoanalyze_count AS autoanalyzes
  FROM pg_stat_user_tables s
 WHERE s.relname = ANY($1::text[])
"""
INDEX_SQL = """
SELECT indexrelname AS index_name, pg_relation_size(indexrelid) AS bytes
  FROM pg_stat_user_indexes WHERE relname = ANY($1::text[]) ORDER BY indexrelname
"""
LIVE_JOBS_SQL = "SELECT count(*) FROM job_queue WHERE status IN ('pending', 'running')"


@dataclass
class Sample:
    elapsed_s: float
    enqueued: int
    done: int
    attempts: int
    rss_bytes: int
    tables: dict[str, dict[str, int]]
    indexes: dict[str, int]


@dataclass
class Run:
    args: dict[str, Any]
    server: str
    command: str
    samples: list[Sample] = field(default_factory=list)
    drain_s: float = 0.0


# ---------------------------------------------------------------- database


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def database(dsn: str | None) -> Any:
    """Yield the DSN of an empty database: a fresh one on --dsn's server, or embedded."""
    if dsn is None:
        from worker import embedded  # noqa: PLC0415 - only needed without --dsn

        base = Path(tempfile.mkdtemp(prefix="worker-steady-pg-"))
        print(f"> no --dsn: using an embedded PostgreSQL in {base}", file=sys.stderr)
        yield embedded.start(base, cleanup_mode="delete")
        return
    name = f"steady_{secrets.token_hex(5)}"
    await admin(dsn, f"CREATE DATABASE {name}")
    try:
        yield with_database(dsn, name)
    finally:
        await admin(dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def table_stats(conn: asyncpg.Connection) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    rows = await conn.fetch(STATS_SQL, list(TABLES))
    tables = {r["table_name"]: {k: int(v) for k, v in r.items() if k != "table_name"} for r in rows}
    indexes = {r["index_name"]: int(r["bytes"]) for r in await conn.fetch(INDEX_SQL, list(TABLES))}
    return tables, indexes


# ------------------------------------------------------------------ worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_env(dsn: str, args: argparse.Namespace, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    retain_days = str(args.retain_s / 86_400)
    env.update(
        {
            "DATABASE_URL": dsn,
            "WORKER_HTTP_PORT": str(port),
            "WORKER_SCHEDULER": "off",
            "WORKER_HANDLER_MODULES": "handlers.demo",  # noop, echo, flaky: the job mix
            "WORKER_LOG_FORMAT": "json",
            "WORKER_RETRY_BASE_S": "0",
            "WORKER_RETAIN_SUCCEEDED_DAYS": retain_days,
            "WORKER_RETAIN_FAILED_DAYS": retain_days,
            "WORKER_RETAIN_RUNS_DAYS": retain_days,
            "WORKER_PRUNE_INTERVAL_S": str(args.prune_interval_s),
        }
    )
    return env


def start_worker(
    dsn: str, args: argparse.Namespace, port: int, log: Path
) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"],
            env=worker_env(dsn, args, port),
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


async def wait_healthy(client: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"worker exited at start with code {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/health")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise SystemExit("worker never became healthy")


async def attempts_written(client: httpx.AsyncClient) -> int:
    """Sum of worker_jobs_total over its labels: attempts whose outcome was written."""
    text = (await client.get("/metrics")).text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("worker_jobs_total{")
        )
    )


# ---------------------------------------------------------------- harness


def split(start: int, end: int) -> list[tuple[str, dict[str, Any], int]]:
    """Jobs number `start` to `end` - 1 of the run, by type in MIX proportions. Counted
    over the whole run, not per batch, so small batches keep the mix exact."""
    parts = []
    for task_type, payload, per_100 in MIX[1:]:
        parts.append((task_type, payload, end * per_100 // 100 - start * per_100 // 100))
    noop_type, noop_payload, _ = MIX[0]
    parts.insert(0, (noop_type, noop_payload, end - start - sum(c for _, _, c in parts)))
    return [part for part in parts if part[2]]


async def feed(db: store.Store, total: int, rate: float, counter: list[int]) -> None:
    """Enqueue `total` jobs at `rate` per second, on an absolute schedule (no drift)."""
    t0 = time.monotonic()
    batch = max(1, round(rate * FEED_TICK_S))
    tick = 0
    while counter[0] < total:
        n = min(batch, total - counter[0])
        for task_type, payload, count in split(counter[0], counter[0] + n):
            await db.enqueue_many(task_type, [payload] * count)
        counter[0] += n
        tick += 1
        await asyncio.sleep(max(0.0, t0 + tick * FEED_TICK_S - time.monotonic()))


@dataclass
class Probe:
    """What a sample reads: the database, the worker's /metrics and its process."""

    conn: asyncpg.Connection
    client: httpx.AsyncClient
    worker: psutil.Process
    t0: float = field(default_factory=time.monotonic)

    async def sample(self, enqueued: int) -> Sample:
        live_jobs = int(await self.conn.fetchval(LIVE_JOBS_SQL))
        tables, indexes = await table_stats(self.conn)
        return Sample(
            elapsed_s=round(time.monotonic() - self.t0, 2),
            enqueued=enqueued,
            done=enqueued - live_jobs,
            attempts=await attempts_written(self.client),
            rss_bytes=self.worker.memory_info().rss,
            tables=tables,
            indexes=indexes,
        )


def progress(s: Sample) -> str:
    tables = "  ".join(
        f"{t} {v['total_bytes'] / 2**20:5.1f} MB dead {v['dead']:>6}"
        for t, v in sorted(s.tables.items())
    )
    return f"  {s.elapsed_s:7.1f}s done {s.done:>7} rss {s.rss_bytes / 2**20:6.1f} MB  {tables}"


async def sample_until_done(
    probe: Probe, run: Run, total: int, counter: list[int], sample_s: float
) -> None:
    while True:
        s = await probe.sample(counter[0])
        run.samples.append(s)
        print(progress(s), file=sys.stderr, flush=True)
        if s.done >= total:
            run.drain_s = s.elapsed_s
            return
        await asyncio.sleep(sample_s)


async def measure(dsn: str, args: argparse.Namespace, run: Run) -> None:
    db = await store.connect(dsn, max_size=3)
    await migrations.migrate(db)
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="worker-steady-log-")) / "worker.log"
    process = start_worker(dsn, args, port, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await wait_healthy(client, process)
            counter = [0]
            feeder = asyncio.create_task(feed(db, args.jobs, args.rate, counter))
            conn = await asyncpg.connect(dsn)
            try:
                probe = Probe(conn, client, psutil.Process(process.pid))
                await sample_until_done(probe, run, args.jobs, counter, args.sample_s)
            finally:
                await conn.close()
            await feeder
    finally:
        process.terminate()
        code = process.wait(timeout=60)
        await db.close()
        print(f"> worker exited with {code}; its log: {log}", file=sys.stderr)


# ----------------------------------------------------------------- report


def at_fraction(samples: list[Sample], total: int, fraction: float) -> Sample:
    """The first sample with at least `fraction` of the jobs done."""
    return next(s for s in samples if s.done >= fraction * total)


def slope_kb_per_10k(samples: list[Sample]) -> float:
    """Least-squares slope of RSS over jobs done, in KB per 10,000 jobs."""
    xs = [float(s.done) for s in samples]
    ys = [s.rss_bytes / 1024 for s in samples]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return sxy / sxx * 10_000 if sxx else 0.0


def mb(n: int) -> str:
    return f"{n / 2**20:.2f}"


def rss_table(run: Run, total: int) -> list[str]:
    lines = ["| jobs done | elapsed s | worker RSS MB |", "|---:|---:|---:|"]
    for fraction in MILESTONES:
        s = at_fraction(run.samples, total, fraction)
        lines.append(f"| {s.done:,} | {s.elapsed_s:.0f} | {mb(s.rss_bytes)} |")
    return lines


def size_table(run: Run, total: int) -> list[str]:
    lines = [
        "| jobs done | table | total MB | heap MB | indexes MB | live tuples | dead tuples "
        "| autovacuums |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for fraction in MILESTONES:
        s = at_fraction(run.samples, total, fraction)
        for name in TABLES:
            t = s.tables.get(name, {})
            lines.append(
                f"| {s.done:,} | {name} | {mb(t.get('total_bytes', 0))} "
                f"| {mb(t.get('heap_bytes', 0))} | {mb(t.get('index_bytes', 0))} "
                f"| {t.get('live', 0):,} | {t.get('dead', 0):,} | {t.get('autovacuums', 0)} |"
            )
    return lines


def index_table(run: Run, total: int) -> list[str]:
    half, end = at_fraction(run.samples, total, 0.5), run.samples[-1]
    lines = ["| index | MB at 50 % | MB at 100 % |", "|---|---:|---:|"]
    for name in sorted(end.indexes):
        lines.append(f"| {name} | {mb(half.indexes.get(name, 0))} | {mb(end.indexes[name])} |")
    return lines


def plateau_lines(run: Run, total: int) -> list[str]:
    """Per table: size at 50 % and 100 % of the run, and the most dead tuples after 50 %."""
    half, end = at_fraction(run.samples, total, 0.5), run.samples[-1]
    second_half = [s for s in run.samples if s.done >= total / 2]
    lines = []
    for name in TABLES:
        before, after = half.tables[name]["total_bytes"], end.tables[name]["total_bytes"]
        dead_max = max(s.tables[name]["dead"] for s in second_half)
        lines.append(
            f"- {name}: {mb(before)} MB at 50 %, {mb(after)} MB at 100 % "
            f"({(after - before) / before:+.1%}); most dead tuples in the second half {dead_max:,}"
        )
    return lines


def report(run: Run, total: int) -> str:
    second_half = [s for s in run.samples if s.done >= total / 2]
    first, last = run.samples[0], run.samples[-1]
    expected_attempts = total + total * RETRIES_PER_100 // 100
    return "\n".join(
        [
            f"Server: {run.server}",
            f"Command: `{run.command}`",
            f"{total:,} jobs at {run.args['rate']:g}/s, retention {run.args['retain_s']:g} s, "
            f"pruner every {run.args['prune_interval_s']:g} s; done after {run.drain_s:.0f} s; "
            f"attempts written {last.attempts:,} (expected {expected_attempts:,}); "
            f"{len(run.samples)} samples every {run.args['sample_s']:g} s.",
            "",
            *rss_table(run, total),
            "",
            f"RSS slope over the second half ({len(second_half)} samples): "
            f"{slope_kb_per_10k(second_half):+.1f} KB per 10k jobs; RSS at start "
            f"{mb(first.rss_bytes)} MB, max {mb(max(s.rss_bytes for s in run.samples))} MB.",
            "",
            *size_table(run, total),
            "",
            *plateau_lines(run, total),
            "",
            *index_table(run, total),
        ]
    )


# ------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=400.0, help="jobs enqueued per second")
    parser.add_argument("--retain-s", type=float, default=60.0)
    parser.add_argument("--prune-interval-s", type=float, default=5.0)
    parser.add_argument("--sample-s", type=float, default=2.0)
    parser.add_argument("--json", type=Path, help="write every sample here")
    args = parser.parse_args()
    if args.jobs < 100 or args.rate <= 0 or args.retain_s <= 0 or args.sample_s <= 0:
        parser.error("--jobs must be >= 100; --rate, --retain-s and --sample-s > 0")
    return args


def command_line() -> str:
    argv = [a if "://" not in a else "<DSN>" for a in sys.argv[1:]]
    return " ".join(["python bench/steady_state.py", *argv])


async def amain() -> int:
    args = parse_args()
    async with database(args.dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        server = str(await conn.fetchval("SELECT version()")).split(" on ")[0]
        await conn.close()
        run = Run(vars(args) | {"dsn": None, "json": None}, server, command_line())
        await measure(dsn, args, run)
    print(report(run, args.jobs))
    if args.json:
        args.json.write_text(json.dumps(asdict(run), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(amain()))
