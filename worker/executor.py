"""Run one claimed job under its timeout and classify what happened into one Outcome."""

from __future__ import annotations

import asyncio
import functools
import math
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import anyio.to_thread
import pydantic

from worker import backoff, errors, store, tracing, values
from worker.clock import Clock
from worker.redact import describe
from worker.registry import Handler, JobContext, JobResult

Kind = Literal["succeeded", "retry", "failed", "cancelled"]


# Job, Verdict and Outcome are made for every attempt: plain slotted dataclasses, not frozen
# ones, whose __init__ sets each field through object.__setattr__ (4x slower: ~1.1 against
# ~0.25 us for ten fields). Nothing mutates them.


@dataclass(slots=True)
class Job:
    """A claimed row of job_queue, as the executor sees it."""

    id: int
    queue: str
    task_type: str
    payload: Any
    attempt: int
    max_attempts: int
    run_type: str
    schedule_name: str | None
    requested_by: UUID | None
    created_at: datetime
    trace_context: dict[str, str] | None = None
    """The enqueuer's W3C trace context, continued by the attempt (worker/tracing.py)."""


@dataclass(slots=True)
class Verdict:
    """What an exception (or its absence) means for the job."""

    kind: Kind
    reason: str
    error: str | None = None
    retry_delay_s: float = 0.0
    hold_s: float = 0.0
    """Hold every job of the task type back this long (RetryLater(hold_task_type=True))."""


@dataclass(slots=True)
class Outcome:
    job: Job
    verdict: Verdict
    result: JobResult | None
    started_at: datetime
    duration_ms: int
    elapsed_s: float = 0.0
    """The handler's run time unrounded (duration_ms is what the database stores)."""

    @property
    def kind(self) -> Kind:
        return self.verdict.kind


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 2.0
    cap_s: float = 3600.0

    def delay(self, attempt: int) -> float:
        return backoff.retry_delay(attempt, base_s=self.base_s, cap_s=self.cap_s)


_SUCCEEDED = Verdict("succeeded", "ok")


def classify(exc: BaseException | None, job: Job, policy: RetryPolicy) -> Verdict:
    """Map the handler's exception (None: it returned) to exactly one verdict."""
    if exc is None:
        return _SUCCEEDED
    if isinstance(exc, errors.PermanentJobError):
        return Verdict("failed", "permanent_error", describe(exc))
    reason = "timeout" if isinstance(exc, errors.JobTimeout) else "error"
    hold_s = 0.0
    if isinstance(exc, errors.RetryLater) and exc.hold_task_type:
        hold_s = exc.delay_s
    if job.attempt >= job.max_attempts:
        return Verdict("failed", "max_attempts", describe(exc), 0.0, hold_s)
    if isinstance(exc, errors.RetryLater):
        return Verdict("retry", "retry_later", describe(exc), exc.delay_s, hold_s)
    return Verdict("retry", reason, describe(exc), policy.delay(job.attempt))


def parse_payload(handler: Handler, raw: Any) -> pydantic.BaseModel:
    """Validate stored JSON against the handler's model; PermanentJobError if it does not fit."""
    if isinstance(raw, store.UndecodableJson):
        raise errors.PermanentJobError(f"invalid payload for {handler.name!r}: {raw}")
    try:
        return handler.payload.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{where or 'payload'}: {what}" for where, what in problems_of(exc))
        raise errors.PermanentJobError(
            f"invalid payload for {handler.name!r}: {problems}"
        ) from None


def problems_of(exc: pydantic.ValidationError) -> list[tuple[str, str]]:
    """(dotted field path, message) for each error pydantic found. A payload's keys are
    the caller's: each part of the path is cut (a 10 MB key is not echoed whole)."""
    return [
        (".".join(values.cut(str(p)) for p in e["loc"]), values.cut(e["msg"], 500))
        for e in exc.errors()
    ]


class Deadlines:
    """Handler timeouts for many jobs on few event-loop timers.

    asyncio.timeout arms one loop timer per job, ~5 us with uvloop: the largest single
    item of a drain's per-job Python cost (py-spy). Here the jobs whose deadlines fall in
    the same tick share one timer, so a batch of jobs started together costs one timer; a
    timeout fires at most one tick late. When it fires it cancels the tasks still running
    and remembers them, so `disarm` can tell a timeout from a shutdown cancel.
    """

    def __init__(self, tick_s: float = 0.05) -> None:
        self._tick_s = tick_s
        self._ticks: dict[int, set[asyncio.Task[Any]]] = {}
        self._expired: set[asyncio.Task[Any]] = set()

    def arm(self, task: asyncio.Task[Any], timeout_s: float) -> int:
        """Cancel `task` once `timeout_s` has passed, unless disarmed first. Returns the
        tick to pass to `disarm`."""
        loop = asyncio.get_running_loop()
        tick = math.ceil((loop.time() + timeout_s) / self._tick_s)
        tasks = self._ticks.get(tick)
        if tasks is None:
            tasks = self._ticks[tick] = set()
            loop.call_at(tick * self._tick_s, self._expire, tick)
        tasks.add(task)
        return tick

    def disarm(self, task: asyncio.Task[Any], tick: int) -> bool:
        """Stop watching `task`; True when its deadline had passed and it was cancelled (the
        cancel request is taken back, as asyncio.timeout does)."""
        tasks = self._ticks.get(tick)
        if tasks is not None:
            tasks.discard(task)
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    def __len__(self) -> int:
        """Jobs being watched (for tests)."""
        return sum(len(tasks) for tasks in self._ticks.values())

    def _expire(self, tick: int) -> None:
        for task in self._ticks.pop(tick, ()):
            self._expired.add(task)
            task.cancel()


