"""pgqueuer's side of the benchmarks, as its users write it: `pgq run pgq_jobs:create_pgqueuer`
with `PGDSN` set. One no-op entrypoint `noop` (payload: the job's number); with
`BENCH_STARTS_FILE` set it appends `<i> <perf_counter>` there when a job starts."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job

_STARTS_FILE = os.environ.get("BENCH_STARTS_FILE")
_STARTS = open(_STARTS_FILE, "a", buffering=1) if _STARTS_FILE else None  # noqa: SIM115


@asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    """The factory shape pgqueuer 1.6 asks for: an async context manager."""
    connection = await asyncpg.connect(os.environ["PGDSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        if _STARTS is not None:
            _STARTS.write(f"{(job.payload or b'-1').decode()} {time.perf_counter()}\n")

    try:
        yield pgq
    finally:
        await connection.close()
