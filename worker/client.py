"""Enqueue jobs from application code, on the application's own connection and inside its
own transaction: the job exists once the caller commits, and never if it rolls back.

    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("insert into users ...")
        await client.enqueue(conn, "send_welcome_mail", {"user_id": 1})

Async: `enqueue` and `enqueue_many` take an asyncpg `Connection` or `Pool` (a pool writes
in a transaction of its own) or a psycopg 3 `AsyncConnection`. Sync: `enqueue_sync` and
`enqueue_many_sync` take a psycopg 3 `Connection` or a SQLAlchemy `Connection` or `Session`
on the psycopg driver (`postgresql+psycopg://`); a session or connection without a
transaction gets one begun, which the caller commits as usual: nothing here ever commits.

Input is checked with the rules the table enforces before anything is sent (`ValueError`
naming the field). A job records the caller's OpenTelemetry trace context, when there is
one, so its attempts continue the caller's trace. The insert's trigger NOTIFYs idle workers
when the transaction commits.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict, TypeGuard
from uuid import UUID

import asyncpg
import asyncpg.pool
import orjson
import pydantic

from worker import errors, names, tracing, values
from worker.queries import load

if TYPE_CHECKING:
    import psycopg
    import sqlalchemy.engine
    import sqlalchemy.orm

    AsyncConnection: TypeAlias = (
        "asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool"
        " | psycopg.AsyncConnection[Any]"
    )
    SyncConnection: TypeAlias = (
        "psycopg.Connection[Any] | sqlalchemy.engine.Connection | sqlalchemy.orm.Session"
    )

QUERIES: dict[str, str] = load("worker", "client.sql")


def _pyformat(sql: str) -> str:
    """`$n` placeholders as psycopg's `%(pn)s` (a repeated name binds one parameter)."""
    return re.sub(r"\$(\d+)", r"%(p\1)s", sql.replace("%", "%%"))


_PSYCOPG_QUERIES = {name: _pyformat(sql) for name, sql in QUERIES.items()}

PRIORITY_RANGE = (-1000, 1000)
MAX_ATTEMPTS_RANGE = (1, 1000)
DEDUPE_KEY_MAX_CHARS = 512
CONCURRENCY_KEY_MAX_CHARS = 200


@dataclass(frozen=True, slots=True)
class Enqueued:
    """The job written, or (`duplicate`) the live job that already held the dedupe key."""

    job_id: int
    status: str
    duplicate: bool = False


class Options(TypedDict, total=False):
    """`enqueue`'s keyword arguments, for the APIs that pass them on (Task.enqueue,
    JobContext.enqueue)."""

    run_at: datetime | None
    queue: str
    priority: int
    max_attempts: int | None
    dedupe_key: str | None
    user_id: UUID | str | None
    concurrency_key: str | None


class EnqueueOptions(Options, total=False):
    """`enqueue`'s keyword arguments for one job, parents included (not for enqueue_many)."""

    depends_on: Sequence[int] | None
    on_parent_failure: str


@dataclass(frozen=True, slots=True)
class Job:
    """One job for `enqueue_many`; the fields mean what `enqueue`'s arguments do."""

    task_type: str
    payload: Mapping[str, Any] | pydantic.BaseModel = field(default_factory=dict)
    run_at: datetime | None = None
    queue: str = "default"
    priority: int = 0
    max_attempts: int | None = None
    dedupe_key: str | None = None
    user_id: UUID | str | None = None
    concurrency_key: str | None = None


# -- the public API -------------------------------------------------------------------------


