"""The chaos soak's handlers (bench/soak.py), loaded by its worker subprocesses with
WORKER_HANDLER_MODULES=tests.support.ledger.

Each execution writes one `soak_ledger` row, in its own autocommitted statement, before the
handler returns. So an execution whose worker dies after that insert, but before the job's
outcome commits, leaves a ledger row behind: the soak sees it run again, and must explain
the duplicate. The table is created by the harness, not by a migration.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import anyio
import pydantic

from worker.registry import REGISTRY, Handler, JobContext, JobResult

LEDGER_TASK = "soak_ledger"
TICK_TASK = "soak_tick"

_RECORD = "INSERT INTO soak_ledger (job_id, attempt, worker_id, pid) VALUES ($1, $2, $3, $4)"

# High enough that chaos never uses up a job's attempts: every SIGKILL and every rescue
# spends one, and a job that ends `failed` would be reported as lost.
MAX_ATTEMPTS = 50


class LedgerPayload(pydantic.BaseModel):
    n: int
    work_ms: float = pydantic.Field(default=5.0, ge=0, le=10_000)


class TickPayload(pydantic.BaseModel):
    work_ms: float = pydantic.Field(default=1.0, ge=0, le=10_000)


_dump_installed = False


def _dump_tasks() -> None:
    """Print every asyncio task's stack to stderr: the soak sends SIGUSR1 to a worker that
    does not exit after SIGTERM, to see where it hangs."""
    for task in asyncio.all_tasks():
        print(f"--- {task!r}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()


def _install_dump() -> None:
    global _dump_installed  # noqa: PLW0603 - once per process, from inside the event loop
    if not _dump_installed:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
        _dump_installed = True


async def _record(ctx: JobContext, work_ms: float) -> JobResult:
    _install_dump()
    # Record first, then work: the window in which a kill leaves a recorded execution
    # without a written outcome is as wide as the work, which is what the soak probes.
    await ctx.pool.execute(_RECORD, ctx.job_id, ctx.attempt, ctx.worker_id, os.getpid())
    await anyio.sleep(work_ms / 1000)
    return JobResult(rows_affected=1)


async def ledger(ctx: JobContext, payload: LedgerPayload) -> JobResult:
    return await _record(ctx, payload.work_ms)


async def tick(ctx: JobContext, payload: TickPayload) -> JobResult:
    return await _record(ctx, payload.work_ms)


REGISTRY.add(Handler(LEDGER_TASK, ledger, LedgerPayload, MAX_ATTEMPTS, timeout_s=30.0))
REGISTRY.add(Handler(TICK_TASK, tick, TickPayload, MAX_ATTEMPTS, timeout_s=30.0))
