"""The engine's only module that executes SQL: one method per named query in queries.sql.
(The control plane's SQL is worker/admin/store.py's.)"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
import structlog

from worker import errors
from worker.queries import QUERIES

log = structlog.get_logger("worker.store")

Record = asyncpg.Record

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, DNS
    TimeoutError,
    asyncpg.InterfaceError,  # includes ConnectionDoesNotExistError
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01: server restarted under us
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,  # transient while a restarted server fills up again
    # "cannot switch to state ...; another operation is in progress": asyncpg's protocol
    # state after a connection broke mid-statement (seen during a database restart).
    asyncpg.InternalClientError,
)
"""Errors that mean "the database is away", not "this statement is wrong"."""
RELEASE_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *CONNECTION_ERRORS)
"""What a release after commit may meet (a deadlock with another release, an outage)."""


class Finish(NamedTuple):
    """One attempt's outcome, as finish_and_claim writes it: a tuple, so that a batch turns
    into finish_and_claim's column arrays in one zip (one is built per attempt). The field
    order is the statement's, $1 to $13."""

    job_id: int
    attempt: int
    job_status: str
    retry_delay_s: float
    error: str | None
    result: Any
    run_status: str
    reason: str
    rows_affected: int | None
    notes: str | None
    started_at: datetime
    duration_ms: int
    spend_attempt: bool


@dataclass(frozen=True, slots=True)
class ClaimSpec:
    """What a worker claims: up to `limit` due jobs of its queues and task types. The other
    sequences run parallel to `task_types`: each type's default max_attempts, and its
    limits (None: none): running fleet-wide, running per key (the key from the job's
    concurrency_key, else from payload field `key_fields`), started per rate window."""

    queues: Sequence[str]
    limit: int
    task_types: Sequence[str]
    max_attempts: Sequence[int]
    lease_s: float
    type_limits: Sequence[int | None] = ()
    key_fields: Sequence[str | None] = ()
    key_limits: Sequence[int | None] = ()
    rate_counts: Sequence[int | None] = ()
    rate_windows_s: Sequence[float | None] = ()

    def limit_arrays(self) -> list[list[Any]]:
        """The five limit arrays of finish_and_claim ($20..$24), padded with None."""
        width = len(self.task_types)
        columns = (
            self.type_limits,
            self.key_fields,
            self.key_limits,
            self.rate_counts,
            self.rate_windows_s,
        )
        return [list(column) or [None] * width for column in columns]


@dataclass(frozen=True, slots=True)
class Claimed:
    """What one finish_and_claim returned."""

    written: set[int]
    """Ids whose outcome was written (the others had lost their lease)."""
    rows: list[Record]
    """The jobs claimed."""
    wake_at: datetime | None
    """When a task type held back by a rate limit or a hold may take jobs again."""


_NO_CLAIM = ClaimSpec(queues=(), limit=0, task_types=(), max_attempts=(), lease_s=0.0)


def _cannot_migrate(problem: str) -> errors.MigrationError:
    return errors.MigrationError(
        f"cannot migrate as this database role: {problem}; run `python -m worker migrate` "
        "with the DATABASE_URL of the role that owns the schema"
    )


def _job_id(row: Finish) -> int:
    return row.job_id


@dataclass(frozen=True, slots=True)
class Migration:
    migration_set: str
    version: int
    name: str
    sql: str
    checksum: str


@dataclass(frozen=True, slots=True)
class ScheduleDef:
    """A schedule as the file sync and `create_schedule` write it."""

    name: str
    cron: str
    task_type: str
    timezone: str
    payload: dict[str, Any]
    queue: str
    priority: int
    max_attempts: int | None
    missed: str
    active: bool
    source: str

    def create_args(self) -> tuple[Any, ...]:
        """The arguments of the `create_schedule` query, in order."""
        return (
            self.name,
            self.cron,
            self.task_type,
            self.payload,
            self.timezone,
            self.queue,
            self.priority,
            self.max_attempts,
            self.missed,
            self.active,
        )