async def enqueue(
    conn: AsyncConnection,
    task_type: str,
    payload: Mapping[str, Any] | pydantic.BaseModel,
    *,
    run_at: datetime | None = None,
    queue: str = "default",
    priority: int = 0,
    max_attempts: int | None = None,
    dedupe_key: str | None = None,
    user_id: UUID | str | None = None,
    concurrency_key: str | None = None,
    depends_on: Sequence[int] | None = None,
    on_parent_failure: str = "cancel",
) -> Enqueued:
    """Write one job in `conn`'s transaction (one round trip) and return its id.

    `run_at`: when it becomes due (aware datetime; default now). `priority`: -1000..1000,
    lower runs first. `max_attempts`: 1..1000 (default: the handler's). `dedupe_key`: while
    a pending or running job holds it, enqueueing again writes nothing and returns that job
    (`duplicate=True`). `user_id`: who asked for it (job_queue.requested_by).
    `concurrency_key`: the key the handler's per-key concurrency limit counts it under.
    `depends_on`: ids of jobs it waits for (it runs once they all succeeded; see
    Workflows); `on_parent_failure`: `cancel` (default) or `run`. Such a job goes through
    `job_queue_enqueue` (service_role or the table's owner; two round trips) and takes no
    dedupe_key.
    """
    job = Job(
        task_type, payload, run_at, queue, priority, max_attempts, dedupe_key, user_id,
        concurrency_key,
    )  # fmt: skip
    args = [*_checked(job), _trace_context()]
    if depends_on is not None:
        [row] = await _fetch(
            conn, "enqueue_after", _after(job, args, depends_on, on_parent_failure)
        )
        [row] = await _fetch(conn, "job_status", [row[0]])
        return _enqueued(row)
    for _ in range(2):
        rows = await _fetch(conn, "enqueue", args)
        if rows:
            return _enqueued(rows[0])
    raise _invisible_holder(job.dedupe_key)


async def enqueue_many(conn: AsyncConnection, jobs: Iterable[Job]) -> list[int]:
    """Write all `jobs` in one statement and return their ids, in order (for a dedupe key a
    live job holds, that job's id). Every job is checked before anything is written."""
    columns = _columns(jobs)
    if not columns[0]:
        return []
    keys = sorted({key for key in columns[6] if key is not None})
    [found] = await _fetch(conn, "enqueue_many", [*columns, _trace_context(), keys])
    ids, missing = _ids(found, columns[6])
    if missing:  # a transaction that committed while the statement ran took these keys
        [more] = await _fetch(conn, "live_dedupe_ids", [missing])
        ids, missing = _ids(found, columns[6], more)
    if missing:
        raise _invisible_holder(missing[0])
    return ids


def enqueue_sync(
    conn: SyncConnection,
    task_type: str,
    payload: Mapping[str, Any] | pydantic.BaseModel,
    *,
    run_at: datetime | None = None,
    queue: str = "default",
    priority: int = 0,
    max_attempts: int | None = None,
    dedupe_key: str | None = None,
    user_id: UUID | str | None = None,
    concurrency_key: str | None = None,
    depends_on: Sequence[int] | None = None,
    on_parent_failure: str = "cancel",
) -> Enqueued:
    """`enqueue` for sync code: a psycopg 3 `Connection`, a SQLAlchemy `Connection` or
    `Session` (psycopg driver)."""
    job = Job(
        task_type, payload, run_at, queue, priority, max_attempts, dedupe_key, user_id,
        concurrency_key,
    )  # fmt: skip
    args = [*_checked(job), _trace_context()]
    if depends_on is not None:
        [row] = _fetch_sync(conn, "enqueue_after", _after(job, args, depends_on, on_parent_failure))
        [row] = _fetch_sync(conn, "job_status", [row[0]])
        return _enqueued(row)
    for _ in range(2):
        rows = _fetch_sync(conn, "enqueue", args)
        if rows:
            return _enqueued(rows[0])
    raise _invisible_holder(job.dedupe_key)


def enqueue_many_sync(conn: SyncConnection, jobs: Iterable[Job]) -> list[int]:
    """`enqueue_many` for sync code (the connections `enqueue_sync` takes)."""
    columns = _columns(jobs)
    if not columns[0]:
        return []
    keys = sorted({key for key in columns[6] if key is not None})
    [found] = _fetch_sync(conn, "enqueue_many", [*columns, _trace_context(), keys])
    ids, missing = _ids(found, columns[6])
    if missing:  # a transaction that committed while the statement ran took these keys
        [more] = _fetch_sync(conn, "live_dedupe_ids", [missing])
        ids, missing = _ids(found, columns[6], more)
    if missing:
        raise _invisible_holder(missing[0])
    return ids


# -- checks ---------------------------------------------------------------------------------


def _after(
    job: Job, args: list[Any], depends_on: Sequence[int], on_parent_failure: str
) -> list[Any]:
    """enqueue_after's arguments: the job's, its parents and its policy, checked."""
    if job.dedupe_key is not None:
        raise ValueError("dedupe_key: a job with depends_on cannot take one")
    if job.user_id is not None:
        raise ValueError("user_id: not recorded for a job with depends_on")
    if on_parent_failure not in ("cancel", "run"):
        raise ValueError(
            f"on_parent_failure must be cancel or run, not {_shown(on_parent_failure)}"
        )
    parents = list(depends_on)
    if not parents or not all(isinstance(p, int) and not isinstance(p, bool) for p in parents):
        raise ValueError("depends_on must be a non-empty list of job ids")
    # $1..$6 as for enqueue, then concurrency_key, trace context, parents, policy
    return [*args[:6], args[8], args[9], parents, on_parent_failure]


