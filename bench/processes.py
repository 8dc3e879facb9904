"""1, 2 and 4 worker processes draining one database: throughput, and where the time goes.

    python bench/processes.py [--dsn URL] [--rounds 3] [--n 20000] [--counts 1,2,4]
        [--paths loopback,proxy] [--rtt-ms 2.4] [--worker-env WORKER_CLAIM_BATCH=1000,...]

Each run: a fresh database, `--n` no-op jobs inserted with plain SQL while queue `default`
is paused, then the `python -m worker` processes (only DATABASE_URL and the handler module
set, plus `--worker-env`); once each has its LISTEN connection up, the queue is resumed and
NOTIFY sent, and the clock runs from there to all jobs committed done (the tables polled
every 5 ms). So start-up is left out: this is the fleet's drain rate.

Where the time goes, over the drain, as shares of all CPUs (2 here): `worker` (the worker
processes), `backend` (the server processes serving the database), `other` (everything
else busy on the machine: the bench's polling, the proxy, the server's WAL writer, other
users of the machine) and `idle`; plus worker and backend CPU per job in us. `proxy`
runs every worker through rtt_proxy.py adding `--rtt-ms`. Rounds interleave all
configurations, order rotated each round.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import asyncpg
import harness
import psutil
import uvloop


async def wait_listening(
    connection: asyncpg.Connection, database: str, count: int, running: list[harness.Running]
) -> None:
    deadline = time.perf_counter() + 60
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'LISTEN%'"
    while await connection.fetchval(query, database) < count:
        if time.perf_counter() > deadline or any(r.proc.poll() is not None for r in running):
            raise RuntimeError("the workers did not all start listening")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # each claimer has made its first (empty) claim and waits


async def run_once(
    admin: str, count: int, n: int, proxy: harness.Proxy | None, settings: dict[str, str]
) -> dict[str, Any]:
    async with harness.fresh_database(admin) as (name, dsn):
        await harness.migrate_worker(dsn)
        connection = await asyncpg.connect(dsn)
        running: list[harness.Running] = []
        try:
            await connection.execute(
                "INSERT INTO job_queue_pauses (queue, paused_by) VALUES ('default', 'bench')"
            )
            await harness.enqueue_worker(connection, n)
            target = harness.via(dsn, proxy.port) if proxy else dsn
            running = [
                harness.Running(harness.worker_argv(), harness.worker_env(target, settings))
                for _ in range(count)
            ]
            await wait_listening(connection, name, count, running)
            cpu0 = sum(r.cpu_s() for r in running)
            backend0 = await harness.backend_cpu_s(connection, name) or 0.0
            machine0 = psutil.cpu_times()
            started = time.perf_counter()
            await connection.execute("DELETE FROM job_queue_pauses; NOTIFY job_queue")
            done_at = await harness.wait_drained(
                connection, harness.WORKER_LEFT, "noop", processes=[r.proc for r in running]
            )
            machine1 = psutil.cpu_times()
            worker_s = sum(r.cpu_s() for r in running) - cpu0
            backend = await harness.backend_cpu_s(connection, name)
        finally:
            for each in running:
                each.stop()
            await connection.close()
    elapsed = done_at - started
    capacity = elapsed * (psutil.cpu_count() or 1)
    shares = harness.busy_share(machine0, machine1)
    backend_s = None if backend is None else backend - backend0
    worker_share = worker_s / capacity
    backend_share = None if backend_s is None else backend_s / capacity
    return {
        "jobs_per_s": round(n / elapsed, 1),
        "worker": round(worker_share, 3),
        "backend": None if backend_share is None else round(backend_share, 3),
        "other": round(shares["busy"] - worker_share - (backend_share or 0.0), 3),
        "idle": shares["idle"],
        "worker_us": round(worker_s / n * 1e6, 1),
        "backend_us": None if backend_s is None else round(backend_s / n * 1e6, 1),
    }


async def amain(args: argparse.Namespace) -> int:
    admin = harness.server_dsn(args)
    info = await harness.server_info(admin)
    print(f"PostgreSQL {info['server_version']}; load {info['load_avg_at_start']}\n")
    proxy = harness.Proxy(admin, args.rtt_ms) if "proxy" in args.paths else None
    configs = [(path, count) for path in args.paths for count in args.counts]
    records: list[dict[str, Any]] = []
    try:
        for round_no in range(1, args.rounds + 1):
            for path, count in harness.rotated(configs, round_no - 1):
                record: dict[str, Any] = {"round": round_no, "path": path, "processes": count}
                try:
                    record |= await run_once(
                        admin, count, args.n, proxy if path == "proxy" else None, args.worker_env
                    )
                except (RuntimeError, TimeoutError, asyncpg.PostgresError) as exc:
                    record["error"] = str(exc)
                harness.log(f"round {round_no}: {record}")
                records.append(record)
    finally:
        if proxy:
            proxy.close()
    rows = harness.medians(records, ["path", "processes"])
    where = f"proxy: +{args.rtt_ms:g} ms RTT through rtt_proxy.py"
    lines = [
        f"### {args.n} no-op jobs, N worker processes on one database ({where})",
        "",
        harness.table(
            rows,
            [
                "path",
                "processes",
                "jobs_per_s",
                "worker",
                "backend",
                "other",
                "idle",
                "worker_us",
                "backend_us",
                "ok",
            ],
            "jobs_per_s",
        ),
        "",
        "worker, backend, other, idle: shares of all CPUs over the drain",
    ]
    print("\n".join(lines))
    return harness.finish(
        "processes",
        {"server": info, "settings": vars(args), "records": records, "report": lines},
        records,
    )


def parse_args() -> argparse.Namespace:
    parser = harness.parser_for(__doc__)
    parser.add_argument("--n", type=int, default=20000, help="jobs per drain")
    parser.add_argument("--counts", default="1,2,4", help="worker processes per run")
    parser.add_argument("--paths", default="loopback,proxy")
    parser.add_argument("--rtt-ms", type=float, default=2.4, help="round trip the proxy adds")
    parser.add_argument(
        "--worker-env", default="", help="extra worker settings, NAME=value,... (WORKER_*)"
    )
    args = parser.parse_args()
    try:
        args.counts = [int(c) for c in args.counts.split(",") if c]
    except ValueError:
        parser.error("--counts: numbers such as 1,2,4")
    args.paths = [p for p in args.paths.split(",") if p]
    pairs = [item.partition("=") for item in args.worker_env.split(",") if item]
    if any(not k.startswith("WORKER_") or not sep for k, sep, _ in pairs):
        parser.error("--worker-env: WORKER_NAME=value pairs, comma-separated")
    args.worker_env = {k: v for k, _, v in pairs}
    if not set(args.paths) <= {"loopback", "proxy"} or not args.counts:
        parser.error("--paths: loopback and/or proxy; --counts: at least one")
    if min(args.n, args.rounds, *args.counts) < 1 or args.rtt_ms < 0:
        parser.error("--n, --rounds, --counts must be positive")
    return args


if __name__ == "__main__":
    sys.exit(uvloop.run(amain(parse_args())))
