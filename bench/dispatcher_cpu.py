"""The dispatcher's own CPU per job, without a database.

    python bench/dispatcher_cpu.py [--jobs 300000] [--batch 100] [--runs 3]

A drain's Python cost mixes the dispatcher (tasks, timeouts, contexts, outcomes) with
asyncpg's encoding and decoding and with PostgreSQL's share of the two cores. This runs
the real Dispatcher on uvloop, with the no-op handler of worker_contender.py, against a
stand-in store whose finish_and_claim answers at once with made-up claimed rows, and
prints CPU microseconds per job (process time, median over --runs). Use it to see what a
change to the per-job path costs; run `py-spy record` on it to see where.

Not a test and not a replacement for bench/run.py: nothing here touches PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import uvloop
import worker_contender as contender

from worker import dispatcher, observability, store

CREATED_AT = datetime(2026, 1, 1, tzinfo=UTC)


class InstantStore:
    """Hands out `jobs` claimed rows, in batches as asked; takes outcomes as asyncpg would
    need them (one column array per field) and reports them all written."""

    pool = None
    handler_pool = None

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.next_id = 1

    def _claim(self, limit: int) -> list[dict[str, Any]]:
        last = min(self.jobs + 1, self.next_id + limit)
        rows = [
            {
                "id": job_id,
                "queue": "default",
                "task_type": contender.TASK,
                "payload": {"i": job_id},
                "attempts": 1,
                "max_attempts": 3,
                "run_type": "queue",
                "schedule_name": None,
                "requested_by": None,
                "created_at": CREATED_AT,
                "trace_context": None,
            }
            for job_id in range(self.next_id, last)
        ]
        self.next_id = last
        return rows

    async def finish_and_claim(
        self,
        rows: Sequence[store.Finish],
        *,
        worker_id: str,
        claim: store.ClaimSpec | None = None,
    ) -> store.Claimed:
        await asyncio.sleep(0)  # a round trip's worth of yielding, without the trip
        columns = list(zip(*sorted(rows), strict=True))
        written = set(columns[0]) if columns else set()
        return store.Claimed(written, self._claim(claim.limit if claim else 0), None)  # type: ignore[arg-type]

    async def ensure_limit_rows(self, task_types: Sequence[str]) -> None:
        pass

    async def claim(self, spec: store.ClaimSpec, *, worker_id: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        return self._claim(spec.limit)


async def one_run(args: argparse.Namespace) -> float:
    settings = contender.make_settings(
        argparse.Namespace(dsn="postgresql://bench@127.0.0.1/none", batch=args.batch, concurrency=0)
    )
    engine = dispatcher.Dispatcher(
        InstantStore(args.jobs),  # type: ignore[arg-type]
        contender.registry(),
        settings,
        once=True,
        keep_results=False,
    )
    started = time.process_time()
    summary = await engine.run()
    cpu_s = time.process_time() - started
    if summary.succeeded != args.jobs:
        raise SystemExit(f"ran {summary.succeeded} of {args.jobs} jobs")
    return cpu_s / args.jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--log-level", default="warning", help="info: with one outcome line per job (default)"
    )
    args = parser.parse_args()
    # Lines go to /dev/null: their cost is building and writing them, not the terminal.
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    observability.configure_logging("json", args.log_level)
    runs = [uvloop.run(one_run(args)) for _ in range(args.runs)]
    print(
        f"dispatcher CPU per job: {statistics.median(runs):.1f} us "
        f"(median of {args.runs}: {', '.join(f'{r:.1f}' for r in runs)}; "
        f"batch {args.batch}, {args.jobs} jobs)"
    )


if __name__ == "__main__":
    main()
