"""The benchmarks' handlers, loaded as a user loads theirs: `WORKER_HANDLER_MODULES=user_jobs`.

`noop` does nothing (with `BENCH_STARTS_FILE` set, it appends `<i> <perf_counter>` there
when it starts, for pickup latency). limits.py sets `BENCH_RATE` (such as `100/2s`) to add
`rated`, and `BENCH_CAPPED` (a number) to add `capped`; both sleep `BENCH_JOB_MS`.
"""

from __future__ import annotations

import asyncio
import os
import time

import pydantic

from worker.registry import JobContext, JobResult, handler

_STARTS_FILE = os.environ.get("BENCH_STARTS_FILE")
_STARTS = open(_STARTS_FILE, "a", buffering=1) if _STARTS_FILE else None  # noqa: SIM115
_JOB_S = float(os.environ.get("BENCH_JOB_MS", "0")) / 1000


class Numbered(pydantic.BaseModel):
    i: int = -1


@handler("noop", payload=Numbered, max_attempts=3)
async def noop(ctx: JobContext, payload: Numbered) -> JobResult:
    if _STARTS is not None:
        _STARTS.write(f"{payload.i} {time.perf_counter()}\n")
    return JobResult()


async def _work(ctx: JobContext, payload: Numbered) -> JobResult:
    if _JOB_S:
        await asyncio.sleep(_JOB_S)
    return JobResult()


if rate := os.environ.get("BENCH_RATE"):
    handler("rated", payload=Numbered, max_attempts=3, rate=rate)(_work)
if capped := os.environ.get("BENCH_CAPPED"):
    handler("capped", payload=Numbered, max_attempts=3, concurrency=int(capped))(_work)