class UndecodableJson:
    """Stands in for a jsonb value Python's json module cannot rebuild: PostgreSQL stores
    thousands of nesting levels and numbers of thousands of digits, json.loads gives up near
    the recursion limit and at 4300 digits. Raising instead would fail the whole fetch: a
    claim would strand every job it took."""

    __slots__ = ("chars", "problem")

    def __init__(self, chars: int, problem: str) -> None:
        self.chars = chars
        self.problem = problem

    def __str__(self) -> str:
        return f"JSON of {self.chars} characters that Python cannot decode: {self.problem}"

    def __repr__(self) -> str:
        return f"<{self}>"


def _encode_json(value: Any) -> str:
    try:
        text = json.dumps(value, default=str, separators=(",", ":"))
        if "\\u0000" in text:  # jsonb refuses NUL characters: replace them rather than fail
            text = json.dumps(_without_nul(json.loads(text)), separators=(",", ":"))
    except RecursionError:
        # A refusal of this value, like a circular reference, not a crash of the caller.
        raise ValueError("JSON value nested too deeply to encode") from None
    return text


def _decode_json(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        return UndecodableJson(len(text), "nested too deeply")
    except ValueError as exc:  # jsonb is valid JSON: only Python's int digit limit is left
        return UndecodableJson(len(text), str(exc))


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb in and out as Python objects on every connection."""
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_json, decoder=_decode_json, format="text"
    )


class EngineConnection(asyncpg.Connection):
    """The engine pool's connections: released without a reset. asyncpg's default reset
    (advisory unlock, CLOSE ALL, UNLISTEN *, RESET ALL) is one more round trip after every
    statement, so each claim and outcome write took two; the engine's statements leave no
    session state behind (transaction-local settings and advisory locks only, LISTEN on a
    connection of its own). A connection released inside a transaction is still rolled
    back. The handlers' pool keeps the reset: a handler may leave anything behind."""

    def get_reset_query(self) -> str:
        return ""


async def connect(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 4,
    statement_cache_size: int = 100,
    pooled: bool = False,
) -> Store:
    """Two pools on `dsn`: the engine's (claims, outcomes, leases, maintenance, the admin
    use cases), and the handlers' (`JobContext.pool`, opened on first use), so a handler
    that holds connections cannot stall the claim and outcome writes.

    Without a transaction pooler in between (`pooled`), the engine's sessions run with JIT
    off and generic plans. JIT: the claim's plan costs past jit_above_cost on a large
    table, and compiling it took ~300 ms where running it takes ~1 ms (1.6M rows). Generic
    plans: planning the claim statement costs several times what running it does, and its
    plan does not depend on the values (it walks the claim index per queue and task type);
    the admin reads, whose plans do, ask for custom plans themselves. A pooler may refuse
    startup parameters and shares its server sessions: there the server's settings stand
    (ALTER ROLE ... SET jit = off helps)."""
    settings = {"application_name": "worker"}
    if not pooled:
        settings.update(jit="off", plan_cache_mode="force_generic_plan")

    async def engine_pool(server_settings: dict[str, str]) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            statement_cache_size=statement_cache_size,
            init=init_connection,
            server_settings=server_settings,
            connection_class=EngineConnection,
        )

    try:
        pool = await engine_pool(settings)
    except asyncpg.ProtocolViolationError as exc:
        if pooled or "startup parameter" not in str(exc):
            raise
        # PgBouncer refuses startup parameters it does not know: a pooler is in between
        # although pooler mode is off. Connect with the server's settings, and say so.
        log.warning(
            "pooler_suspected",
            error=str(exc),
            hint="set WORKER_POOLER_MODE=true when connecting through a transaction pooler",
        )
        pool = await engine_pool({"application_name": "worker"})
    handlers = await HandlerPool(
        dsn,
        min_size=0,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        setup=None,
        init=init_connection,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        statement_cache_size=statement_cache_size,
        server_settings={"application_name": "worker-handlers"},
    )
    return Store(pool, dsn, handlers)


