"""Handlers for tests, registered in a Registry of the test's own (or, for worker
subprocesses, in the global one via WORKER_HANDLER_MODULES=tests.support.handlers)."""

from __future__ import annotations

import os
import signal
import threading
import time

import anyio
import pydantic

from worker import errors
from worker.registry import REGISTRY, Handler, JobContext, JobResult, Registry


class Empty(pydantic.BaseModel):
    pass


class Sleep(pydantic.BaseModel):
    seconds: float = 0.0


async def ok(ctx: JobContext, payload: Empty) -> JobResult:
    return JobResult(rows_affected=7, notes=["did it"], data={"ok": True})


async def boom(ctx: JobContext, payload: Empty) -> JobResult:
    raise RuntimeError(f"boom on attempt {ctx.attempt}")


async def fail_once(ctx: JobContext, payload: Empty) -> JobResult:
    if ctx.attempt == 1:
        raise ConnectionError("transient")
    return JobResult(notes=[f"attempt {ctx.attempt}"])


async def permanent(ctx: JobContext, payload: Empty) -> JobResult:
    raise errors.PermanentJobError("customer 42 does not exist")


async def sleep(ctx: JobContext, payload: Sleep) -> JobResult:
    await anyio.sleep(payload.seconds)
    return JobResult(notes=[f"slept {payload.seconds}s"])


async def suicide(ctx: JobContext, payload: Empty) -> JobResult:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def sync_ok(ctx: JobContext, payload: Empty) -> JobResult:
    """A plain `def`: runs in the worker's thread pool."""
    return JobResult(notes=[f"thread {threading.current_thread().name}"], data={"ok": True})


def sync_boom(ctx: JobContext, payload: Empty) -> JobResult:
    raise RuntimeError(f"sync boom on attempt {ctx.attempt}")


def sync_sleep(ctx: JobContext, payload: Sleep) -> JobResult:
    time.sleep(payload.seconds)  # blocking, as a sync client's call is
    return JobResult(notes=[f"slept {payload.seconds}s in a thread"])


def registry(timeout_s: float = 5.0, max_attempts: int = 3) -> Registry:
    reg = Registry()
    reg.add(Handler("ok", ok, Empty, max_attempts=max_attempts))
    reg.add(Handler("boom", boom, Empty, max_attempts=max_attempts))
    reg.add(Handler("fail_once", fail_once, Empty, max_attempts=max_attempts))
    reg.add(Handler("permanent", permanent, Empty, max_attempts=max_attempts))
    reg.add(Handler("sleep", sleep, Sleep, max_attempts=max_attempts, timeout_s=timeout_s))
    reg.add(Handler("sync_ok", sync_ok, Empty, max_attempts=max_attempts))
    reg.add(Handler("sync_boom", sync_boom, Empty, max_attempts=max_attempts))
    reg.add(
        Handler("sync_sleep", sync_sleep, Sleep, max_attempts=max_attempts, timeout_s=timeout_s)
    )
    return reg


# Registered globally when imported as a handler module by a worker subprocess.
for _handler in registry():
    REGISTRY.add(
        Handler(
            f"test_{_handler.name}", _handler.func, _handler.payload, _handler.max_attempts, 60.0
        )
    )
REGISTRY.add(Handler("test_suicide", suicide, Empty, max_attempts=2))
