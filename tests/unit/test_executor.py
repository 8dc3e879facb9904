from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest

from worker import errors, executor, redact
from worker.clock import SystemClock
from worker.registry import Handler, JobContext, JobResult

POLICY = executor.RetryPolicy(base_s=2.0, cap_s=100.0)


def job(attempt: int = 1, max_attempts: int = 3) -> executor.Job:
    return executor.Job(
        id=1,
        queue="default",
        task_type="t",
        payload={},
        attempt=attempt,
        max_attempts=max_attempts,
        run_type="queue",
        schedule_name=None,
        requested_by=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_success() -> None:
    assert executor.classify(None, job(), POLICY) == executor.Verdict("succeeded", "ok")


def test_error_with_attempts_left_is_retried_with_backoff() -> None:
    verdict = executor.classify(RuntimeError("db down"), job(attempt=2), POLICY)
    assert verdict.kind == "retry"
    assert verdict.reason == "error"
    assert verdict.error == "RuntimeError: db down"
    assert 3.6 <= verdict.retry_delay_s <= 4.4  # 2 * 2**1, +/- 10 %


def test_last_attempt_fails_for_good() -> None:
    verdict = executor.classify(RuntimeError("x"), job(attempt=3, max_attempts=3), POLICY)
    assert (verdict.kind, verdict.reason) == ("failed", "max_attempts")


def test_permanent_error_fails_at_once() -> None:
    verdict = executor.classify(errors.PermanentJobError("no such user"), job(), POLICY)
    assert (verdict.kind, verdict.reason) == ("failed", "permanent_error")
    assert verdict.error == "PermanentJobError: no such user"


def test_timeout_is_retried() -> None:
    verdict = executor.classify(errors.JobTimeout(5), job(), POLICY)
    assert (verdict.kind, verdict.reason) == ("retry", "timeout")


def test_retry_later_uses_its_own_delay() -> None:
    verdict = executor.classify(errors.RetryLater("429", delay_s=42), job(), POLICY)
    assert (verdict.kind, verdict.retry_delay_s) == ("retry", 42)


class Model(pydantic.BaseModel):
    user_id: int


async def _noop(ctx: JobContext, payload: Model) -> JobResult:
    return JobResult()


def test_invalid_payload_is_a_permanent_error_naming_the_field() -> None:
    handler = Handler("sync", _noop, Model)
    with pytest.raises(errors.PermanentJobError) as caught:
        executor.parse_payload(handler, {"user_id": "abc"})
    assert str(caught.value) == (
        "invalid payload for 'sync': user_id: Input should be a valid integer, "
        "unable to parse string as an integer"
    )


def test_describe_bounds_length_and_strips_nul() -> None:
    text = redact.describe(ValueError("a\x00b" + "x" * 10_000))
    assert "\x00" not in text
    assert len(text) <= 4000


# -- execute under a deadline ----------------------------------------------------------


class Empty(pydantic.BaseModel):
    pass


def _context() -> JobContext:
    return JobContext(
        job_id=1,
        task_type="t",
        queue="default",
        attempt=1,
        max_attempts=3,
        run_type="queue",
        schedule_name=None,
        requested_by=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        worker_id="w",
        pool=None,  # type: ignore[arg-type]  # these handlers touch no database
        logger=None,  # type: ignore[arg-type]
    )


async def _run(
    func: Any, deadlines: executor.Deadlines, timeout_s: float = 0.1
) -> executor.Outcome:
    return await executor.execute(
        job(),
        Handler("t", func, Empty),
        _context(),
        clock=SystemClock(),
        policy=POLICY,
        timeout_s=timeout_s,
        deadlines=deadlines,
    )


async def _sleep_forever(ctx: JobContext, payload: Empty) -> JobResult:
    await asyncio.sleep(3600)
    return JobResult()


async def test_a_handler_past_its_timeout_is_cancelled_and_retried() -> None:
    deadlines = executor.Deadlines(tick_s=0.05)
    started = time.monotonic()
    outcome = await _run(_sleep_forever, deadlines, timeout_s=0.1)
    elapsed = time.monotonic() - started
    assert (outcome.kind, outcome.verdict.reason) == ("retry", "timeout")
    assert outcome.verdict.error == "JobTimeout: handler timed out after 0.1s"
    assert 0.1 <= elapsed < 1.0  # at most a tick late, plus scheduling
    assert len(deadlines) == 0


async def test_a_handler_done_in_time_is_never_cancelled_later() -> None:
    deadlines = executor.Deadlines(tick_s=0.05)

    async def quick(ctx: JobContext, payload: Empty) -> JobResult:
        await asyncio.sleep(0.01)
        return JobResult(rows_affected=1)

    outcome = await _run(quick, deadlines, timeout_s=0.1)
    assert outcome.kind == "succeeded"
    assert len(deadlines) == 0
    await asyncio.sleep(0.3)  # past the deadline it had: this task must not be cancelled
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_jobs_started_together_time_out_together() -> None:
    deadlines = executor.Deadlines(tick_s=0.05)
    tasks = [asyncio.create_task(_run(_sleep_forever, deadlines, 0.2)) for _ in range(200)]
    await asyncio.sleep(0)
    assert len(deadlines) == 200
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks), timeout=2)
    assert {o.verdict.reason for o in outcomes} == {"timeout"}
    assert len(deadlines) == 0


async def test_a_shutdown_cancel_gives_the_attempt_back_not_a_timeout() -> None:
    deadlines = executor.Deadlines(tick_s=0.05)
    task = asyncio.create_task(_run(_sleep_forever, deadlines, timeout_s=60))
    await asyncio.sleep(0.05)
    task.cancel()
    outcome = await task
    assert (outcome.kind, outcome.verdict.reason) == ("cancelled", "shutdown")
    assert len(deadlines) == 0


async def test_shutdown_and_timeout_at_once_is_a_shutdown() -> None:
    """Both cancel the task before it resumes: the shutdown's request stays, so the attempt
    is given back rather than spent on a timeout."""
    deadlines = executor.Deadlines(tick_s=0.05)
    armed = asyncio.Event()

    async def wait(ctx: JobContext, payload: Empty) -> JobResult:
        armed.set()
        await asyncio.sleep(3600)
        return JobResult()

    task = asyncio.create_task(_run(wait, deadlines, timeout_s=60))
    await armed.wait()
    deadlines._expire(next(iter(deadlines._ticks)))  # the timer firing now
    task.cancel()
    outcome = await task
    assert (outcome.kind, outcome.verdict.reason) == ("cancelled", "shutdown")


async def test_a_handler_that_swallows_the_timeout_keeps_its_result() -> None:
    """As with asyncio.timeout: the cancel is taken back once the handler returns."""
    deadlines = executor.Deadlines(tick_s=0.05)

    async def stubborn(ctx: JobContext, payload: Empty) -> JobResult:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        return JobResult(notes=["late"])

    outcome = await _run(stubborn, deadlines, timeout_s=0.1)
    assert outcome.kind == "succeeded"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
