"""The control plane's SQL (worker/admin/queries.sql), executed here and nowhere else.

- `AdminStore.reads()`: one read-only transaction, bounded in time and planned per call,
  for a page of the dashboard, an API call or a CLI command.
- Every change (retry, cancel, run now, enqueue, pause, schedule edits) runs in one
  transaction with its `job_admin_audit` row, through `AdminStore._change`: a change that
  matched nothing writes no audit row and returns None.

A database role without the rights (the worker's least-privilege `job_worker`) gets
`errors.PermissionDenied` with one line saying which URL to use instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from worker import errors, queries, store

Q = queries.load("worker.admin", "queries.sql")
Record = asyncpg.Record

_ENQUEUE_TRIES = 3  # see the enqueue query: a conflicting job committed meanwhile

# Changes made by admin SQL functions that write their own audit row (the same action and
# target as named here), for the actor `act_as` names: audited once, by the database.
_AUDITED_IN_SQL = frozenset(
    {
        "retry_job",
        "cancel_job",
        "run_job_now",
        "pause_queue",
        "resume_queue",
        "create_schedule",
        "update_schedule",
        "toggle_schedule",
        "retime_schedule",
        "delete_schedule",
        "run_schedule_now",
    }
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts from the CLI, the HTTP API or the dashboard: the audit row's actor
    (`cli:alice`, `ci`, `jwt:<sub>`, a dashboard user) and remote address, and for a
    signed-in app user their id, recorded as `requested_by` of the jobs they start."""

    name: str
    remote_addr: str | None = None
    user_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One job as an admin enqueues it (the columns of job_queue a caller may set)."""

    task_type: str
    payload: Any
    run_at: datetime | None = None
    queue: str = "default"
    priority: int = 0
    max_attempts: int | None = None
    dedupe_key: str | None = None
    requested_by: UUID | None = None
    trace_context: dict[str, str] | None = None
    """The caller's W3C trace context (an HTTP request's traceparent), continued by the
    job's attempt when the worker traces."""
    depends_on: tuple[int, ...] = ()
    """Jobs that must succeed first (schema/0014_workflows.sql); no dedupe key then."""
    on_parent_failure: str = "cancel"
    """'cancel': a parent failed for good or cancelled cancels this job; 'run': it runs
    once every parent is final."""


