"""Lease rescue and retention: each a `run_once()` that tests call directly, plus a thin loop.

Every worker runs both; they are safe to run concurrently (SKIP LOCKED, bounded batches).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import anyio
import anyio.lowlevel
import structlog

from worker import faults, store
from worker.clock import Clock
from worker.config import Settings
from worker.observer import NullObserver, Observer

log = structlog.get_logger("worker.maintenance")

_RESCUE_BATCH = 500


@dataclass(frozen=True, slots=True)
class RescueReport:
    rescued: int = 0
    failed: int = 0
    released: int = 0
    """Children moved on (pending or cancelled) by this pass: of jobs it failed for good,
    and of final jobs whose release never ran (the sweep)."""


@dataclass(frozen=True, slots=True)
class PruneReport:
    jobs_deleted: int = 0
    runs_deleted: int = 0


class Rescuer:
    """Returns jobs whose lease expired (a dead or hung worker) to pending, or to failed."""

    def __init__(
        self, db: store.Store, settings: Settings, observer: Observer | None = None
    ) -> None:
        self.db = db
        self.settings = settings
        self.observer = observer or NullObserver()

    async def run_once(self) -> RescueReport:
        rescued = failed = released = 0
        while True:
            rows = await self.db.rescue_expired(
                limit=_RESCUE_BATCH,
                retry_base_s=self.settings.retry_base_s,
                retry_cap_s=self.settings.retry_cap_s,
                rescuer_id=self.settings.worker_id,
            )
            for row in rows:
                failed_for_good = row["status"] == "failed"
                failed += failed_for_good
                rescued += not failed_for_good
                log.warning(
                    "job_rescued",
                    job_id=row["job_id"],
                    task_type=row["task_type"],
                    queue=row["queue"],
                    attempt=row["attempt"],
                    outcome=row["status"],
                    reason="lease_expired",
                )
                self.observer.rescued(row)
            failed_ids = [row["job_id"] for row in rows if row["status"] == "failed"]
            if failed_ids:
                released += await self.db.release_jobs(failed_ids)
            if len(rows) < _RESCUE_BATCH:
                return RescueReport(rescued, failed, released + await self._sweep())

    async def _sweep(self) -> int:
        """Release the children of final jobs whose own release never ran (a worker died
        between committing an outcome and releasing): usually none, found by an index."""
        moved = 0
        while True:
            jobs, children = await self.db.release_stranded(limit=_RESCUE_BATCH)
            moved += children
            if jobs:
                log.warning("children_released_late", jobs=jobs, children=children)
            if jobs < _RESCUE_BATCH:
                return moved


class Pruner:
    """Deletes finished jobs and audit rows past their retention age, in bounded batches
    (each its own short transaction) so it never holds long locks."""

    def __init__(self, db: store.Store, settings: Settings, clock: Clock) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock

    async def run_once(self) -> PruneReport:
        now = self.clock.now()
        s = self.settings
        finished_before = now - timedelta(days=s.retain_succeeded_days)
        failed_before = (
            None if s.retain_failed_days is None else now - timedelta(days=s.retain_failed_days)
        )
        jobs = await self._batches(
            lambda: self.db.prune_jobs(
                finished_before=finished_before, failed_before=failed_before, limit=s.prune_batch
            )
        )
        runs = await self._batches(
            lambda: self.db.prune_runs(
                started_before=now - timedelta(days=s.retain_runs_days), limit=s.prune_batch
            )
        )
        await self._batches(lambda: self.db.prune_rate_starts(limit=s.prune_batch))
        if jobs or runs:
            log.info("pruned", jobs_deleted=jobs, runs_deleted=runs)
        return PruneReport(jobs, runs)

    async def _batches(self, delete: Callable[[], Awaitable[int]]) -> int:
        total = 0
        while True:
            deleted = await delete()
            total += deleted
            if deleted < self.settings.prune_batch:
                return total
            await anyio.lowlevel.checkpoint()  # let the worker's own statements in between


async def every(
    interval_s: float,
    name: str,
    run_once: Callable[[], Awaitable[object]],
    on_alive: Callable[[str], None],
    reset: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run `run_once` every `interval_s`. A failed pass is retried with backoff (at most
    `interval_s` apart), its fault logged once (worker/faults.py); a fatal fault raises
    DatabaseFault. `reset`: replaces the pool's sessions when they carry the fault."""
    episode = faults.Episode(name, log, reset=reset, cap_s=interval_s)
    while True:
        try:
            await run_once()
        except Exception as exc:  # a daemon loop outlives all but a fatal fault
            await episode.failed(exc)
            await anyio.sleep(min(episode.delay_s(), interval_s))
            continue
        episode.ok()
        on_alive(name)
        await anyio.sleep(interval_s)
