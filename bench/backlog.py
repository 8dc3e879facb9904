"""A drain with and without a million rows the worker cannot take, and the idle poll's cost.

    python bench/backlog.py [--dsn URL] [--rounds 3] [--n 20000] [--backlog 1000000]
        [--variants none,paused,other_queue,unserved_type,future]

Every variant has its own database, migrated, holding `--backlog` rows the worker may not
claim (inserted once with INSERT ... SELECT generate_series, then VACUUM ANALYZE: rows
that have sat in the table a while, as autovacuum would have analyzed them;
`--no-analyze`: VACUUM only), all with the same worker configuration,
WORKER_QUEUES=default,held and the `noop` handler:

* none: no such rows (the baseline);
* paused: the rows are in queue `held`, which is paused;
* other_queue: in queue `elsewhere`, which this worker does not serve;
* unserved_type: in queue `default`, task type `other_service`, which it has no handler for;
* future: `noop` jobs in queue `default` due tomorrow.

Each round, in every variant's database (order rotated each round), `--n` due `noop` jobs
are inserted with one plain INSERT (no ANALYZE) and `python -m worker --once` (only
DATABASE_URL, WORKER_HANDLER_MODULES and WORKER_QUEUES set) is timed from start to exit,
which is after it drained them. Then the drained rows are deleted and the tables vacuumed,
so every round starts alike. `ratio` = drain time / the baseline's, same round.

Busy claim: before each drain, the claim statement taking 100 of the due jobs, as
EXPLAIN (ANALYZE) EXECUTE in a transaction rolled back (`busy_ms`). Idle poll: with nothing
claimable, the worker's claim statement (finish_and_claim from
worker/queries.sql with the claim spec `python -m worker` sends: its queues, `noop`, 100
jobs) on a session set up as the engine's (worker.store.connect: generic plans, JIT off),
measured two ways: `EXPLAIN (ANALYZE) EXECUTE` of the prepared statement, so the generic
plan the worker runs (`explain_ms`: planning + execution as the server reports them), and
the statement's round trip as the worker times it (`claim_ms`, loopback). Medians of 30.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from typing import Any

import asyncpg
import harness
import uvloop

QUEUES = "default,held"
VARIANTS: dict[str, str] = {
    "none": "",
    "paused": "INSERT INTO job_queue (queue, task_type, payload) "
    "SELECT 'held', 'noop', jsonb_build_object('i', g) FROM generate_series(1, $1::int) g",
    "other_queue": "INSERT INTO job_queue (queue, task_type, payload) "
    "SELECT 'elsewhere', 'noop', jsonb_build_object('i', g) FROM generate_series(1, $1::int) g",
    "unserved_type": "INSERT INTO job_queue (queue, task_type, payload) "
    "SELECT 'default', 'other_service', jsonb_build_object('i', g) "
    "FROM generate_series(1, $1::int) g",
    "future": "INSERT INTO job_queue (queue, task_type, payload, run_at) "
    "SELECT 'default', 'noop', jsonb_build_object('i', g), now() + interval '1 day' "
    "FROM generate_series(1, $1::int) g",
}
POLL_SAMPLES = 30


async def load(dsn: str, variant: str, backlog: int, analyze: bool) -> float:
    """Migrate and add the variant's rows; seconds it took."""
    started = time.perf_counter()
    await harness.migrate_worker(dsn)
    connection = await asyncpg.connect(dsn)
    try:
        if VARIANTS[variant]:
            await connection.execute(VARIANTS[variant], backlog)
        if variant == "paused":
            await connection.execute(
                "INSERT INTO job_queue_pauses (queue, paused_by, reason) "
                "VALUES ('held', 'bench', 'backlog variant')"
            )
        await connection.execute("VACUUM ANALYZE job_queue" if analyze else "VACUUM job_queue")
    finally:
        await connection.close()
    return time.perf_counter() - started


async def drain_once(dsn: str, n: int) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    try:
        await harness.enqueue_worker(connection, n)
        busy_ms = await busy_claim(dsn)
        running = harness.Running(
            harness.worker_argv("--once"), harness.worker_env(dsn, {"WORKER_QUEUES": QUEUES})
        )
        code = await asyncio.to_thread(running.proc.wait, harness.RUN_TIMEOUT_S)
        elapsed = time.perf_counter() - running.started
        _, tail = running.stop()
        done = await connection.fetchval(
            "SELECT count(*) FROM job_queue WHERE task_type = 'noop' AND status = 'succeeded'"
        )
        # the next round starts from the same table
        await connection.execute("DELETE FROM job_queue WHERE status = 'succeeded'")
        await connection.execute("TRUNCATE job_runs")
        await connection.execute("VACUUM job_queue")
    finally:
        await connection.close()
    if code not in (0, None) or done != n:
        raise RuntimeError(f"exit {code}, {done} of {n} done: {tail}")
    return {"drain_s": round(elapsed, 3), "jobs_per_s": round(n / elapsed, 1), "busy_ms": busy_ms}


def claim_args() -> list[Any]:
    """finish_and_claim's arguments for a claim alone, as the worker sends them."""
    from worker import store  # noqa: PLC0415

    spec = store.ClaimSpec(
        queues=QUEUES.split(","), limit=100, task_types=["noop"], max_attempts=[3], lease_s=60.0
    )
    no_outcomes: list[list[Any]] = [[] for _ in range(13)]
    return [
        *no_outcomes,
        "bench:idle",
        list(spec.queues),
        spec.limit,
        list(spec.task_types),
        float(spec.lease_s),
        list(spec.max_attempts),
        *spec.limit_arrays(),
    ]