@dataclass(frozen=True, slots=True)
class JobFilter:
    """The jobs list's filter, which bulk actions apply to: None matches any."""

    status: str | None = None
    queue: str | None = None
    task_type: str | None = None
    text: str | None = None
    """Text in last_error (case-insensitive, not a pattern)."""

    def args(self) -> tuple[str | None, str | None, str | None]:
        return (self.queue, self.task_type, self.text)

    def as_dict(self) -> dict[str, str]:
        fields = {"status": self.status, "queue": self.queue, "task_type": self.task_type}
        return {k: v for k, v in {**fields, "q": self.text}.items() if v}


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch of a bulk action, committed with its audit row."""

    jobs: int
    lowest_id: int | None
    """Where the next batch continues (ids below it); None when nothing matched."""


@dataclass(frozen=True, slots=True)
class Enqueued:
    job_id: int
    status: str
    created: bool
    """False: a live job already held the dedupe key; `job_id` is that job."""


def job_target(row: Record) -> str:
    return f"job:{row['id']}"


def schedule_target(row: Record) -> str:
    return f"schedule:{row['name']}"


def queue_target(queue: str) -> Callable[[Record], str]:
    return lambda row: f"queue:{queue}"


@contextlib.contextmanager
def _permission_errors() -> Iterator[None]:
    try:
        yield
    except asyncpg.InsufficientPrivilegeError as exc:
        raise errors.PermissionDenied(
            f"{exc}: this database role cannot run admin commands; use the DATABASE_URL of "
            "the schema's owner (or of service_role on Supabase)"
        ) from None


class AdminStore:
    """The control plane's reads and audited changes, on the worker's pool."""

    def __init__(self, pool: asyncpg.Pool, *, statement_timeout_s: float = 10.0) -> None:
        self.pool = pool
        self.statement_timeout_s = statement_timeout_s

    @contextlib.asynccontextmanager
    async def reads(self) -> AsyncIterator[Reads]:
        """A read-only transaction, bounded in time, planned per call."""
        with _permission_errors():
            async with self.pool.acquire() as conn, conn.transaction(readonly=True):
                timeout = f"{max(1, round(self.statement_timeout_s * 1000))}ms"
                await conn.execute(Q["read_settings"], timeout)
                yield Reads(conn)

    async def audit(
        self, actor: Actor, action: str, target: str, detail: dict[str, Any] | None = None
    ) -> None:
        """An audit row for an event with no change of its own (login, logout)."""
        with _permission_errors():
            await self.pool.execute(
                Q["audit"], actor.name, action, target, detail, actor.remote_addr
            )

    # -- dashboard sessions ----------------------------------------------------------------

    async def create_session(
        self, id_sha256: bytes, user: str, expires_at: datetime, remote_addr: str | None
    ) -> None:
        with _permission_errors():
            await self.pool.execute(Q["session_create"], id_sha256, user, expires_at, remote_addr)

    async def session_user(self, id_sha256: bytes) -> str | None:
        """The user of a live session, or None (revoked, expired, unknown)."""
        with _permission_errors():
            user: str | None = await self.pool.fetchval(Q["session_user"], id_sha256)
        return user

    async def revoke_session(self, id_sha256: bytes) -> None:
        with _permission_errors():
            await self.pool.execute(Q["session_revoke"], id_sha256)

    # -- jobs --------------------------------------------------------------------------------

    async def enqueue(self, actor: Actor, job: JobRequest, *, run_type: str) -> Enqueued:
        """Insert one job (`run_type` 'manual' for a manual run) and its audit row; a live
        job holding the dedupe key is returned instead (no audit row then)."""
        args = (
            job.task_type,
            job.payload,
            job.run_at,
            job.queue,
            job.priority,
            job.max_attempts,
            job.dedupe_key,
            run_type,
            job.requested_by if job.requested_by is not None else actor.user_id,
            job.trace_context,
        )
        if job.depends_on:
            return await self._enqueue_with_parents(actor, job, run_type)
        for _ in range(_ENQUEUE_TRIES):
            with _permission_errors():
                async with self.pool.acquire() as conn, conn.transaction():
                    row = await conn.fetchrow(Q["enqueue"], *args)
                    if row is None:
                        continue
                    if row["created"]:
                        await _audit(conn, actor, "job_enqueue", job_target(row), _detail(row))
            return Enqueued(int(row["id"]), str(row["status"]), bool(row["created"]))
        raise errors.Conflict(f"dedupe key {job.dedupe_key!r} is being taken by another enqueue")

    async def _enqueue_with_parents(self, actor: Actor, job: JobRequest, run_type: str) -> Enqueued:
        """A job that depends on others: job_queue_enqueue locks its parents and decides
        its state; a missing parent or a refused argument is InvalidInput."""
        with _permission_errors():
            async with self.pool.acquire() as conn, conn.transaction():
                try:
                    job_id = await conn.fetchval(
                        Q["enqueue_with_parents"],
                        job.task_type,
                        job.payload,
                        job.run_at,
                        job.queue,
                        job.priority,
                        job.max_attempts,
                        list(job.depends_on),
                        job.on_parent_failure,
                        job.trace_context,
                    )
                except asyncpg.InvalidParameterValueError as exc:
                    field = "/depends_on" if "depends_on" in str(exc) else ""
                    raise errors.InvalidInput(str(exc), [(field, str(exc))]) from None
                requested_by = job.requested_by if job.requested_by is not None else actor.user_id
                row = await conn.fetchrow(Q["mark_enqueued"], job_id, run_type, requested_by)
                assert row is not None
                await _audit(conn, actor, "job_enqueue", job_target(row), _detail(row))
        return Enqueued(int(row["id"]), str(row["status"]), True)

    async def retry_job(self, actor: Actor, job_id: int) -> Record | None:
        return await self._change(actor, "job_retry", job_target, "retry_job", job_id)

    async def cancel_job(self, actor: Actor, job_id: int) -> Record | None:
        return await self._change(actor, "job_cancel", job_target, "cancel_job", job_id)

    async def run_job_now(self, actor: Actor, job_id: int) -> Record | None:
        return await self._change(actor, "job_run_now", job_target, "run_job_now", job_id)

    async def delete_job(self, actor: Actor, job_id: int) -> Record | None:
        """A failed or cancelled job out of job_queue; None: no such job in those states."""
        return await self._change(actor, "job_delete", job_target, "delete_job", job_id)

    async def bulk_batch(
        self,
        actor: Actor,
        action: str,
        bulk_id: str,
        where: JobFilter,
        status: str,
        *,
        max_id: int,
        before: int | None,
        limit: int,
    ) -> Batch:
        """One batch of bulk `action` (retry, cancel, delete) on up to `limit` jobs in state
        `status` matching `where` with ids up to `max_id` (and below `before`): one short
        transaction, audited as `jobs_bulk_<action>` under target `bulk:<bulk_id>`."""
        args: list[Any] = [status, *where.args(), max_id, before, limit]
        if action == "cancel":
            args.append(actor.name)
        with _permission_errors():
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(Q[f"bulk_{action}"], *args)
                assert row is not None
                if action == "cancel" and row["parents"]:
                    await conn.fetchval(Q["release_children"], row["parents"])
                if row["jobs"]:
                    detail = {
                        **{k: v for k, v in dict(row).items() if k != "parents"},
                        "status": status,
                        "filter": where.as_dict(),
                        "max_id": max_id,
                    }
                    await _audit(conn, actor, f"jobs_bulk_{action}", f"bulk:{bulk_id}", detail)
        return Batch(int(row["jobs"]), row["lowest_id"])

    # -- queues --------------------------------------------------------------------------------

    async def pause_queue(self, actor: Actor, queue: str, reason: str | None) -> Record | None:
        return await self._change(
            actor, "queue_pause", queue_target(queue), "pause_queue", queue, reason
        )

    async def resume_queue(self, actor: Actor, queue: str) -> Record | None:
        return await self._change(actor, "queue_resume", queue_target(queue), "resume_queue", queue)

    # -- schedules -------------------------------------------------------------------------------

    async def create_schedule(self, actor: Actor, schedule: store.ScheduleDef) -> Record:
        """ScheduleError when it is invalid or the name is taken."""
        row = await self._change(
            actor, "schedule_create", schedule_target, "create_schedule", *schedule.create_args()
        )
        assert row is not None
        return row

    async def update_schedule(
        self, actor: Actor, name: str, changes: dict[str, Any]
    ) -> Record | None:
        """Change the fields given (cron, timezone, task_type, payload, queue, priority,
        max_attempts, missed); None: no such schedule."""
        fields = ("cron", "timezone", "task_type", "payload", "queue", "priority")
        values = [changes.get(f) for f in (*fields, "max_attempts", "missed")]
        unknown = set(changes) - {*fields, "max_attempts", "missed"}
        if unknown:
            raise TypeError(f"unknown schedule fields {sorted(unknown)}")
        return await self._change(
            actor, "schedule_update", schedule_target, "update_schedule", name, *values
        )

    async def toggle_schedule(self, actor: Actor, name: str, active: bool) -> Record | None:
        action = "schedule_resume" if active else "schedule_pause"
        return await self._change(actor, action, schedule_target, "toggle_schedule", name, active)

    async def retime_schedule(
        self, actor: Actor, name: str, cron: str, timezone: str | None
    ) -> Record | None:
        """None: no such schedule; ScheduleError: the cron or timezone is refused."""
        return await self._change(
            actor, "schedule_retime", schedule_target, "retime_schedule", name, cron, timezone
        )

    async def delete_schedule(self, actor: Actor, name: str) -> bool:
        row = await self._change(
            actor,
            "schedule_delete",
            lambda row: f"schedule:{name}",
            "delete_schedule",
            name,
        )
        return row is not None

    async def run_schedule_now(self, actor: Actor, name: str) -> Record | None:
        """The new job (None: no such schedule); audited under its job id."""
        return await self._change(
            actor, "schedule_run_now", job_target, "run_schedule_now", name, actor.user_id
        )

    # -- the one way a change is made ------------------------------------------------------------

    async def _change(
        self,
        actor: Actor,
        action: str,
        target: Callable[[Record], str],
        query: str,
        *args: Any,
    ) -> Record | None:
        """Run one guarded change and, when it changed something, its audit row, in one
        transaction. None: nothing to change (wrong state, no such row); a refused value
        raises ScheduleError with the database's one-line message."""
        with _permission_errors():
            async with (
                store.schedule_errors(),
                self.pool.acquire() as conn,
                conn.transaction(),
            ):
                audited_in_sql = query in _AUDITED_IN_SQL
                if audited_in_sql:
                    await conn.execute(Q["act_as"], actor.name, actor.remote_addr)
                try:
                    row = await conn.fetchrow(Q[query], *args)
                except asyncpg.NoDataFoundError:
                    return None
                if row is None or row[0] is False:
                    return None  # a guard matched no row, or a boolean function changed nothing
                if not audited_in_sql:
                    await _audit(conn, actor, action, target(row), _detail(row))
        return row


