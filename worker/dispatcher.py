"""Claim up to the free slots, run each job, write outcomes in batches, shut down cleanly.

Three tasks cooperate:
- the claimer takes up to `free slots` due jobs per statement and starts them; when a claim
  comes back short it waits for a NOTIFY, a freed slot or the poll interval;
- each job runs in its own asyncio task (shutdown cancels the task, which gives the
  attempt back);
- the flusher writes every finished outcome waiting at that moment in one statement, then
  frees their slots. A slot is free only once its outcome is durable.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from worker import executor, store
from worker.clock import Clock, SystemClock
from worker.config import Settings
from worker.registry import JobContext, Registry

log = structlog.get_logger("worker.dispatcher")

CHANNEL = "job_queue"


@dataclass
class Summary:
    """What a run did; `--once` prints it as JSON."""

    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    lease_lost: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    keep_results: bool = True

    def add(self, outcome: executor.Outcome, written: bool) -> None:
        self.processed += 1
        if not written:
            self.lease_lost += 1
        elif outcome.kind == "succeeded":
            self.succeeded += 1
        elif outcome.kind == "failed":
            self.failed += 1
        elif outcome.kind == "retry":
            self.retried += 1
        else:
            self.cancelled += 1
        if self.keep_results:
            self.results.append(_result_entry(outcome, written))

    def as_dict(self) -> dict[str, Any]:
        return {
            "processed": self.processed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "retried": self.retried,
            "cancelled": self.cancelled,
            "lease_lost": self.lease_lost,
            "results": self.results,
        }


def _result_entry(outcome: executor.Outcome, written: bool) -> dict[str, Any]:
    result = outcome.result
    return {
        "job_id": outcome.job.id,
        "task_type": outcome.job.task_type,
        "attempt": outcome.job.attempt,
        "outcome": outcome.kind if written else "lease_lost",
        "reason": outcome.verdict.reason,
        "duration_ms": outcome.duration_ms,
        "rows_affected": result.rows_affected if result else None,
        "notes": result.notes if result else [],
        "error": outcome.verdict.error,
    }


class Dispatcher:
    def __init__(
        self,
        db: store.Store,
        registry: Registry,
        settings: Settings,
        *,
        clock: Clock | None = None,
        once: bool = False,
        keep_results: bool = True,
    ) -> None:
        self.db = db
        self.registry = registry
        self.settings = settings
        self.clock = clock or SystemClock()
        self.once = once
        self.summary = Summary(keep_results=keep_results)
        self.policy = executor.RetryPolicy(settings.retry_base_s, settings.retry_cap_s)
        self._task_types = registry.names()
        self._max_attempts = [registry.get(name).max_attempts for name in self._task_types]
        self._busy = 0  # claimed and not yet durably finished
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._finished: list[executor.Outcome] = []
        # asyncio events: the claim/flush cycle runs per batch, and anyio.Event() looks the
        # event loop up each time it is created.
        self._wake_claimer = asyncio.Event()
        self._wake_flusher = asyncio.Event()
        self._stopping = asyncio.Event()
        self._flushed = asyncio.Event()
        self._flushed.set()

    # -- public -----------------------------------------------------------------------

    async def run(self) -> Summary:
        if not self._task_types:
            log.warning("no_handlers_registered")
            return self.summary
        log.info(
            "worker_started",
            worker_id=self.settings.worker_id,
            queues=self.settings.queues,
            concurrency=self.settings.concurrency,
            task_types=self._task_types,
            once=self.once,
        )
        async with anyio.create_task_group() as loops:
            loops.start_soon(self._flusher)
            if not self.once:
                loops.start_soon(self._listen)
            await self._claimer()
            await self._drain_in_flight()
            await self._flushed.wait()
            loops.cancel_scope.cancel()
        totals = {k: v for k, v in self.summary.as_dict().items() if k != "results"}
        log.info("worker_stopped", **totals)
        return self.summary

    def request_stop(self) -> None:
        """First call: stop claiming and let jobs finish within the grace period.
        Second call: cancel in-flight jobs now (their attempts are given back)."""
        if self._stopping.is_set():
            log.warning("shutdown_hurried", in_flight=len(self._tasks))
            self._cancel_in_flight()
            return
        log.info(
            "shutdown_requested",
            in_flight=len(self._tasks),
            grace_s=self.settings.shutdown_grace_s,
        )
        self._stopping.set()
        self._wake_claimer.set()

    # -- claiming -----------------------------------------------------------------------

    async def _claimer(self) -> None:
        capacity = self.settings.concurrency
        while not self._stopping.is_set():
            self._wake_claimer.clear()
            free = capacity - self._busy
            if free <= 0:
                await self._wake_claimer.wait()
                continue
            asked = min(free, self.settings.claim_batch)
            rows = await self._claim(asked)
            for row in rows:
                self._start(executor.job_from_record(row))
            if len(rows) == asked:
                continue
            if self.once and self._busy == 0 and not rows:
                return
            with anyio.move_on_after(math.inf if self.once else self.settings.poll_interval_s):
                await self._wake_claimer.wait()

    async def _claim(self, limit: int) -> list[store.Record]:
        try:
            return await self.db.claim(
                queues=self.settings.queues,
                limit=limit,
                task_types=self._task_types,
                max_attempts=self._max_attempts,
                worker_id=self.settings.worker_id,
                lease_s=self.settings.lease_s,
            )
        except store.CONNECTION_ERRORS as exc:
            log.warning("claim_failed", error=executor.describe(exc))
            with anyio.move_on_after(1.0):
                await self._stopping.wait()
            return []

    def _start(self, job: executor.Job) -> None:
        self._busy += 1
        self._flushed.clear()
        self._tasks[job.id] = asyncio.create_task(self._run_job(job))

    async def _run_job(self, job: executor.Job) -> None:
        handler = self.registry.get(job.task_type)
        outcome = await executor.execute(
            job,
            handler,
            self._context(job),
            clock=self.clock,
            policy=self.policy,
            default_timeout_s=self.settings.default_timeout_s,
        )
        del self._tasks[job.id]
        self._finished.append(outcome)
        self._wake_flusher.set()

    def _context(self, job: executor.Job) -> JobContext:
        return JobContext(
            job_id=job.id,
            task_type=job.task_type,
            queue=job.queue,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            run_type=job.run_type,
            schedule_name=job.schedule_name,
            requested_by=job.requested_by,
            created_at=job.created_at,
            worker_id=self.settings.worker_id,
            pool=self.db.pool,
            settings=self.settings,
            logger=log,
        )

    # -- finishing ----------------------------------------------------------------------

    async def _flusher(self) -> None:
        while True:
            self._wake_flusher.clear()
            if not self._finished:
                await self._wake_flusher.wait()
                continue
            batch, self._finished = self._finished, []
            written = await self._write(batch)
            for outcome in batch:
                self._record(outcome, outcome.job.id in written)
            self._busy -= len(batch)
            if self._busy == 0:
                self._flushed.set()
            self._wake_claimer.set()

    async def _write(self, batch: list[executor.Outcome]) -> set[int]:
        """Write a batch, retrying while the database is away: an outcome is never dropped."""
        rows = [executor.to_finish(o) for o in batch]
        delay_s = 0.2
        while True:
            try:
                return await self.db.finish(rows, worker_id=self.settings.worker_id)
            except store.CONNECTION_ERRORS as exc:
                log.warning(
                    "finish_failed",
                    jobs=len(rows),
                    error=executor.describe(exc),
                    retry_in_s=delay_s,
                )
                await anyio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)

    def _record(self, outcome: executor.Outcome, written: bool) -> None:
        self.summary.add(outcome, written)
        job, verdict = outcome.job, outcome.verdict
        fields: dict[str, Any] = {
            "job_id": job.id,
            "task_type": job.task_type,
            "queue": job.queue,
            "attempt": job.attempt,
            "duration_ms": outcome.duration_ms,
            "outcome": outcome.kind,
            "reason": verdict.reason,
        }
        if not written:
            log.warning("job_lease_lost", **fields)
        elif outcome.kind == "succeeded":
            result = outcome.result
            log.info("job_succeeded", rows_affected=result.rows_affected if result else 0, **fields)
        elif outcome.kind == "retry":
            log.warning(
                "job_retry",
                error=verdict.error,
                retry_in_s=round(verdict.retry_delay_s, 3),
                **fields,
            )
        elif outcome.kind == "failed":
            log.error("job_failed", error=verdict.error, **fields)
        else:
            log.warning("job_cancelled", **fields)

    # -- shutdown -------------------------------------------------------------------------

    async def _drain_in_flight(self) -> None:
        """Let running jobs finish within the grace period, then cancel the rest."""
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=self.settings.shutdown_grace_s)
        self._cancel_in_flight()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()))

    def _cancel_in_flight(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()

    # -- wake-ups -------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Wake the claimer on each NOTIFY; polling covers the time the listener is down."""

        def on_notify() -> None:
            self._wake_claimer.set()

        while True:
            try:
                async with self.db.listen(CHANNEL, on_notify) as listener:
                    self._wake_claimer.set()  # catch what was inserted while not listening
                    while True:
                        await anyio.sleep(self.settings.poll_interval_s)
                        await listener.ping()
            except store.CONNECTION_ERRORS as exc:
                log.warning("listen_lost", error=executor.describe(exc))
                await anyio.sleep(self.settings.poll_interval_s)