_HANDLER_PING_TIMEOUT_S = 5.0


class HandlerPool(asyncpg.Pool):
    """The handlers' pool (JobContext.pool): it hands out only connections that answer.
    After a database restart or a terminated backend, an idle pooled connection may not
    know yet that the server has closed it (the notice sits unread in its socket), and the
    handler's first statement on it failed: an attempt spent on the worker's connection,
    not the job. Each acquire pings first (one round trip, on this pool only: the engine's
    per-job statements do not go through it) and replaces a dead connection; a connection
    error is the handler's only when a fresh connection fails too."""

    def acquire(self, *, timeout: float | None = None) -> Any:
        return _CheckedAcquire(self, timeout)

    async def checked(self, wait_s: float | None) -> Any:
        tries = self.get_max_size() + 1  # every idle connection may be dead, then one fresh
        for left in range(tries - 1, -1, -1):
            conn = await asyncpg.Pool.acquire(self, timeout=wait_s)
            try:
                await conn.execute(QUERIES["ping"], timeout=_HANDLER_PING_TIMEOUT_S)
            except CONNECTION_ERRORS:
                await self.release(conn)  # closed: its slot reconnects on the next acquire
                if left == 0:
                    raise
                continue
            except BaseException:
                await self.release(conn)
                raise
            return conn
        raise AssertionError("unreachable")


class _CheckedAcquire:
    """`async with pool.acquire() as conn` and `conn = await pool.acquire()`, as asyncpg's."""

    def __init__(self, pool: HandlerPool, timeout: float | None) -> None:
        self.pool = pool
        self.timeout = timeout
        self.conn: Any = None

    async def __aenter__(self) -> Any:
        self.conn = await self.pool.checked(self.timeout)
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        conn, self.conn = self.conn, None
        await self.pool.release(conn)

    def __await__(self) -> Any:
        return self.pool.checked(self.timeout).__await__()