def _detail(row: Record) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "payload"}


async def _audit(
    conn: PoolConnectionProxy[Record] | asyncpg.Connection,
    actor: Actor,
    action: str,
    target: str,
    detail: dict[str, Any] | None,
) -> None:
    await conn.execute(Q["audit"], actor.name, action, target, detail, actor.remote_addr)


class Reads:
    """The control plane's queries on one connection, inside AdminStore.reads()."""

    def __init__(self, conn: PoolConnectionProxy[Record]) -> None:
        self.conn = conn

    async def overview_counts(self) -> Record:
        row = await self.conn.fetchrow(Q["overview_counts"])
        assert row is not None
        return row

    async def succeeded_count(self) -> int:
        return int(await self.conn.fetchval(Q["succeeded_count"]))

    async def live_breakdown(self) -> list[Record]:
        return await self.conn.fetch(Q["live_breakdown"])

    async def throughput(self, since: datetime, bucket: str) -> list[Record]:
        return await self.conn.fetch(Q["throughput"], since, bucket)

    async def paused_queues(self) -> list[Record]:
        return await self.conn.fetch(Q["paused_queues"])

    async def queues(self) -> list[Record]:
        return await self.conn.fetch(Q["queues"])

    async def recent_audit(self, limit: int) -> list[Record]:
        return await self.conn.fetch(Q["recent_audit"], limit)

    async def jobs(
        self,
        *,
        status: str | None,
        queue: str | None,
        task_type: str | None,
        text: str | None,
        before: int | None,
        limit: int,
    ) -> list[Record]:
        return await self.conn.fetch(Q["jobs"], status, queue, task_type, text, before, limit)

    async def job(self, job_id: int) -> Record | None:
        return await self.conn.fetchrow(Q["job"], job_id)

    async def job_id_range(self) -> tuple[int | None, int | None]:
        row = await self.conn.fetchrow(Q["job_id_range"])
        assert row is not None
        return row["lowest"], row["highest"]

    async def jobs_window(
        self,
        *,
        status: str | None,
        queue: str | None,
        task_type: str | None,
        text: str | None,
        before: int | None,
        limit: int,
        lowest_id: int,
    ) -> list[Record]:
        """`jobs`, looking only at ids from `lowest_id` up."""
        return await self.conn.fetch(
            Q["jobs_window"], status, queue, task_type, text, before, limit, lowest_id
        )

    async def bulk_count(self, status: str, where: JobFilter, max_id: int | None) -> Record:
        """Jobs in state `status` matching `where` (ids up to `max_id`): jobs, max_id."""
        row = await self.conn.fetchrow(Q["bulk_count"], status, *where.args(), max_id)
        assert row is not None
        return row

    async def workers(self, stale_after_beats: int) -> list[Record]:
        return await self.conn.fetch(Q["workers"], stale_after_beats)

    async def job_parents(self, job_id: int) -> list[Record]:
        return await self.conn.fetch(Q["job_parents"], job_id)

    async def job_children(self, job_id: int, limit: int) -> list[Record]:
        return await self.conn.fetch(Q["job_children"], job_id, limit)

    async def job_runs(self, job_id: int, limit: int) -> list[Record]:
        return await self.conn.fetch(Q["job_runs"], job_id, limit)

    async def first_run(self, job_id: int) -> Record | None:
        return await self.conn.fetchrow(Q["first_run"], job_id)

    async def runs(
        self,
        *,
        status: str | None,
        run_type: str | None,
        before: int | None,
        limit: int,
        task_type: str | None = None,
        user_id: UUID | None = None,
    ) -> list[Record]:
        return await self.conn.fetch(Q["runs"], status, run_type, task_type, user_id, before, limit)

    async def audit_entries(self, target: str, limit: int) -> list[Record]:
        return await self.conn.fetch(Q["audit_entries"], target, limit)

    async def schedules(self) -> list[Record]:
        return await self.conn.fetch(Q["list_schedules"])

    async def schedule(self, name: str) -> Record | None:
        return await self.conn.fetchrow(Q["schedule"], name)

    async def schedule_jobs(self, name: str, *, before: int | None, limit: int) -> list[Record]:
        return await self.conn.fetch(Q["schedule_jobs"], name, before, limit)

    async def schedule_last_tick(self, name: str) -> Record | None:
        return await self.conn.fetchrow(Q["schedule_last_tick"], name)

    async def schedule_runs(self, name: str, limit: int) -> list[Record]:
        return await self.conn.fetch(Q["schedule_history"], name, limit)

    async def status(self) -> tuple[list[Record], list[Record], list[Record]]:
        """What `status` prints: counts by queue, task type and status; the oldest due job
        per queue; pending jobs by task type."""
        return (
            await self.conn.fetch(Q["status_breakdown"]),
            await self.conn.fetch(Q["oldest_pending"]),
            await self.conn.fetch(Q["pending_task_types"]),
        )

    async def now(self) -> datetime:
        now: datetime = await self.conn.fetchval(queries.QUERIES["database_now"])
        return now