def literal(value: Any) -> str:
    """An untyped SQL literal for EXECUTE (which takes no bind parameters); the prepared
    statement's parameter types apply. Only what claim_args holds: text, numbers, arrays."""
    if isinstance(value, list):
        items = ["NULL" if v is None else '"' + str(v) + '"' for v in value]
        return "'{" + ",".join(items) + "}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


async def busy_claim(dsn: str, samples: int = 5) -> float:
    """The claim statement taking 100 due jobs (EXPLAIN ANALYZE EXECUTE, rolled back):
    planning + execution, median, ms."""
    from worker import queries, store  # noqa: PLC0415

    db = await store.connect(dsn, max_size=1)
    literals = ", ".join(literal(a) for a in claim_args())
    times = []
    try:
        async with db.pool.acquire() as connection:
            await connection.execute("PREPARE busy_claim AS " + queries.QUERIES["finish_and_claim"])
            for _ in range(samples):
                transaction = connection.transaction()
                await transaction.start()
                plan = await connection.fetchval(
                    "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE busy_claim(" + literals + ")"
                )
                await transaction.rollback()
                top = json.loads(plan)[0]
                times.append(top["Planning Time"] + top["Execution Time"])
            await connection.execute("DEALLOCATE busy_claim")
    finally:
        await db.close()
    return round(statistics.median(times), 3)


async def idle_poll(dsn: str) -> dict[str, Any]:
    from worker import queries, store  # noqa: PLC0415

    db = await store.connect(dsn, max_size=1)
    args = claim_args()
    explain, claim = [], []
    try:
        async with db.pool.acquire() as connection:
            statement = await connection.prepare(queries.QUERIES["finish_and_claim"])
            literals = ", ".join(literal(a) for a in args)
            await connection.execute("PREPARE idle_claim AS " + queries.QUERIES["finish_and_claim"])
            for _ in range(POLL_SAMPLES):
                started = time.perf_counter()
                await statement.fetch(*args)
                claim.append((time.perf_counter() - started) * 1000)
                plan = await connection.fetchval(
                    "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE idle_claim(" + literals + ")"
                )
                top = json.loads(plan)[0]
                explain.append(top["Planning Time"] + top["Execution Time"])
            await connection.execute("DEALLOCATE idle_claim")
    finally:
        await db.close()
    return {
        "explain_ms": round(statistics.median(explain), 3),
        "claim_ms": round(statistics.median(claim), 3),
    }


async def amain(args: argparse.Namespace) -> int:
    admin = harness.server_dsn(args)
    info = await harness.server_info(admin)
    print(f"PostgreSQL {info['server_version']}; load {info['load_avg_at_start']}\n")
    records: list[dict[str, Any]] = []
    databases: dict[str, tuple[str, str]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for variant in args.variants:
            databases[variant] = await stack.enter_async_context(harness.fresh_database(admin))
            seconds = await load(databases[variant][1], variant, args.backlog, not args.no_analyze)
            harness.log(
                f"{variant}: {args.backlog if variant != 'none' else 0} rows in {seconds:.1f} s"
            )
        for round_no in range(1, args.rounds + 1):
            base: float | None = None
            round_records = []
            for variant in harness.rotated(args.variants, round_no - 1):
                record: dict[str, Any] = {"round": round_no, "variant": variant}
                try:
                    record |= await drain_once(databases[variant][1], args.n)
                    record |= await idle_poll(databases[variant][1])
                except (RuntimeError, TimeoutError, asyncpg.PostgresError) as exc:
                    record["error"] = str(exc)
                harness.log(f"round {round_no}: {record}")
                round_records.append(record)
                if variant == "none" and "drain_s" in record:
                    base = record["drain_s"]
            for record in round_records:
                if base and "drain_s" in record:
                    record["ratio"] = round(record["drain_s"] / base, 3)
            records += round_records
    rows = harness.medians(records, ["variant"])
    backlog_text = f"{args.backlog:,}"
    lines = [
        f"### drain {args.n} jobs with `python -m worker --once`, beside {backlog_text} rows "
        "it cannot take",
        "",
        harness.table(
            rows,
            [
                "variant",
                "drain_s",
                "jobs_per_s",
                "ratio",
                "busy_ms",
                "explain_ms",
                "claim_ms",
                "ok",
            ],
            "ratio",
        ),
        "",
        "ratio: drain time / the same round's baseline (target <= 1.25); busy_ms: the claim "
        "statement taking 100 due jobs (EXPLAIN ANALYZE, rolled back, median of 5); "
        "explain_ms, claim_ms: the idle poll's claim statement, median of 30",
    ]
    print("\n".join(lines))
    return harness.finish(
        "backlog",
        {"server": info, "settings": vars(args), "records": records, "report": lines},
        records,
    )


def parse_args() -> argparse.Namespace:
    parser = harness.parser_for(__doc__)
    parser.add_argument("--n", type=int, default=20000, help="jobs drained per run")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="rows it cannot take")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="VACUUM the loaded rows without ANALYZE (autovacuum may still analyze them)",
    )
    args = parser.parse_args()
    args.variants = [v for v in args.variants.split(",") if v]
    if not set(args.variants) <= set(VARIANTS) or "none" not in args.variants:
        parser.error(f"--variants: some of {','.join(VARIANTS)}, with none (the baseline)")
    if min(args.n, args.rounds, args.backlog) < 1:
        parser.error("--n, --rounds and --backlog must be positive")
    return args


if __name__ == "__main__":
    sys.exit(uvloop.run(amain(parse_args())))
