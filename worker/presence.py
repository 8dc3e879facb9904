"""Worker presence: each daemon keeps one row of job_workers (schema/0011_workers.sql) for
the dashboard's workers page: it announces itself at start, beats every few seconds with
its in-flight count and what it runs now, and removes its row at a clean shutdown.

Nothing here is on the job path: a beat is one UPDATE per HEARTBEAT_S whatever the job
rate, and reads the jobs this worker runs from its own running rows (the database's view,
which is also what the rescuer trusts) rather than from the dispatcher. A worker whose row
has not been seen for STALE_AFTER_BEATS of its beats is shown as stale (killed, hung, or
cut off from the database); the next worker to start removes rows silent for a day.

This module keeps its SQL in presence.sql, beside the engine's queries.sql: a separate
concern of its own, executed only here.
"""

from __future__ import annotations

import os
import socket
from typing import Protocol, runtime_checkable

import anyio
import structlog

from worker import __version__, faults, queries, redact, store
from worker.config import Settings

log = structlog.get_logger("worker.presence")

Q = queries.load("worker", "presence.sql")
HEARTBEAT_S = 5.0
STALE_AFTER_BEATS = 3
"""A worker is stale once this many of its beats are missing."""
_LEAVE_TIMEOUT_S = 5.0


@runtime_checkable
class InFlight(Protocol):
    """An observer that counts the jobs in flight (observability.Telemetry does)."""

    @property
    def in_flight(self) -> int: ...


class Presence:
    """This process's row of job_workers. `observer`: the dispatcher's observer; when it
    counts jobs in flight (Telemetry) the beat reports that count, otherwise the count of
    this worker's running rows."""

    def __init__(
        self,
        db: store.Store,
        settings: Settings,
        observer: object = None,
        *,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.db = db
        self.settings = settings
        self.observer = observer
        self.heartbeat_s = heartbeat_s
        self.worker_id = settings.worker_id
        self.pid = os.getpid()

    async def join(self) -> None:
        await self.db.pool.execute(
            Q["presence_join"],
            self.worker_id,
            socket.gethostname(),
            self.pid,
            __version__,
            self.heartbeat_s,
            list(self.settings.queues),
            self.settings.concurrency,
        )
        log.info("worker_announced", worker_id=self.worker_id, heartbeat_s=self.heartbeat_s)

    async def beat(self) -> None:
        """One heartbeat; announces the worker again if its row was removed meanwhile."""
        in_flight = self.observer.in_flight if isinstance(self.observer, InFlight) else None
        found = await self.db.pool.fetchval(Q["presence_beat"], self.worker_id, in_flight, self.pid)
        if found is None:
            await self.join()

    async def leave(self) -> None:
        await self.db.pool.execute(Q["presence_leave"], self.worker_id, self.pid)
        log.info("worker_left", worker_id=self.worker_id)

    async def run(self) -> None:
        """Announce, beat until cancelled (the daemon stops its loops after its last job),
        then remove the row. A database outage skips beats; the row reads stale meanwhile.
        Not a liveness loop of /health: a worker whose role lacks rights on job_workers
        still runs its jobs, and says so in its log."""
        joined = False
        # Never fatal: the row is for the dashboard, not the jobs.
        episode = faults.Episode("presence", log, stops=False)
        try:
            while True:
                try:
                    if joined:
                        await self.beat()
                    else:
                        await self.join()
                        joined = True
                except Exception as exc:  # a daemon loop outlives every bad beat
                    await episode.failed(exc)
                else:
                    episode.ok()
                await anyio.sleep(self.heartbeat_s)
        finally:
            if joined:
                with anyio.CancelScope(shield=True), anyio.move_on_after(_LEAVE_TIMEOUT_S):
                    try:
                        await self.leave()
                    except Exception as exc:  # stale in a few beats, gone in a day
                        log.warning("presence_leave_failed", error=_describe(exc))


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return redact.scrub(text)[:500]
