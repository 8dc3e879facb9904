"""Shutdown races the chaos soak (bench/soak.py) found: jobs running at a stop request get
the grace period, jobs claimed but not started are given back (never cancelled after their
handler began), and a job cancelled before its task ever ran must not hang the worker (or
keep its lease alive through the heartbeat)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from tests.support import factories, handlers
from worker import dispatcher, store
from worker.registry import Handler, JobContext, JobResult, Registry


class StopOnClaimingWrite(store.Store):
    """A real store that asks the dispatcher to stop just as it sends the first statement
    that writes outcomes AND claims more jobs: the claim then lands after the stop request."""

    worker: dispatcher.Dispatcher | None = None

    async def finish_and_claim(
        self,
        rows: Sequence[store.Finish],
        *,
        worker_id: str,
        claim: store.ClaimSpec | None = None,
    ) -> tuple[set[int], list[store.Record]]:
        if rows and claim is not None and claim.limit and self.worker is not None:
            self.worker.request_stop()
            self.worker = None
        return await super().finish_and_claim(rows, worker_id=worker_id, claim=claim)


async def test_jobs_claimed_by_a_write_in_flight_at_the_stop_are_given_back_unstarted(
    db: store.Store, make_settings: Any
) -> None:
    """The first claim takes a short sleeper and an instant job; the instant job's outcome
    goes out with a claim of the long sleeper, and the stop comes in between. Shutdown once
    cancelled the long sleeper after its handler had started (the chaos soak saw it run
    twice); now the short sleeper gets the grace and the long one, which never started, is
    given back at once: pending, no attempt spent, free for another worker."""
    short = await factories.make_job(db, task_type="sleep", payload={"seconds": 0.3}, priority=-2)
    instant = await factories.make_job(db, task_type="ok", priority=-1)
    long = await factories.make_job(db, task_type="sleep", payload={"seconds": 1.0})
    gated = StopOnClaimingWrite(db.pool, db.dsn)
    worker = dispatcher.Dispatcher(
        gated,
        handlers.registry(),
        make_settings(concurrency=2, claim_batch=2, shutdown_grace_s=10.0),
    )
    gated.worker = worker
    summary = await asyncio.wait_for(worker.run(), timeout=30)
    # The give-back may commit before the claim in flight reads the queue, which then takes
    # the long sleeper once more and gives it back again: it still never starts.
    assert summary.succeeded == 2 and summary.cancelled >= 1
    statuses = [(await factories.job(db, job_id))["status"] for job_id in (short, instant)]
    assert statuses == ["succeeded"] * 2
    row = await factories.job(db, long)
    assert (row["status"], row["attempts"], row["locked_by"]) == ("pending", 0, None)
    assert {r["status"] for r in await factories.runs(db, long)} == {"cancelled"}


async def test_jobs_claimed_ahead_of_the_slots_are_given_back_at_the_stop(
    db: store.Store, make_settings: Any
) -> None:
    """One slot: the worker claims a few jobs beyond it so the next can start while a claim
    travels. A stop while the first runs lets that one finish and gives the others back at
    once, untouched (they never started), instead of running them in the grace period.
    (Before anything is measured the worker claims one slot's worth ahead: one job here.)"""
    worker: dispatcher.Dispatcher | None = None
    started: list[int] = []

    async def slow(ctx: JobContext, payload: handlers.Empty) -> JobResult:
        assert worker is not None
        started.append(ctx.job_id)
        worker.request_stop()
        await asyncio.sleep(0.3)
        return JobResult()

    registry = Registry()
    registry.add(Handler("slow", slow, handlers.Empty, max_attempts=3))
    first = await factories.make_job(db, task_type="slow", priority=-1)
    others = [await factories.make_job(db, task_type="slow") for _ in range(3)]
    due = {r["id"]: r["run_at"] for r in await db.pool.fetch("SELECT id, run_at FROM job_queue")}
    worker = dispatcher.Dispatcher(
        db, registry, make_settings(concurrency=1, claim_batch=10, shutdown_grace_s=10.0)
    )
    summary = await asyncio.wait_for(worker.run(), timeout=30)
    assert started == [first]
    assert (summary.succeeded, summary.cancelled) == (1, 1)
    assert (await factories.job(db, first))["status"] == "succeeded"
    for job_id in others:
        row = await factories.job(db, job_id)
        assert (row["status"], row["attempts"], row["locked_by"]) == ("pending", 0, None)
        # and its place in the queue: a job given back unstarted keeps its run_at
        assert row["run_at"] == due[job_id]


async def test_a_job_cancelled_before_its_task_ran_is_given_back(
    db: store.Store, make_settings: Any
) -> None:
    """The first job of a claimed batch hurries the shutdown (a second SIGTERM) before the
    other tasks of the batch took their first step: those never run at all."""
    worker: dispatcher.Dispatcher | None = None

    async def hurry(ctx: JobContext, payload: handlers.Empty) -> JobResult:
        assert worker is not None
        worker.request_stop()
        worker.request_stop()  # the second call cancels every job in flight at once
        await asyncio.sleep(10)
        return JobResult()

    registry = Registry()
    registry.add(Handler("hurry", hurry, handlers.Empty, max_attempts=3))
    registry.add(Handler("ok", handlers.ok, handlers.Empty, max_attempts=3))
    first = await factories.make_job(db, task_type="hurry", priority=-1)
    others = [await factories.make_job(db, task_type="ok") for _ in range(3)]
    worker = dispatcher.Dispatcher(db, registry, make_settings(concurrency=10))
    summary = await asyncio.wait_for(worker.run(), timeout=30)
    assert summary.cancelled == 4
    for job_id in [first, *others]:
        row = await factories.job(db, job_id)
        assert (row["status"], row["attempts"], row["locked_by"]) == ("pending", 0, None)
        [run] = await factories.runs(db, job_id)
        assert (run["status"], run["reason"]) == ("cancelled", "shutdown")
