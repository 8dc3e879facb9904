"""Demo handlers: enough to watch the engine work on a fresh machine."""

from __future__ import annotations

import anyio
import pydantic

from handlers import payloads
from worker import errors
from worker.registry import JobContext, JobResult, handler


class NoopPayload(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


@handler("noop", payload=NoopPayload, max_attempts=3, timeout_s=10)
async def noop(ctx: JobContext, payload: NoopPayload) -> JobResult:
    """Does nothing, successfully: the benchmark's job."""
    return JobResult()


class EchoPayload(payloads.Payload):
    message: str = pydantic.Field(max_length=10_000)
    delay_s: float = pydantic.Field(default=0.0, ge=0, le=60)


@handler("echo", payload=EchoPayload, max_attempts=3, timeout_s=70)
async def echo(ctx: JobContext, payload: EchoPayload) -> JobResult:
    """Logs its message (after an optional delay) and returns it as a note."""
    if payload.delay_s:
        await anyio.sleep(payload.delay_s)
    ctx.log.info("echo", message=payload.message)
    return JobResult(rows_affected=1, notes=[payload.message], data={"echo": payload.message})


class FlakyPayload(payloads.Payload):
    fail_times: int = pydantic.Field(default=1, ge=0, le=100)
    retry_in_s: float = pydantic.Field(default=0.0, ge=0, le=3600)


@handler("flaky", payload=FlakyPayload, max_attempts=5, timeout_s=10)
async def flaky(ctx: JobContext, payload: FlakyPayload) -> JobResult:
    """Fails its first `fail_times` attempts with a transient error, then succeeds."""
    if ctx.attempt <= payload.fail_times:
        raise errors.RetryLater(
            f"simulated transient failure {ctx.attempt}/{payload.fail_times}",
            delay_s=payload.retry_in_s,
        )
    return JobResult(notes=[f"succeeded on attempt {ctx.attempt}"])