Row: TypeAlias = tuple[
    str, str, datetime | None, str, int, int | None, str | None, UUID | None, str | None
]
"""One job as the statements take it: $1..$9."""


def _checked(job: Job) -> Row:
    """The job's column values, or ValueError naming the first field the table would refuse."""
    _check_name("task_type", job.task_type, names.is_task_type, names.TASK_TYPE_RULE)
    _check_name("queue", job.queue, names.is_queue, names.QUEUE_RULE)
    _check_int("priority", job.priority, PRIORITY_RANGE)
    if job.max_attempts is not None:
        _check_int("max_attempts", job.max_attempts, MAX_ATTEMPTS_RANGE)
    if job.run_at is not None and (
        not isinstance(job.run_at, datetime) or job.run_at.utcoffset() is None
    ):
        raise ValueError("run_at must be a timezone-aware datetime")
    if job.dedupe_key is not None:
        _check_text("dedupe_key", job.dedupe_key, DEDUPE_KEY_MAX_CHARS)
    if job.concurrency_key is not None:
        _check_text("concurrency_key", job.concurrency_key, CONCURRENCY_KEY_MAX_CHARS)
    return (
        job.task_type,
        _payload_text(job.payload),
        job.run_at,
        job.queue,
        job.priority,
        job.max_attempts,
        job.dedupe_key,
        None if job.user_id is None else _user_id(job.user_id),
        job.concurrency_key,
    )


_GOOD_NAMES: set[str] = set()
"""Task types and queues already checked: a batch repeats a few names many times."""


def _check_name(name: str, value: object, valid: Callable[[str], bool], rule: str) -> None:
    if value in _GOOD_NAMES:
        return
    if not isinstance(value, str) or not valid(value):
        raise ValueError(f"{name} {_shown(value)} is invalid: use {rule}")
    if len(_GOOD_NAMES) < 10_000:
        _GOOD_NAMES.add(value)


def _check_int(name: str, value: object, bounds: tuple[int, int]) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, not {type(value).__name__}")
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{name} must be between {bounds[0]} and {bounds[1]}, not {value}")


def _check_text(name: str, value: object, max_chars: int) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= max_chars:
        raise ValueError(f"{name} must be a string of 1 to {max_chars} characters")
    problem = values.text_problem(value)
    if problem is not None:
        raise ValueError(f"{name} {problem}")


def _user_id(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"user_id {_shown(value)} is not a UUID") from None


def _payload_text(payload: Mapping[str, Any] | pydantic.BaseModel) -> str:
    if isinstance(payload, pydantic.BaseModel):
        payload = payload.model_dump(mode="json", by_alias=True)
    elif type(payload) is not dict and not isinstance(payload, Mapping):
        raise ValueError(f"payload must be a JSON object (a dict), not {type(payload).__name__}")
    try:
        text = orjson.dumps(payload)
    except TypeError as exc:  # orjson.JSONEncodeError: lone surrogates, keys that are not str
        raise ValueError(f"payload is not JSON: {exc}") from None
    # orjson writes NaN and infinities as null and NUL characters as \u0000, which jsonb
    # refuses: look closer only when the text could hold either (most payloads cannot).
    if b"null" in text or b"\\u0000" in text:
        problem = values.jsonb_problem(payload)
        if problem is not None:
            raise ValueError(f"payload: {problem}")
    return text.decode()


def _shown(value: object) -> str:
    return values.shown(value) if isinstance(value, str) else type(value).__name__


def _trace_context() -> str | None:
    found = tracing.carrier()
    return None if found is None else orjson.dumps(found).decode()


def _columns(jobs: Iterable[Job]) -> list[list[Any]]:
    """The nine column arrays of enqueue_many, every job checked (ValueError: which one)."""
    rows: list[Row] = []
    try:
        for job in jobs:
            if not isinstance(job, Job):
                raise ValueError("must be a worker.client.Job")
            rows.append(_checked(job))
    except ValueError as exc:
        raise ValueError(f"jobs[{len(rows)}]: {exc}") from None
    if not rows:
        return [[] for _ in range(9)]
    return [list(column) for column in zip(*rows, strict=True)]


