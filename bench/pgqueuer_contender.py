"""Benchmark contender: pgqueuer (PyPI release, asyncpg driver, uvloop).

Contender contract (shared with ``bench/worker_contender.py``)
---------------------------------------------------------------
Invocation::

    python bench/pgqueuer_contender.py --dsn DSN --scenario {drain,pickup,enqueue}
        [--n 20000] [--batch 10] [--jobs 200] [--spacing-ms 20] [--timeout 300]

* ``--dsn`` names an EMPTY, freshly created database. The contender installs its
  own schema there first (untimed). pgqueuer is installed in ``durable`` mode:
  every table is LOGGED; the script verifies this and refuses otherwise.
* ``drain``: enqueue ``--n`` no-op jobs in batches (untimed), then start the
  consumers and time from their start until every job has been handled AND its
  completion committed (pgqueuer deletes finished jobs, so: queue table empty).
* ``pickup``: consumers idle; a producer in a separate process inserts ``--jobs``
  jobs one statement at a time, ``--spacing-ms`` apart. Latency per job is
  handler start minus the moment the committed INSERT returned to the producer
  (``time.perf_counter`` = CLOCK_MONOTONIC, comparable across processes).
* ``enqueue``: ``n // 10`` single-row inserts (one autocommit statement each),
  then ``n`` jobs through the batch API in chunks of ``--batch``.
* The LAST line of stdout is one JSON object with at least ``contender``,
  ``config``, ``scenario`` and the scenario metrics: ``jobs_per_s`` (drain),
  ``p50_ms``/``p95_ms`` (pickup), ``single_jobs_per_s``/``batch_jobs_per_s``
  (enqueue). Diagnostics go to stderr.
* The script exits non-zero on error or after ``--timeout`` seconds.

pgqueuer configuration
----------------------
Four ``QueueManager`` instances in ONE process and event loop (uvloop), each on
its own asyncpg connection, all serving one no-op entrypoint without concurrency
limits; ``batch_size`` comes from ``--batch``. Running several managers
concurrently in a single process is what pgqueuer's own benchmark tool
(``tools/benchmark.py``, ``--dequeue N``) does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import uvloop
from common import summarize
from pgqueuer.db import AsyncpgDriver
from pgqueuer.errors import FailingListenerError
from pgqueuer.models import Job
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries

CONTENDER = "pgqueuer"
ENTRYPOINT = "bench_noop"
MANAGERS = 4
PRELOAD_CHUNK = 1000
QUEUE_TABLE = "pgqueuer"
PGQUEUER_TABLES = ("pgqueuer", "pgqueuer_log", "pgqueuer_statistics")
EMPTY_POLL_S = 0.001


def log(message: str) -> None:
    print(f"[pgqueuer] {message}", file=sys.stderr, flush=True)


@dataclass
class Completion:
    """Counts handled jobs and fires an event once ``target`` is reached."""

    target: int
    count: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()


@dataclass
class Consumers:
    """The running queue managers, their connections and their tasks."""

    managers: list[QueueManager]
    connections: list[asyncpg.Connection]
    tasks: list[asyncio.Task[None]]

    async def stop(self) -> None:
        for manager in self.managers:
            manager.shutdown.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for connection in self.connections:
            await connection.close()


# --------------------------------------------------------------------- setup


async def install_schema(dsn: str) -> None:
    """Install pgqueuer (durable: all tables LOGGED) and verify persistence."""
    connection = await asyncpg.connect(dsn)
    try:
        await Queries(AsyncpgDriver(connection)).install()
        rows = await connection.fetch(
            "SELECT relname, relpersistence::text AS relpersistence"
            " FROM pg_class WHERE relname = ANY($1)",
            list(PGQUEUER_TABLES),
        )
    finally:
        await connection.close()
    persistence = {row["relname"]: row["relpersistence"] for row in rows}
    if persistence != {name: "p" for name in PGQUEUER_TABLES}:
        raise RuntimeError(f"pgqueuer tables are not all LOGGED: {persistence}")


async def preload(dsn: str, n: int) -> None:
    """Enqueue ``n`` jobs through pgqueuer's batch API, then ANALYZE."""
    connection = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(connection))
        for start in range(0, n, PRELOAD_CHUNK):
            size = min(PRELOAD_CHUNK, n - start)
            payloads: list[bytes | None] = [str(i).encode() for i in range(start, start + size)]
            await queries.enqueue([ENTRYPOINT] * size, payloads, [0] * size)
        await connection.execute(f"ANALYZE {QUEUE_TABLE}")
    finally:
        await connection.close()


