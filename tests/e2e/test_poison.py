"""Poison jobs: a handler that kills its own worker process, with a fleet of real workers.

A supervisor in the test restarts any worker that died, as a container orchestrator
would. The poison job must burn its attempts (one dead worker each), end `failed` with
the rescuer's reason, and never stop the fleet: good jobs keep completing in between.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.test_crashes import start_worker, stop, wait_for
from tests.support import factories
from worker import store

_WORKERS = 3
_MIN_GOOD_JOBS = 500
_FEED_BATCH = 10
_FEED_PAUSE_S = 0.05


@dataclass
class Fleet:
    """Worker processes under a supervisor that replaces the dead ones."""

    dsn: str
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    deaths: list[int] = field(default_factory=list)  # return codes of workers that died

    def start(self) -> None:
        n = len(self.workers) + len(self.deaths)
        # Concurrency 10 per worker: a death sends back a handful of in-flight good jobs.
        self.workers.append(
            start_worker(self.dsn, self.logs / f"w{n}.log", WORKER_CONCURRENCY="10")
        )

    async def supervise(self) -> None:
        while True:
            for process in [p for p in self.workers if p.poll() is not None]:
                self.workers.remove(process)
                self.deaths.append(process.returncode)
                self.start()
            await asyncio.sleep(0.05)

    def stop_all(self) -> list[int]:
        codes = [stop(p) for p in self.workers]
        self.workers.clear()
        return codes


async def feed_until_failed(db: store.Store, poison_id: int) -> int:
    """Enqueue good jobs at a steady pace until the poison job failed for good."""
    fed = 0
    while True:
        row = await factories.job(db, poison_id)
        if row["status"] == "failed" and fed >= _MIN_GOOD_JOBS:
            return fed
        await db.enqueue_many("test_ok", [{}] * _FEED_BATCH)
        fed += _FEED_BATCH
        await asyncio.sleep(_FEED_PAUSE_S)


async def successes_between(db: store.Store, after: object, before: object) -> int:
    return int(
        await db.pool.fetchval(
            "SELECT count(*) FROM job_runs WHERE job_key = 'test_ok' AND status = 'succeeded'"
            " AND finished_at > $1 AND finished_at < $2",
            after,
            before,
        )
    )


async def test_poison_job_fails_after_its_attempts_while_the_fleet_keeps_working(
    db: store.Store, db_dsn: str, tmp_path: Path
) -> None:
    poison_id = await factories.make_job(db, task_type="test_suicide")
    fleet = Fleet(db_dsn, tmp_path)
    for _ in range(_WORKERS):
        fleet.start()
    supervisor = asyncio.create_task(fleet.supervise())
    try:
        fed = await asyncio.wait_for(feed_until_failed(db, poison_id), timeout=60)
        await wait_for(
            db, "SELECT count(*) FROM job_queue WHERE task_type = 'test_ok'", fed, timeout_s=5
        )
        await wait_for(
            db,
            "SELECT count(*) FROM job_queue WHERE task_type = 'test_ok' AND status <> 'succeeded'",
            0,
            timeout_s=60,
        )
    finally:
        supervisor.cancel()
        exit_codes = fleet.stop_all()
    print(f"\npoison: {fed} good jobs fed, worker deaths {fleet.deaths}")

    poison = await factories.job(db, poison_id)
    assert (poison["status"], poison["attempts"], poison["max_attempts"]) == ("failed", 2, 2)
    assert poison["last_error"].startswith("lease expired: worker ")
    runs = await factories.runs(db, poison_id)
    assert [(r["attempt"], r["status"], r["reason"]) for r in runs] == [
        (1, "rescued", "lease_expired"),
        (2, "failed", "lease_expired"),
    ]
    # Each attempt took exactly one worker down, by its own SIGKILL; the rest stopped cleanly.
    assert fleet.deaths == [-signal.SIGKILL] * 2
    assert exit_codes == [0] * _WORKERS
    # The fleet kept working while the poison job was in flight and between its attempts.
    first, second = runs
    assert await successes_between(db, first["started_at"], second["started_at"]) > 0
    assert await successes_between(db, second["started_at"], second["finished_at"]) > 0
