"""Claim a little ahead of the free slots, run each job, write outcomes in batches, shut
down cleanly.

Three tasks cooperate:
- the claimer takes due jobs and starts them; when a claim comes back short it waits for a
  NOTIFY, a write or the poll interval;
- each job runs in its own asyncio task, once one of `concurrency` slots is free (shutdown
  cancels the task, which gives the attempt back);
- the flusher writes every finished outcome waiting at that moment in one statement, which
  also claims the next jobs while the queue is busy (several such statements in flight).
A slot is free when its handler returns: the next job starts while the outcome before it is
being written. The jobs claimed ahead cover the claim's round trip (Little's law: slots x
round trip / handler time, at least one, at most a claim batch), so slots do not sit idle
while a claim travels; finished outcomes not yet written are bounded too.
Around them: the heartbeat extends leases, and the listener wakes the claimer on NOTIFY.

Each of these loops outlives every transient database fault (worker/faults.py): it logs the
fault's first failure and its recovery, backs off and carries on; an outcome is kept and its
write retried until the database takes it. A fatal fault (schema or grants wrong) stops the
run: `run()` raises DatabaseFault.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
import asyncpg
import structlog

from worker import errors, executor, faults, redact, store, tracing
from worker.clock import Clock, SystemClock
from worker.config import Settings
from worker.observer import NullObserver, Observer
from worker.registry import JobContext, Registry

log = structlog.get_logger("worker.dispatcher")

# Outcome writes in flight at once (see _flusher): one per two claim batches of slots (a
# batch runs while the one before it commits), at least 2, at most 4.
_MIN_WRITERS, _MAX_WRITERS = 2, 4

# Smoothing of the handler-time and round-trip averages that size the jobs claimed ahead.
_EWMA = 0.2

# What a refused write raises: the data, not the connection, is the problem.
_REFUSED = (asyncpg.DataError, asyncpg.PostgresError, ValueError, TypeError)

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
        observer: Observer | None = None,
        max_jobs: int | None = None,
        claim_for_s: float | None = None,
    ) -> None:
        """`once`: stop when no due job is left (--once, the HTTP API's drain). `max_jobs`:
        claim at most that many jobs in all; `claim_for_s`: claim nothing after that long.
        Either ends a `once` run when its jobs are done."""
        self.db = db
        self.observer: Observer = observer or NullObserver()
        self.registry = registry
        self.settings = settings
        self.clock = clock or SystemClock()
        self.once = once
        self.summary = Summary(keep_results=keep_results)
        self.policy = executor.RetryPolicy(settings.retry_base_s, settings.retry_cap_s)
        self._task_types = registry.names()
        self._max_attempts = [registry.get(name).max_attempts for name in self._task_types]
        self._busy = 0  # jobs claimed (running or waiting for a slot) or reserved for a claim
        self._unwritten = 0  # handlers returned, outcomes not yet durable
        self._max_unwritten = 2 * (settings.concurrency + settings.claim_batch)
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._waiting: set[int] = set()  # claimed jobs waiting for a slot
        # Averages that size the jobs claimed ahead (None until observed).
        self._handler_s: float | None = None
        self._round_trip_s: float | None = None
        self._more_due = False  # the last claim came back full: more jobs are probably due
        self._budget = math.inf if max_jobs is None else max_jobs  # jobs left to claim
        self._claim_until = (
            math.inf if claim_for_s is None else self.clock.monotonic() + claim_for_s
        )
        limits = [registry.get(name).limits for name in self._task_types]
        self._limited = [
            name for name, lim in zip(self._task_types, limits, strict=True) if lim.any
        ]
        self._base_spec = store.ClaimSpec(
            queues=settings.queues,
            limit=0,
            task_types=self._task_types,
            max_attempts=self._max_attempts,
            lease_s=settings.lease_s,
            type_limits=[lim.concurrency for lim in limits],
            key_fields=[lim.concurrency_key_field for lim in limits],
            key_limits=[lim.key_concurrency for lim in limits],
            rate_counts=[lim.rate_count for lim in limits],
            rate_windows_s=[lim.rate_window_s for lim in limits],
        )
        self._wake_at: datetime | None = None  # a limited task type may take jobs then
        self._inflight: dict[int, tuple[executor.Job, asyncio.Task[None]]] = {}
        self._finished: list[executor.Outcome] = []
        self._writes: set[asyncio.Task[None]] = set()
        self._deadlines = executor.Deadlines()
        executor.THREADS.resize(settings.sync_threads)
        self._spans = tracing.Attempts() if tracing.enabled(settings.tracing) else None
        self._max_writes = max(
            _MIN_WRITERS,
            min(_MAX_WRITERS, settings.concurrency // (2 * settings.claim_batch)),
        )
        # asyncio events: the claim/flush cycle runs per batch, and anyio.Event() looks the
        # event loop up each time it is created.
        self._wake_claimer = asyncio.Event()
        self._wake_flusher = asyncio.Event()
        self._stopping = asyncio.Event()
        self._flushed = asyncio.Event()
        self._flushed.set()
        self._fatal: errors.DatabaseFault | None = None  # set by a loop: the run stops
        reset = db.expire_sessions
        self._claim_fault = faults.Episode("claimer", log, reset=reset)
        self._write_fault = faults.Episode("flusher", log, reset=reset)
        self._beat_fault = faults.Episode("heartbeat", log, reset=reset)
        self._listen_fault = faults.Episode("listener", log, stops=False, cap_s=10.0)

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
        await self._ensure_limit_rows()
        async with anyio.create_task_group() as loops:
            loops.start_soon(self._flusher)
            if not self.once:
                loops.start_soon(self._heartbeat)
                if not self.settings.pooler_mode:
                    loops.start_soon(self._listen)
            try:
                await self._claimer()
                await self._drain_in_flight()
                await self._flushed.wait()
                if self._fatal is not None:
                    raise self._fatal
            except errors.DatabaseFault:
                self._abandon()
                raise
            loops.cancel_scope.cancel()
        totals = {k: v for k, v in self.summary.as_dict().items() if k != "results"}
        log.info("worker_stopped", **totals)
        return self.summary

    def request_stop(self) -> None:
        """First call: stop claiming and let jobs finish within the grace period.
        Second call: cancel in-flight jobs now (their attempts are given back)."""
        if self._stopping.is_set():
            log.warning("shutdown_hurried", in_flight=len(self._inflight))
            self._cancel_in_flight()
            return
        log.info(
            "shutdown_requested",
            in_flight=len(self._inflight),
            grace_s=self.settings.shutdown_grace_s,
        )
        self._stopping.set()
        self._wake_claimer.set()
        self._cancel_in_flight(set(self._waiting))  # claimed ahead, never started: give back

    async def _ensure_limit_rows(self) -> None:
        """Each limited task type's job_limits row, which its claims lock (without it the
        type would never be claimed). Retried while the database is away."""
        while self._limited and not self._stopping.is_set():
            try:
                await self.db.ensure_limit_rows(self._limited)
            except Exception as exc:  # a fatal fault raises out of failed()
                await self._claim_fault.failed(exc)
                await anyio.sleep(self._claim_fault.delay_s())
                continue
            self._claim_fault.ok()
            return

    def _fail(self, fault: errors.DatabaseFault) -> None:
        """A loop other than the claimer met a fatal fault: the claimer raises it."""
        if self._fatal is None:
            self._fatal = fault
        self._wake_claimer.set()
        self._flushed.set()

    async def _failed(self, episode: faults.Episode, exc: BaseException) -> faults.Fault:
        """`episode.failed(exc)` for a task other than the claimer: a fatal fault stops the
        run, and this task waits to be cancelled with it."""
        try:
            return await episode.failed(exc)
        except errors.DatabaseFault as fatal:
            self._fail(fatal)
            await anyio.sleep_forever()
            raise AssertionError("unreachable") from None

    def _abandon(self) -> None:
        """A fatal fault: nothing more can be written. Jobs still running are stopped; their
        leases expire, and a worker the operator has mended takes them back."""
        self._cancel_in_flight()
        for task in list(self._writes):
            task.cancel()

    # -- claiming -----------------------------------------------------------------------

    async def _claimer(self) -> None:
        """Claims when slots are free: at start, on a NOTIFY, after each poll interval, and
        after each write. While the queue stays busy the flusher claims too (in its write)."""
        while not self._stopping.is_set():
            if self._fatal is not None:
                raise self._fatal
            self.observer.loop_alive("claimer")
            self._wake_claimer.clear()
            asked = self._reserve()
            if asked == 0:
                if self.once and self._busy == 0 and self._claims_over():
                    return
                with anyio.move_on_after(self.settings.poll_interval_s):
                    await self._wake_claimer.wait()
                continue
            rows = await self._claim(asked)
            self._started(rows, asked)
            if len(rows) == asked:
                continue
            if self.once and self._busy == 0 and not rows:
                return  # jobs held back by limits are not due: a later run takes them
            with anyio.move_on_after(self._idle_wait_s()):
                await self._wake_claimer.wait()

    def _idle_wait_s(self) -> float:
        """How long a claim that came back short waits for a NOTIFY or a freed slot: the
        poll interval (forever in a --once run), or less when a rate-limited or held task
        type may take jobs again sooner."""
        wait_s = math.inf if self.once else self.settings.poll_interval_s
        if self._wake_at is not None:
            until_s = (self._wake_at - self.clock.now()).total_seconds()
            wait_s = min(wait_s, max(until_s, 0.01))
        return wait_s

    def _reserve(self) -> int:
        """Take room for up to claim_batch jobs for a claim about to be sent: the free
        slots plus the jobs claimed ahead, while not too many outcomes wait to be written.
        Reserving before the await keeps the claimer and the flusher from claiming the same
        room twice."""
        if self._claims_over() or self._unwritten >= self._max_unwritten:
            return 0
        free = self.settings.concurrency + self._ahead() - self._busy
        asked = int(max(0, min(free, self.settings.claim_batch, self._budget)))
        self._busy += asked
        self._budget -= asked
        return asked

    def _ahead(self) -> int:
        """Jobs to claim beyond the slots: enough to start one in every slot that frees up
        while a claim is on its way (slots x round trip / handler time), at least one, at
        most a claim batch. Few for slow handlers, so a replica holds back little that an
        idle one could run; a batch for fast ones. A claim's slots before anything is known."""
        concurrency, batch = self.settings.concurrency, self.settings.claim_batch
        if self._handler_s is None or self._round_trip_s is None:
            return min(concurrency, batch)
        wanted = concurrency * self._round_trip_s / max(self._handler_s, 1e-6)
        return int(min(batch, max(1.0, math.ceil(wanted))))

    def _observe_round_trip(self, seconds: float) -> None:
        last = self._round_trip_s
        self._round_trip_s = seconds if last is None else last + _EWMA * (seconds - last)

    def _observe_handlers(self, batch: list[executor.Outcome]) -> None:
        seconds = sum(outcome.elapsed_s for outcome in batch) / len(batch)
        last = self._handler_s
        self._handler_s = seconds if last is None else last + _EWMA * (seconds - last)

    def _settle(self) -> None:
        """Nothing claimed, nothing unwritten: what shutdown and --once wait for."""
        if self._busy == 0 and self._unwritten == 0:
            self._flushed.set()

    def _claims_over(self) -> bool:
        """max_jobs claimed, or claim_for_s passed: claim no more."""
        return self._budget <= 0 or self.clock.monotonic() >= self._claim_until

    def _started(self, rows: list[store.Record], asked: int) -> None:
        """Start the claimed jobs; give back the reserved slots the claim did not fill."""
        self._busy -= asked - len(rows)
        self._budget += asked - len(rows)
        self._more_due = len(rows) == asked > 0
        for row in rows:
            self._start(executor.job_from_record(row))
        self._settle()

    def _claim_spec(self, limit: int) -> store.ClaimSpec:
        return dataclasses.replace(self._base_spec, limit=limit)

    async def _claim(self, limit: int) -> list[store.Record]:
        t0 = self.clock.monotonic()
        try:
            claimed = await self.db.finish_and_claim(
                (), worker_id=self.settings.worker_id, claim=self._claim_spec(limit)
            )
            rows, self._wake_at = claimed.rows, claimed.wake_at
        except Exception as exc:  # the claimer outlives all but a fatal fault
            await self._claim_fault.failed(exc)
            with anyio.move_on_after(self._claim_fault.delay_s()):
                await self._stopping.wait()
            return []
        self._claim_fault.ok()
        seconds = self.clock.monotonic() - t0
        self.observer.claimed(len(rows), seconds)
        self._observe_round_trip(seconds)
        return rows

    def _start(self, job: executor.Job) -> None:
        self._flushed.clear()
        self._waiting.add(job.id)
        self._inflight[job.id] = (job, asyncio.create_task(self._run_job(job)))

    def _cancelled_before_start(self, job: executor.Job, task: asyncio.Task[None]) -> None:
        """A task cancelled before its first step never runs `_run_job` at all, so nothing
        took the job out of `_inflight`: its slot stayed busy, shutdown waited for it
        forever and the heartbeat kept its lease alive (seen in the chaos soak). Give its
        attempt back, as for any job cancelled at shutdown. (Attached when a task is
        cancelled, not when it is created: a callback per job cost a loop turn per job.)"""
        entry = self._inflight.get(job.id)
        if not task.cancelled() or entry is None or entry[1] is not task:
            return
        self._done(self._given_back(job))

    def _given_back(self, job: executor.Job) -> executor.Outcome:
        verdict = executor.Verdict("cancelled", "shutdown", "worker shut down before the job ran")
        return executor.Outcome(job, verdict, None, self.clock.now(), 0)

    def _done(self, outcome: executor.Outcome) -> None:
        """The job's slot is free; its outcome waits for the flusher."""
        del self._inflight[outcome.job.id]
        self._waiting.discard(outcome.job.id)
        self._busy -= 1
        self._unwritten += 1
        self._finished.append(outcome)
        self._wake_flusher.set()

    async def _run_job(self, job: executor.Job) -> None:
        try:
            await self._slots.acquire()
        except asyncio.CancelledError:  # shutdown while it waited: it never ran
            self._done(self._given_back(job))
            raise
        try:
            self._waiting.discard(job.id)
            if self._stopping.is_set():  # claimed ahead, its slot came after the stop
                outcome = self._given_back(job)
            else:
                handler = self.registry.get(job.task_type)
                outcome = await executor.execute(
                    job,
                    handler,
                    self._context(job),
                    clock=self.clock,
                    policy=self.policy,
                    timeout_s=self.settings.default_timeout_s
                    if handler.timeout_s is None
                    else handler.timeout_s,
                    deadlines=self._deadlines,
                    spans=self._spans,
                )
        finally:
            self._slots.release()
        self._done(outcome)

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
            pool=self.db.handler_pool,
            logger=log,
        )

    # -- finishing ----------------------------------------------------------------------

    async def _flusher(self) -> None:
        """Writes every finished outcome waiting, in one statement that also claims the next
        jobs while the queue is busy (one round trip and one commit per cycle). Several
        statements are in flight at once: with one, the database sat idle while Python ran
        the next batch. With slots for more than two batches, up to four (the figures:
        bench/README.md, "Measurements behind the code")."""
        while True:
            self._wake_flusher.clear()
            if not self._finished or len(self._writes) >= self._max_writes:
                await self._wake_flusher.wait()
                continue
            batch, self._finished = self._finished, []
            busy_queue = self._more_due and not self._stopping.is_set()
            asked = self._reserve() if busy_queue else 0
            task = asyncio.create_task(self._write_and_start(batch, asked))
            self._writes.add(task)
            task.add_done_callback(self._write_done)

    def _write_done(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        self._wake_flusher.set()

    async def _write_and_start(self, batch: list[executor.Outcome], asked: int) -> None:
        t0 = self.clock.monotonic()
        written, rows = await self._write(batch, asked)
        seconds = self.clock.monotonic() - t0
        if asked:
            self.observer.claimed(len(rows), seconds)
        self._observe_round_trip(seconds)
        self._observe_handlers(batch)
        log_success = log.is_enabled_for(logging.INFO)
        held = False
        for outcome in batch:
            self._record(outcome, outcome.job.id in written, log_success)
            held |= outcome.verdict.hold_s > 0
        self._unwritten -= len(batch)
        self._started(rows, asked)
        self._wake_claimer.set()
        if held:
            await self._hold(batch)

    async def _hold(self, batch: list[executor.Outcome]) -> None:
        """A handler was told to wait (RetryLater(hold_task_type=True)): hold its task type
        back on every worker. Best effort: the job itself is retried after the delay anyway."""
        holds: dict[str, executor.Outcome] = {}
        for outcome in batch:
            if outcome.verdict.hold_s > 0:
                holds[outcome.job.task_type] = outcome
        for task_type, outcome in holds.items():
            try:
                await self.db.hold_task_type(
                    task_type, outcome.verdict.hold_s, outcome.verdict.error
                )
            except Exception as exc:  # the job's own retry delay still applies
                log.warning("hold_failed", task_type=task_type, error=redact.describe(exc))
                continue
            log.warning("task_type_held", task_type=task_type, hold_s=outcome.verdict.hold_s)

    async def _write(
        self, batch: list[executor.Outcome], claim: int
    ) -> tuple[set[int], list[store.Record]]:
        """Write a batch (and claim up to `claim` jobs); while the database is away, keep
        retrying (outcomes are not dropped). If the batch is refused (a result PostgreSQL
        cannot store, such as NaN in JSON), write its rows one by one, claiming nothing, so
        one bad outcome cannot stall or crash the worker."""
        rows = [executor.to_finish(o) for o in batch]
        try:
            claimed = await self._write_retrying(rows, claim)
            if claim:
                self._wake_at = claimed.wake_at
            return claimed.written, claimed.rows
        except _REFUSED as exc:
            log.error("finish_batch_refused", jobs=len(rows), error=redact.describe(exc))
        written: set[int] = set()
        for row in rows:
            written |= await self._write_alone(row)
        return written, []

    async def _write_alone(self, row: store.Finish) -> set[int]:
        try:
            return (await self._write_retrying([row], 0)).written
        except _REFUSED as exc:
            problem = f"could not record the handler's result: {redact.describe(exc)}"
        log.error("job_result_dropped", job_id=row.job_id, error=problem)
        fallback = row._replace(result=None, notes=problem, error=row.error or problem)
        try:
            return (await self._write_retrying([fallback], 0)).written
        except _REFUSED as exc:  # nothing left to strip; the lease will expire and be rescued
            log.error("job_outcome_lost", job_id=row.job_id, error=redact.describe(exc))
            return set()

    async def _write_retrying(self, rows: list[store.Finish], claim: int) -> store.Claimed:
        """Retries until the database takes the rows: only a refusal of the data itself
        (faults.classify: `refused`) is raised, for `_write` to write around it."""
        spec = self._claim_spec(claim) if claim else None
        while True:
            try:
                claimed = await self.db.finish_and_claim(
                    rows, worker_id=self.settings.worker_id, claim=spec
                )
            except Exception as exc:
                if (await self._failed(self._write_fault, exc)).kind == "refused":
                    raise
                await anyio.sleep(self._write_fault.delay_s())
                continue
            self._write_fault.ok()
            return claimed

    def _record(self, outcome: executor.Outcome, written: bool, log_success: bool) -> None:
        self.summary.add(outcome, written)
        self.observer.finished(outcome, written)
        job, verdict = outcome.job, outcome.verdict
        if written and outcome.kind == "succeeded" and not log_success:
            return  # the common case, with info lines off: no fields to build
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
        """Let running jobs finish within the grace period, then cancel the rest.

        The writes in flight count too: one sent before the stop request may still claim
        jobs and start them. Waiting only for the jobs running when the wait began cancelled
        those at once, attempt given back, after their handler had started (the chaos soak
        saw them run twice)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_grace_s
        while (self._inflight or self._writes) and loop.time() < deadline:
            await asyncio.wait(
                [*self._running_tasks(), *self._writes],
                timeout=deadline - loop.time(),
                return_when=asyncio.FIRST_COMPLETED,
            )
        self._cancel_in_flight()
        if self._inflight:
            await asyncio.wait(self._running_tasks())

    def _running_tasks(self) -> list[asyncio.Task[None]]:
        return [task for _, task in self._inflight.values()]

    def _cancel_in_flight(self, job_ids: set[int] | None = None) -> None:
        for job_id, (job, task) in list(self._inflight.items()):
            if job_ids is None or job_id in job_ids:
                task.add_done_callback(functools.partial(self._cancelled_before_start, job))
                task.cancel()

    # -- leases -----------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Extend the leases of running jobs, one statement per beat for all of them. A job
        whose lease was lost meanwhile (rescued and maybe running elsewhere) is cancelled
        here: its outcome could no longer be written anyway."""
        interval_s = self.settings.lease_s / 3
        while True:
            await anyio.sleep(interval_s)
            self.observer.loop_alive("heartbeat")
            running = [(job.id, job.attempt) for job, _ in self._inflight.values()]
            if not running:
                continue
            try:
                kept = await self.db.extend_leases(
                    running, worker_id=self.settings.worker_id, lease_s=self.settings.lease_s
                )
            except Exception as exc:  # a missed beat is retried at the next one
                await self._failed(self._beat_fault, exc)
                continue
            self._beat_fault.ok()
            lost = {job_id for job_id, _ in running} - kept
            lost &= set(self._inflight)  # finished while the heartbeat was in flight
            if lost:
                log.warning("leases_lost", job_ids=sorted(lost))
                self._cancel_in_flight(lost)

    # -- wake-ups -------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Wake the claimer on each NOTIFY. A dead LISTEN connection (restart, pooler,
        network) is noticed by its termination callback or a failed ping, and re-opened
        with backoff; the claimer keeps polling meanwhile, so pickup slows but never stops."""
        ping_interval_s = min(self.settings.poll_interval_s, 5.0)
        episode = self._listen_fault
        while True:
            lost = asyncio.Event()
            try:
                async with self.db.listen(CHANNEL, self._wake_claimer.set, lost.set) as listener:
                    if not episode.active:
                        log.info("listening", channel=CHANNEL)
                    episode.ok()
                    self._wake_claimer.set()  # catch what was inserted while not listening
                    while not lost.is_set():
                        self.observer.loop_alive("listener")
                        with anyio.move_on_after(ping_interval_s):
                            await lost.wait()
                        await listener.ping()
            except Exception as exc:  # whatever broke it, re-open it; polling covers meanwhile
                await episode.failed(exc)
            else:
                await episode.failed(ConnectionResetError("the LISTEN connection closed"))
            await anyio.sleep(episode.delay_s())