class Listener:
    """A dedicated connection LISTENing on one channel."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def ping(self) -> None:
        """Round-trip, so a dead connection is noticed instead of silently missing NOTIFYs."""
        await self.conn.execute(QUERIES["ping"])


class Store:
    def __init__(
        self, pool: asyncpg.Pool, dsn: str, handler_pool: asyncpg.Pool | None = None
    ) -> None:
        self.pool = pool
        self.dsn = dsn
        self.handler_pool = pool if handler_pool is None else handler_pool
        """What handlers get as JobContext.pool."""

    @contextlib.asynccontextmanager
    async def listen(
        self,
        channel: str,
        on_notify: Callable[[], None],
        on_lost: Callable[[], None] | None = None,
    ) -> AsyncIterator[Listener]:
        """A dedicated connection LISTENing on `channel`; `on_lost` runs if it closes."""
        conn = await asyncpg.connect(
            self.dsn, server_settings={"application_name": "worker-listen"}, timeout=10
        )
        try:
            if on_lost is not None:
                conn.add_termination_listener(lambda *_: on_lost())
            await conn.add_listener(channel, lambda *_: on_notify())
            yield Listener(conn)
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def expire_sessions(self) -> None:
        """Replace every pooled session at its next use (those in use when released): a
        session keeps read-only mode, a standby it was connected to, prepared statements a
        migration invalidated."""
        await self.pool.expire_connections()
        if self.handler_pool is not self.pool:
            await self.handler_pool.expire_connections()

    async def close(self) -> None:
        if self.handler_pool is not self.pool:
            await self.handler_pool.close()
        await self.pool.close()

    async def server_version(self) -> tuple[int, str]:
        row = await self.pool.fetchrow(QUERIES["server_version"])
        assert row is not None
        return int(row["version_num"]), str(row["version"])

    # -- migrations ----------------------------------------------------------------------

    async def applied_migrations(self, migration_set: str = "core") -> dict[int, Record]:
        """Applied versions of one set; empty on a database never migrated."""
        try:
            rows = await self.pool.fetch(QUERIES["applied_migrations"], migration_set)
        except asyncpg.UndefinedTableError:
            return {}
        return {row["version"]: row for row in rows}

    async def apply_migrations(self, migrations: Sequence[Migration]) -> list[Migration]:
        """Apply those not yet applied, all in one transaction under an advisory lock, so two
        processes migrating at once apply each migration once. Returns what was applied.
        All of `migrations` belong to one set."""
        try:
            return await self._apply_migrations(migrations)
        except asyncpg.InsufficientPrivilegeError as exc:
            # The worker's least-privilege role (README.md, "Access control") lands here.
            raise _cannot_migrate(str(exc)) from None

    async def _apply_migrations(self, migrations: Sequence[Migration]) -> list[Migration]:
        applied: list[Migration] = []
        sets = {m.migration_set for m in migrations}
        if len(sets) > 1:
            raise ValueError(f"one migration set at a time, got {sorted(sets)}")
        migration_set = sets.pop() if sets else "core"
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(QUERIES["lock_migrations"])
            owner = await conn.fetchrow(QUERIES["migration_owner"])
            if owner is not None and not owner["may_act_as_owner"]:
                raise _cannot_migrate(f"permission denied: the schema belongs to {owner['owner']}")
            await conn.execute(QUERIES["create_migrations_table"])
            rows = await conn.fetch(QUERIES["applied_migrations"], migration_set)
            done = {row["version"]: row for row in rows}
            for migration in migrations:
                previous = done.get(migration.version)
                if previous is not None:
                    if previous["checksum"] != migration.checksum:
                        raise errors.MigrationError(
                            f"{migration.migration_set} migration "
                            f"{migration.version:04d}_{migration.name} was changed after "
                            "it was applied; add a new migration instead of editing an old one"
                        )
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    QUERIES["record_migration"],
                    migration.migration_set,
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
                applied.append(migration)
        return applied

    # -- the engine ----------------------------------------------------------------------

    async def finish_and_claim(
        self, rows: Sequence[Finish], *, worker_id: str, claim: ClaimSpec | None = None
    ) -> Claimed:
        """Write outcomes and claim up to `claim.limit` jobs in one statement."""
        spec = claim or _NO_CLAIM
        # In id order, as the heartbeat: the update walks the outcome rows in array order, so
        # two statements of this worker touching the same jobs lock them in the same order and
        # cannot deadlock (the chaos soak saw one between an outcome write and a heartbeat).
        # The statement finds each job's outcome by binary search over the ids, and of two
        # outcomes of one job (a stable sort keeps them in the order they came) the later.
        rows = sorted(rows, key=_job_id)
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(Finish._fields)
        result = await self.pool.fetch(
            QUERIES["finish_and_claim"],
            *columns,
            worker_id,
            list(spec.queues),
            spec.limit,
            list(spec.task_types),
            float(spec.lease_s),
            list(spec.max_attempts),
            *spec.limit_arrays(),
        )
        claimed = [row for row in result if row["id"] is not None]
        meta = next(row for row in result if row["id"] is None)  # ids written, next wake-up
        if meta["released"]:
            await self._release_after_commit(meta["released"])
        return Claimed(set(meta["written"] or ()), claimed, meta["wake_at"])

    async def _release_after_commit(self, job_ids: Sequence[int]) -> None:
        """Move on the children of jobs just written final. Never raises: the outcomes are
        committed whatever happens here, and the rescuer's sweep (release_stranded)
        releases whatever a failure left behind."""
        try:
            await self.release_jobs(job_ids)
        except RELEASE_ERRORS as exc:
            log.warning("release_failed", jobs=len(job_ids), error=f"{type(exc).__name__}: {exc}")

    async def release_jobs(self, job_ids: Sequence[int]) -> int:
        """Release the waiting children of final jobs `job_ids`; how many moved."""
        return int(await self.pool.fetchval(QUERIES["release_jobs"], list(job_ids)))

    async def release_stranded(self, *, limit: int) -> tuple[int, int]:
        """The sweep: (final jobs whose children were never released, children moved)."""
        row = await self.pool.fetchrow(QUERIES["release_stranded"], limit)
        assert row is not None
        return int(row["jobs"]), int(row["moved"] or 0)

    async def claim(self, spec: ClaimSpec, *, worker_id: str) -> list[Record]:
        return (await self.finish_and_claim((), worker_id=worker_id, claim=spec)).rows

    async def finish(self, rows: Sequence[Finish], *, worker_id: str) -> set[int]:
        """Write outcomes; returns the job ids written (the others had lost their lease)."""
        return (await self.finish_and_claim(rows, worker_id=worker_id)).written

    async def ensure_limit_rows(self, task_types: Sequence[str]) -> None:
        """The job_limits row of each limited task type (a claim locks it: it must exist)."""
        if task_types:
            await self.pool.execute(QUERIES["ensure_limit_rows"], list(task_types))

    async def hold_task_type(self, task_type: str, seconds: float, reason: str | None) -> None:
        """No worker claims `task_type` for `seconds` (a provider asked us to wait)."""
        await self.pool.execute(QUERIES["hold_task_type"], task_type, float(seconds), reason)

    async def extend_leases(
        self, jobs: Sequence[tuple[int, int]], *, worker_id: str, lease_s: float
    ) -> set[int]:
        """Heartbeat for (job id, attempt) pairs; returns the ids whose lease is still ours."""
        ordered = sorted(jobs)  # lock order: see finish_and_claim
        rows = await self.pool.fetch(
            QUERIES["extend_leases"],
            [job_id for job_id, _ in ordered],
            [attempt for _, attempt in ordered],
            worker_id,
            float(lease_s),
        )
        return {row["id"] for row in rows}

    # -- maintenance ---------------------------------------------------------------------

    async def rescue_expired(
        self, *, limit: int, retry_base_s: float, retry_cap_s: float, rescuer_id: str
    ) -> list[Record]:
        """Expired leases back to pending (or failed): [(job_id, job_runs status)]."""
        return await self.pool.fetch(
            QUERIES["rescue_expired"],
            limit,
            float(retry_base_s),
            float(retry_cap_s),
            rescuer_id,
        )

    async def prune_jobs(
        self, *, finished_before: datetime, failed_before: datetime | None, limit: int
    ) -> int:
        return int(
            await self.pool.fetchval(QUERIES["prune_jobs"], finished_before, failed_before, limit)
        )

    async def prune_runs(self, *, started_before: datetime, limit: int) -> int:
        return int(await self.pool.fetchval(QUERIES["prune_runs"], started_before, limit))

    async def prune_rate_starts(self, *, limit: int) -> int:
        return int(await self.pool.fetchval(QUERIES["prune_rate_starts"], limit))

    async def enqueue(
        self,
        task_type: str,
        payload: Any,
        *,
        run_at: datetime | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int | None = None,
        dedupe_key: str | None = None,
        run_type: str = "queue",
        requested_by: UUID | None = None,
    ) -> int | None:
        """Insert one job; None when a live job already holds `dedupe_key`."""
        row = await self.pool.fetchrow(
            QUERIES["enqueue_job"],
            task_type,
            payload,
            run_at,
            queue,
            priority,
            max_attempts,
            dedupe_key,
            run_type,
            requested_by,
        )
        return None if row is None else int(row["id"])

    async def enqueue_many(
        self, task_type: str, payloads: Sequence[Any], *, queue: str = "default"
    ) -> list[int]:
        rows = await self.pool.fetch(QUERIES["enqueue_many"], task_type, list(payloads), queue)
        return [int(row["id"]) for row in rows]

    # -- observability ----------------------------------------------------------------------

    async def queue_metrics(self) -> list[Record]:
        """(queue, status, jobs, oldest_due_age_s) for live jobs: what /metrics reports."""
        return await self.pool.fetch(QUERIES["queue_metrics"])

    # -- schedules -----------------------------------------------------------------------

    async def database_now(self) -> datetime:
        row = await self.pool.fetchrow(QUERIES["database_now"])
        assert row is not None
        now: datetime = row["now"]
        return now

    async def due_schedules(self, now: datetime) -> list[Record]:
        return await self.pool.fetch(QUERIES["due_schedules"], now)

    async def next_schedule_due(self) -> datetime | None:
        due: datetime | None = await self.pool.fetchval(QUERIES["next_schedule_due"])
        return due

    async def fire_schedule(
        self,
        name: str,
        *,
        revision: int,
        seen_last_tick_at: datetime | None,
        last_tick_at: datetime,
        next_tick_at: datetime,
        ticks: Sequence[datetime],
        dedupe_keys: Sequence[str],
    ) -> list[tuple[datetime, int]] | None:
        """Advance a schedule and enqueue its ticks in one statement (compare-and-set on
        `seen_last_tick_at` and `revision`): None if another writer got there first, else
        the (tick, job id) pairs inserted."""
        async with schedule_errors():
            row = await self.pool.fetchrow(
                QUERIES["fire_schedule"],
                name,
                revision,
                seen_last_tick_at,
                last_tick_at,
                next_tick_at,
                list(ticks),
                list(dedupe_keys),
            )
        assert row is not None
        if not row["claimed"]:
            return None
        return list(zip(row["ticks"], row["job_ids"], strict=True))

    async def sync_file_schedules(
        self, schedules: Sequence[ScheduleDef]
    ) -> tuple[list[Record], list[str]]:
        """Upsert the schedule file's schedules and delete those it no longer declares, in
        one transaction under an advisory lock: (upserted rows, removed names)."""
        columns = [
            [getattr(s, column) for s in schedules]
            for column in (
                "name",
                "cron",
                "timezone",
                "task_type",
                "payload",
                "queue",
                "priority",
                "max_attempts",
                "missed",
                "active",
            )
        ]
        async with schedule_errors(), self.pool.acquire() as conn, conn.transaction():
            await conn.execute(QUERIES["lock_schedule_sync"])
            rows = await conn.fetch(QUERIES["upsert_file_schedules"], *columns)
            removed = await conn.fetch(QUERIES["remove_file_schedules"], columns[0])
        return rows, [row["name"] for row in removed]


@contextlib.asynccontextmanager
async def schedule_errors() -> AsyncIterator[None]:
    """The schedule functions refuse bad input with a one-line message (22023 invalid,
    23505 name taken, P0002 no such schedule; 23xxx/22xxx from a row the checks predate):
    raise it as ScheduleError, or Conflict for a name (or dedupe key) that is taken."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:  # the name is taken
        raise errors.Conflict(str(exc)) from None
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
        raise errors.ScheduleError(str(exc)) from None
    except asyncpg.NoDataFoundError as exc:
        raise errors.ScheduleError(str(exc)) from None


# -- workflows: what handlers reach through JobContext, on any connection or pool ---------


async def parent_results(conn: asyncpg.Pool | asyncpg.Connection, job_id: int) -> list[Record]:
    """The parents of job `job_id`: id, task_type, status, result (in id order)."""
    return list(await conn.fetch(QUERIES["parent_results"], job_id))


async def enqueue_group(
    conn: asyncpg.Pool | asyncpg.Connection,
    children: Sequence[dict[str, Any]],
    finalizer: dict[str, Any],
) -> list[int]:
    """job_queue_enqueue_group: the children's ids in order, then the finalizer's."""
    ids = await conn.fetchval(
        QUERIES["enqueue_group"], json.dumps(list(children)), json.dumps(finalizer)
    )
    return [int(i) for i in ids]
