"""How fast application code enqueues: worker.client against pgqueuer's `Queries.enqueue`.

Two fresh databases on the server `--dsn` names: one migrated with this project's schema,
one with pgqueuer's (durable: LOGGED tables). Each round, interleaved, on one asyncpg
connection per contender, outside any explicit transaction (each call commits):

* single: `--single` sequential enqueues of one job (`client.enqueue` against pgqueuer's
  `Queries.enqueue(entrypoint, payload)`), one round trip each;
* batch: `--batch` jobs in one call (`client.enqueue_many` against `Queries.enqueue` with
  lists);
* floor (reference, not a contender): the same number of rows inserted into job_queue by one
  `INSERT ... SELECT FROM generate_series` that never leaves the server: what the table and
  its indexes cost on this machine, whatever the client does.

Both tables are truncated between rounds (untimed), so every round starts alike. Prints a
Markdown table of the medians over `--rounds`, and drops both databases at the end.

    python bench/enqueue.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker import client, migrations, store

TASK_TYPE = "bench_noop"
# Bench data only (the client's SQL lives in worker/client.sql). $1 = rows.
FLOOR = """
INSERT INTO job_queue (task_type, payload)
SELECT 'bench_noop', jsonb_build_object('i', i) FROM generate_series(1, $1) AS i
"""


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def admin(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def timed(work: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await work()
    return time.perf_counter() - started


class Ours:
    name = "worker.client"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def single(self, count: int) -> None:
        for i in range(count):
            await client.enqueue(self.conn, TASK_TYPE, {"i": i})

    async def batch(self, count: int) -> None:
        ids = await client.enqueue_many(
            self.conn, [client.Job(TASK_TYPE, {"i": i}) for i in range(count)]
        )
        assert len(ids) == count

    async def reset(self) -> None:
        await self.conn.execute("TRUNCATE job_queue, job_runs")


class Pgqueuer:
    name = "pgqueuer 1.6"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.queries = Queries(AsyncpgDriver(conn))

    async def single(self, count: int) -> None:
        for i in range(count):
            await self.queries.enqueue(TASK_TYPE, str(i).encode())

    async def batch(self, count: int) -> None:
        payloads: list[bytes | None] = [str(i).encode() for i in range(count)]
        ids = await self.queries.enqueue([TASK_TYPE] * count, payloads, [0] * count)
        assert len(ids) == count

    async def reset(self) -> None:
        await self.conn.execute("TRUNCATE pgqueuer")


async def setup(dsn: str) -> tuple[str, str]:
    ours, theirs = (f"bench_enqueue_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("w", "p"))
    for name in (ours, theirs):
        await admin(dsn, f"CREATE DATABASE {name}")
    db = await store.connect(with_database(dsn, ours))
    try:
        await migrations.migrate(db)
    finally:
        await db.close()
    conn = await asyncpg.connect(with_database(dsn, theirs))
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()
    return ours, theirs


async def run(dsn: str, rounds: int, single: int, batch: int) -> dict[str, dict[str, float]]:
    ours_db, theirs_db = await setup(dsn)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        conns = [
            await asyncpg.connect(with_database(dsn, ours_db)),
            await asyncpg.connect(with_database(dsn, theirs_db)),
        ]
        contenders: list[Ours | Pgqueuer] = [Ours(conns[0]), Pgqueuer(conns[1])]
        for contender in contenders:  # untimed: prepares the statements
            await contender.single(5)
            await contender.batch(10)
            await contender.reset()
        for index in range(rounds):
            order = contenders if index % 2 == 0 else contenders[::-1]
            for contender in order:
                got = results.setdefault(contender.name, {"single": [], "batch": []})
                got["single"].append(single / await timed(lambda c=contender: c.single(single)))
                await contender.reset()
                got["batch"].append(batch / await timed(lambda c=contender: c.batch(batch)))
                await contender.reset()
            floor = results.setdefault("floor: INSERT ... SELECT on the server", {"batch": []})
            floor["batch"].append(batch / await timed(lambda: conns[0].execute(FLOOR, batch)))
            await contenders[0].reset()
            print(f"round {index + 1}/{rounds} done", file=sys.stderr)
        for conn in conns:
            await conn.close()
    finally:
        for name in (ours_db, theirs_db):
            await admin(dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return {
        name: {kind: statistics.median(values) for kind, values in kinds.items()}
        for name, kinds in results.items()
    }


def table(medians: dict[str, dict[str, float]], single: int, batch: int) -> str:
    lines = [
        f"| enqueue (jobs/s, median) | single, {single:,} sequential | batch of {batch:,} |",
        "| --- | ---: | ---: |",
    ]
    for name, kinds in medians.items():
        one = f"{kinds['single']:,.0f}" if "single" in kinds else "-"
        lines.append(f"| {name} | {one} | {kinds['batch']:,.0f} |")
    return "\n".join(lines)


def embedded_server() -> str:
    """A throwaway server, so the benchmark also runs on a machine with no PostgreSQL."""
    from worker import embedded  # noqa: PLC0415 - only needed without --dsn

    base = Path(tempfile.mkdtemp(prefix="worker-bench-pg-"))
    print(f"> no --dsn: using an embedded PostgreSQL in {base}", file=sys.stderr)
    return embedded.start(base, cleanup_mode="delete")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="an admin DSN (default: a throwaway embedded PostgreSQL)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--single", type=int, default=2000, help="jobs enqueued one by one")
    parser.add_argument("--batch", type=int, default=100_000, help="jobs in the one batch")
    args = parser.parse_args()
    dsn = args.dsn or embedded_server()
    medians = asyncio.run(run(dsn, args.rounds, args.single, args.batch))
    print(table(medians, args.single, args.batch))


if __name__ == "__main__":
    main()