async def start_consumers(dsn: str, batch: int, on_job: Callable[[Job], None]) -> Consumers:
    """Start MANAGERS queue managers, each on its own connection."""
    connections = [await asyncpg.connect(dsn) for _ in range(MANAGERS)]
    managers = [QueueManager(Queries(AsyncpgDriver(c))) for c in connections]
    for manager in managers:

        @manager.entrypoint(ENTRYPOINT)
        async def handle(job: Job) -> None:
            on_job(job)

    tasks = [asyncio.create_task(m.run(batch_size=batch)) for m in managers]
    return Consumers(managers, connections, tasks)


async def wait_for_completion(completion: Completion, consumers: Consumers) -> None:
    """Wait until all jobs are handled; fail fast if a manager dies."""
    waiter = asyncio.create_task(completion.done.wait())
    done, _ = await asyncio.wait({waiter, *consumers.tasks}, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        for task in done:
            task.result()  # re-raise the manager's exception, if any
        raise RuntimeError("a queue manager stopped before all jobs were handled")


async def wait_queue_empty(dsn: str) -> None:
    """Poll until every completion is committed (pgqueuer deletes done jobs)."""
    connection = await asyncpg.connect(dsn)
    try:
        query = f"SELECT EXISTS (SELECT 1 FROM {QUEUE_TABLE})"
        while await connection.fetchval(query):  # noqa: ASYNC110 - polls another process's writes
            await asyncio.sleep(EMPTY_POLL_S)
    finally:
        await connection.close()


async def wait_listeners_ready(managers: list[QueueManager]) -> None:
    """Round-trip a NOTIFY through every manager's listener."""
    for manager in managers:
        for _attempt in range(100):
            try:
                await manager.listener_healthy(timeout=timedelta(seconds=0.2))
                break
            except FailingListenerError:
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError("queue manager listener never became ready")


# ----------------------------------------------------------------- scenarios


async def run_drain(args: argparse.Namespace) -> dict[str, Any]:
    await preload(args.dsn, args.n)
    log(f"preloaded {args.n} jobs; starting {MANAGERS} managers")
    completion = Completion(args.n)
    started = time.perf_counter()
    consumers = await start_consumers(args.dsn, args.batch, lambda _: completion.hit())
    try:
        await wait_for_completion(completion, consumers)
        handled = time.perf_counter()
        await wait_queue_empty(args.dsn)
        committed = time.perf_counter()
    finally:
        await consumers.stop()
    log(f"handled after {handled - started:.3f}s, committed {committed - started:.3f}s")
    return {
        "n": args.n,
        "jobs_per_s": round(args.n / (committed - started), 1),
        "handler_jobs_per_s": round(args.n / (handled - started), 1),
        "elapsed_s": round(committed - started, 4),
    }


async def run_pickup(args: argparse.Namespace) -> dict[str, Any]:
    starts: dict[int, float] = {}
    completion = Completion(args.jobs)

    def on_job(job: Job) -> None:
        starts[int(job.payload or b"-1")] = time.perf_counter()
        completion.hit()

    consumers = await start_consumers(args.dsn, args.batch, on_job)
    try:
        await wait_listeners_ready(consumers.managers)
        await asyncio.sleep(0.5)  # let every manager settle into its idle wait
        log(f"consumers idle; producing {args.jobs} jobs {args.spacing_ms} ms apart")
        commits = await run_producer_process(args)
        await wait_for_completion(completion, consumers)
    finally:
        await consumers.stop()
    latencies = [(starts[i] - commits[i]) * 1000 for i in range(args.jobs)]
    return {"jobs": args.jobs, "spacing_ms": args.spacing_ms, **summarize(latencies)}


async def run_enqueue(args: argparse.Namespace) -> dict[str, Any]:
    n_single = max(args.n // 10, 1)
    connection = await asyncpg.connect(args.dsn)
    try:
        queries = Queries(AsyncpgDriver(connection))
        await queries.enqueue(ENTRYPOINT, b"warmup")  # untimed: prepares statement
        single_s = await time_single_inserts(queries, n_single)
        batch_s = await time_batch_inserts(queries, args.n, args.batch)
    finally:
        await connection.close()
    return {
        "n_single": n_single,
        "n_batch": args.n,
        "single_jobs_per_s": round(n_single / single_s, 1),
        "batch_jobs_per_s": round(args.n / batch_s, 1),
    }


async def time_single_inserts(queries: Queries, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        await queries.enqueue(ENTRYPOINT, str(i).encode())
    return time.perf_counter() - started


async def time_batch_inserts(queries: Queries, count: int, batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, count, batch):
        size = min(batch, count - start)
        payloads: list[bytes | None] = [str(i).encode() for i in range(start, start + size)]
        await queries.enqueue([ENTRYPOINT] * size, payloads, [0] * size)
    return time.perf_counter() - started


# ------------------------------------------------------- pickup producer side


async def run_producer_process(args: argparse.Namespace) -> list[float]:
    """Run the pickup producer as a child process; return its commit times."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--role=producer",
        f"--dsn={args.dsn}",
        "--scenario=pickup",
        f"--jobs={args.jobs}",
        f"--spacing-ms={args.spacing_ms}",
        f"--timeout={args.timeout}",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        stdout, _ = await process.communicate()
    except asyncio.CancelledError:  # our own timeout: do not leave it running
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"pickup producer exited with {process.returncode}")
    commits = json.loads(stdout.decode().strip().splitlines()[-1])
    if len(commits) != args.jobs:
        raise RuntimeError(f"producer reported {len(commits)} of {args.jobs} jobs")
    return [float(t) for t in commits]


async def produce_spaced(args: argparse.Namespace) -> list[float]:
    """Insert jobs one at a time on a fixed schedule; record commit-return times."""
    connection = await asyncpg.connect(args.dsn)
    try:
        queries = Queries(AsyncpgDriver(connection))
        spacing = args.spacing_ms / 1000
        commits: list[float] = []
        origin = time.perf_counter()
        for i in range(args.jobs):
            delay = origin + i * spacing - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await queries.enqueue(ENTRYPOINT, str(i).encode())
            commits.append(time.perf_counter())
    finally:
        await connection.close()
    return commits


# ------------------------------------------------------------------- helpers


SCENARIOS = {"drain": run_drain, "pickup": run_pickup, "enqueue": run_enqueue}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--spacing-ms", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--role", choices=("main", "producer"), default="main")
    args = parser.parse_args(argv)
    if min(args.n, args.batch, args.jobs) < 1:
        parser.error("--n, --batch and --jobs must be positive")
    return args


async def main_role(args: argparse.Namespace) -> dict[str, Any]:
    await install_schema(args.dsn)
    metrics = await SCENARIOS[args.scenario](args)
    return {
        "contender": CONTENDER,
        "config": f"batch={args.batch},managers={MANAGERS}",
        "scenario": args.scenario,
        **metrics,
    }


async def run(args: argparse.Namespace) -> object:
    if args.role == "producer":
        return await asyncio.wait_for(produce_spaced(args), args.timeout)
    return await asyncio.wait_for(main_role(args), args.timeout)


def main() -> int:
    args = parse_args()
    try:
        result = uvloop.run(run(args))
    except TimeoutError:
        log(f"timed out after {args.timeout:g}s")
        return 3
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