class Threads:
    """The bounded pool sync handlers run in (WORKER_SYNC_THREADS), and a count of the
    threads still running, abandoned ones included (a timed-out or shut-down attempt's
    thread runs on: Python cannot stop it). The process exits without waiting for those
    (worker/__main__.py)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._limiter: anyio.CapacityLimiter | None = None
        self._lock = threading.Lock()
        self._running = 0

    @property
    def running(self) -> int:
        return self._running

    def resize(self, size: int) -> None:
        self.size = size
        if self._limiter is not None:
            self._limiter.total_tokens = size

    async def run(self, handler: Handler, context: JobContext, payload: Any) -> Any:
        if self._limiter is None:  # made in the event loop it serves
            self._limiter = anyio.CapacityLimiter(self.size)
        call = functools.partial(self._counted, handler.func, context, payload)
        # abandon_on_cancel: a timeout or shutdown ends the attempt now; the thread's
        # eventual return value is discarded.
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=self._limiter)

    def _counted(self, func: Any, context: JobContext, payload: Any) -> Any:
        with self._lock:
            self._running += 1
        try:
            return func(context, payload)
        finally:
            with self._lock:
                self._running -= 1


THREADS = Threads(40)
"""The process's sync-handler pool; the service sizes it from WORKER_SYNC_THREADS."""


async def execute(
    job: Job,
    handler: Handler,
    context: JobContext,
    *,
    clock: Clock,
    policy: RetryPolicy,
    timeout_s: float,
    deadlines: Deadlines,
    spans: tracing.Attempts | None = None,
) -> Outcome:
    """Run the handler under its timeout, in the task that awaits this. Cancelling that task
    (shutdown) gives the attempt back instead of spending it: the outcome is `cancelled`.
    A sync handler runs in THREADS; `spans` (tracing on) wraps the attempt in a span.

    asyncio primitives, not anyio's, on this per-job path: anyio's task and scope helpers
    detect the event loop on every call, which cost ~40 % of a drain's CPU (py-spy).
    """
    task = asyncio.current_task()
    assert task is not None, "execute runs in the job's own task"
    span = spans.start(job) if spans is not None else None
    started_at, t0 = clock.now(), clock.monotonic()
    result: JobResult | None = None
    failure: BaseException | None = None
    cancelled = timed_out = False
    try:
        payload = parse_payload(handler, job.payload)
        tick = deadlines.arm(task, timeout_s)
        try:
            if handler.sync:
                result = await THREADS.run(handler, context, payload)
            else:
                result = await handler.func(context, payload)  # type: ignore[misc]
        finally:
            timed_out = deadlines.disarm(task, tick)
        if not isinstance(result, JobResult):
            raise errors.PermanentJobError(
                f"handler {handler.name!r} returned {type(result).__name__}, not JobResult"
            )
    except asyncio.CancelledError:
        if timed_out and not task.cancelling():
            failure = errors.JobTimeout(timeout_s)
        else:
            # Only the dispatcher cancels job tasks, and only at shutdown: record the outcome.
            task.uncancel()
            cancelled = True
    except Exception as exc:  # a handler may raise anything; classify decides
        failure = exc
    elapsed_s = clock.monotonic() - t0
    duration_ms = max(0, round(elapsed_s * 1000))
    if cancelled:
        verdict = Verdict("cancelled", "shutdown", "worker shut down before the job finished")
    else:
        verdict = classify(failure, job, policy)
    kept = result if verdict.kind == "succeeded" else None
    if span is not None and spans is not None:
        spans.end(span, verdict.kind, verdict.reason, verdict.error)
    return Outcome(job, verdict, kept, started_at, duration_ms, elapsed_s)


_JOB_STATUS: dict[Kind, str] = {
    "succeeded": "succeeded",
    "retry": "pending",
    "failed": "failed",
    "cancelled": "pending",
}


def to_finish(outcome: Outcome) -> store.Finish:
    """The one write each outcome maps to."""
    result = outcome.result
    return store.Finish(
        job_id=outcome.job.id,
        attempt=outcome.job.attempt,
        job_status=_JOB_STATUS[outcome.kind],
        retry_delay_s=outcome.verdict.retry_delay_s if outcome.kind == "retry" else 0.0,
        error=outcome.verdict.error,
        result=result.data if result else None,
        run_status=outcome.kind,
        reason=outcome.verdict.reason,
        rows_affected=result.rows_affected if result else None,
        notes="\n".join(result.notes).replace("\x00", "\ufffd")
        if result and result.notes
        else None,
        started_at=outcome.started_at,
        duration_ms=outcome.duration_ms,
        spend_attempt=outcome.kind != "cancelled",
    )


def job_from_record(row: Any) -> Job:
    return Job(
        id=row["id"],
        queue=row["queue"],
        task_type=row["task_type"],
        payload=row["payload"],
        attempt=row["attempts"],
        max_attempts=row["max_attempts"],
        run_type=row["run_type"],
        schedule_name=row["schedule_name"],
        requested_by=row["requested_by"],
        created_at=row["created_at"],
        trace_context=row["trace_context"],
    )
