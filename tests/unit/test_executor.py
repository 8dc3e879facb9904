from __future__ import annotations

from datetime import UTC, datetime

import pydantic
import pytest

from worker import errors, executor
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
    text = executor.describe(ValueError("a\x00b" + "x" * 10_000))
    assert "\x00" not in text
    assert len(text) <= 4000