# -- results --------------------------------------------------------------------------------


def _enqueued(row: Any) -> Enqueued:
    return Enqueued(job_id=int(row[0]), status=str(row[1]), duplicate=bool(row[2]))


def _ids(found: Any, keys: list[str | None], more: Any = None) -> tuple[list[int], list[str]]:
    """Each input job's id from enqueue_many's arrays (`more`: live_dedupe_ids's): jobs
    without a dedupe key take the new ids in order, keyed jobs the id of the job holding
    their key. Also the keys no job was found holding."""
    plain_ids: list[int] = list(found[0])
    if not found[1] and more is None:
        return plain_ids, []
    by_key = dict(zip(found[2], found[1], strict=True))
    if more is not None:
        by_key.update(zip(more[2], more[1], strict=True))
    plain = iter(plain_ids)
    ids: list[int] = []
    missing: list[str] = []
    for key in keys:
        if key is None:
            ids.append(next(plain))
        elif key in by_key:
            ids.append(by_key[key])
        else:
            ids.append(0)
            missing.append(key)
    return ids, missing


def _invisible_holder(key: str | None) -> errors.Conflict:
    return errors.Conflict(
        f"dedupe_key {_shown(key)} is held by a job this transaction cannot see yet"
        " (committed while it ran): enqueue again"
    )


# -- drivers --------------------------------------------------------------------------------


def _named(args: Sequence[Any]) -> dict[str, Any]:
    return {f"p{number}": value for number, value in enumerate(args, start=1)}


# The drivers are optional extras: imported only once the caller's own code has loaded them
# (a connection of theirs can exist only then), so an asyncpg caller never pays for them.


async def _fetch(conn: AsyncConnection, name: str, args: Sequence[Any]) -> Sequence[Any]:
    if isinstance(conn, asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool):
        return await conn.fetch(QUERIES[name], *args)
    if "psycopg" in sys.modules:
        import psycopg  # noqa: PLC0415 - optional, loaded by the caller
        from psycopg.rows import tuple_row  # noqa: PLC0415

        if isinstance(conn, psycopg.AsyncConnection):
            async with conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(_PSYCOPG_QUERIES[name], _named(args))
                return await cur.fetchall()
    raise TypeError(
        f"cannot enqueue on {type(conn).__name__}: pass an asyncpg Connection or Pool, or a"
        " psycopg AsyncConnection (enqueue_sync takes sync connections)"
    )


def _fetch_sync(conn: SyncConnection, name: str, args: Sequence[Any]) -> Sequence[Any]:
    driver = _sync_driver(conn)
    from psycopg.rows import tuple_row  # noqa: PLC0415 - optional, loaded by the caller

    with driver.cursor(row_factory=tuple_row) as cur:
        cur.execute(_PSYCOPG_QUERIES[name], _named(args))
        return cur.fetchall()


def _sync_driver(conn: SyncConnection) -> psycopg.Connection[Any]:
    """The psycopg connection under `conn`, inside the transaction SQLAlchemy tracks."""
    if "sqlalchemy" in sys.modules:
        from sqlalchemy import engine, orm  # noqa: PLC0415 - optional, loaded by the caller

        if isinstance(conn, orm.Session):
            conn = conn.connection()  # joins (or begins) the session's transaction
        if isinstance(conn, engine.Connection):
            if not conn.in_transaction():
                conn.begin()  # else the caller's commit() would not commit this insert
            driver = conn.connection.driver_connection
            if not _is_psycopg(driver):
                raise TypeError(
                    f"cannot enqueue through SQLAlchemy's {conn.dialect.driver} driver: use"
                    " psycopg (3), postgresql+psycopg://"
                )
            conn = driver
    if _is_psycopg(conn):
        return conn
    raise TypeError(
        f"cannot enqueue on {type(conn).__name__}: pass a psycopg Connection or a SQLAlchemy"
        " Connection or Session (enqueue takes asyncpg and async psycopg connections)"
    )


def _is_psycopg(conn: object) -> TypeGuard[psycopg.Connection[Any]]:
    if "psycopg" not in sys.modules:
        return False
    import psycopg  # noqa: PLC0415 - optional, loaded by the caller

    return isinstance(conn, psycopg.Connection)
