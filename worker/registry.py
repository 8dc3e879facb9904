"""Handlers: plain async functions registered under explicit, stable task-type names.

    class EchoPayload(pydantic.BaseModel):
        message: str

    @handler("echo", payload=EchoPayload, max_attempts=3, timeout_s=10)
    async def echo(ctx: JobContext, payload: EchoPayload) -> JobResult:
        return JobResult(notes=[payload.message])

The name is what producers write into `job_queue.task_type`: write it out, never derive it.
Registering a name twice fails at import.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack, cast
from uuid import UUID

import pydantic

from worker import client, errors, names, redact, store, values

if TYPE_CHECKING:
    import asyncpg
    import structlog

    from worker.client import AsyncConnection, SyncConnection


P = TypeVar("P", bound=pydantic.BaseModel)
R = TypeVar("R", bound="Awaitable[JobResult] | JobResult")


@dataclass(frozen=True, slots=True)
class JobResult:
    """What a handler reports: `rows_affected` and `notes` go to job_runs, `data` to
    job_queue.result."""

    rows_affected: int = 0
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ParentResult:
    """One parent of the running job, as `ctx.parent_results()` reads it now: `status` is
    succeeded for every parent of a job that waited on them, and may be failed or
    cancelled for a job enqueued with on_parent_failure='run' (a group's finalizer)."""

    id: int
    task_type: str
    status: str
    result: Any


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job to enqueue in a group (`ctx.enqueue_group`); None: the queue's default."""

    task_type: str
    payload: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    dedupe_key: str | None = None
    concurrency_key: str | None = None
    depends_on: tuple[int, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The shape job_queue_enqueue_group reads (fields left at None are left out)."""
        spec: dict[str, Any] = {"task_type": self.task_type, "payload": self.payload}
        for name in ("queue", "priority", "max_attempts", "dedupe_key", "concurrency_key"):
            value = getattr(self, name)
            if value is not None:
                spec[name] = value
        if self.run_at is not None:
            spec["run_at"] = self.run_at.isoformat()
        if self.depends_on:
            spec["depends_on"] = list(self.depends_on)
        return spec


@dataclass(frozen=True, slots=True)
class Group:
    """What `enqueue_group` wrote: the children's ids in order, and the finalizer's."""

    children: list[int]
    finalizer: int


async def enqueue_group(
    conn: asyncpg.Pool | asyncpg.Connection, children: list[JobSpec], finalizer: JobSpec
) -> Group:
    """Enqueue `children` and a `finalizer` that runs once after all of them are final
    (succeeded, failed for good or cancelled), atomically, on `conn` (a pool or a
    connection, inside the caller's transaction if it has one). The finalizer reads each
    child's outcome with `ctx.parent_results()`."""
    ids = await store.enqueue_group(
        conn, [child.as_json() for child in children], finalizer.as_json()
    )
    return Group(ids[:-1], ids[-1])


@dataclass(frozen=True, slots=True)
class JobContext:
    """Everything a handler may know about the attempt it is running.

    `pool` is the worker's asyncpg pool, for handlers that work on the same database;
    `log` is a structlog logger already bound to job_id, task_type and attempt. The
    worker's settings are not here: they hold its database URL and dashboard passwords,
    which no handler needs (a handler module reads its own settings, as handlers/ does).
    """

    job_id: int
    task_type: str
    queue: str
    attempt: int
    max_attempts: int
    run_type: str
    schedule_name: str | None
    requested_by: UUID | None
    created_at: datetime
    worker_id: str
    pool: asyncpg.Pool
    logger: structlog.typing.FilteringBoundLogger

    @property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        """The worker's logger bound to job_id, task_type and attempt (bound on use: most
        jobs never log, and binding for each of them showed up in the drain profile)."""
        return self.logger.bind(job_id=self.job_id, task_type=self.task_type, attempt=self.attempt)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    async def enqueue(
        self,
        task_type: str,
        payload: Mapping[str, Any] | pydantic.BaseModel,
        **options: Unpack[client.EnqueueOptions],
    ) -> client.Enqueued:
        """Enqueue a follow-up job through the worker's pool (worker.client.enqueue's
        options). It is committed at once: it stays whatever becomes of this attempt, so
        give it a dedupe_key when a retried attempt must not enqueue it twice."""
        return await client.enqueue(self.pool, task_type, payload, **options)

    async def parent_results(self) -> list[ParentResult]:
        """The jobs this one was enqueued to depend on (depends_on, or the children of its
        group for a finalizer): id, task_type, status and result, in id order."""
        rows = await store.parent_results(self.pool, self.job_id)
        return [ParentResult(r["id"], r["task_type"], r["status"], r["result"]) for r in rows]

    async def enqueue_group(self, children: list[JobSpec], finalizer: JobSpec) -> Group:
        """Fan out from a handler: `children`, then `finalizer` once they are all final
        (see the module function `enqueue_group`). Committed at once, whatever this attempt
        does next: give the jobs dedupe keys if a retry must not enqueue them twice."""
        return await enqueue_group(self.pool, children, finalizer)


HandlerFunc = Callable[[JobContext, Any], Awaitable[JobResult]]
SyncHandlerFunc = Callable[[JobContext, Any], JobResult]


@dataclass(frozen=True, slots=True)
class Limits:
    """Flow control of one task type, enforced in the claim on every worker at once:

    - `concurrency`: at most this many of its jobs run at once, fleet-wide;
    - `key_concurrency`: at most this many run at once per key (a coach, a user...), the key
      being the job's `concurrency_key` (set at enqueue), else its payload field
      `concurrency_key_field`;
    - `rate`: at most `rate_count` jobs start in any `rate_window_s` seconds.

    A job held back stays pending, no attempt spent."""

    concurrency: int | None = None
    key_concurrency: int | None = None
    concurrency_key_field: str | None = None
    rate_count: int | None = None
    rate_window_s: float | None = None

    @property
    def any(self) -> bool:
        return any(
            value is not None for value in (self.concurrency, self.key_concurrency, self.rate_count)
        )


NO_LIMITS = Limits()

_RATE = re.compile(r"^\s*(\d{1,9})\s*/\s*(\d{0,6})\s*(s|sec|second|m|min|minute|h|hour)s?\s*$")
_UNIT_S = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def parse_rate(rate: str) -> tuple[int, float]:
    """`"100/m"` -> (100, 60.0): count per window. Also `"5/s"`, `"1000/h"`, `"10/30s"`."""
    match = _RATE.match(rate)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"rate {rate!r}: write count/window, such as 100/m, 5/s or 10/30s")
    window_s = int(match.group(2) or 1) * _UNIT_S[match.group(3)]
    if not 1 <= window_s <= 86_400:
        raise ValueError(f"rate {rate!r}: the window must be 1 s to 1 day")
    return int(match.group(1)), float(window_s)


def limits(
    *,
    concurrency: int | None = None,
    concurrency_key: str | None = None,
    key_concurrency: int | None = None,
    rate: str | None = None,
) -> Limits:
    """Checked Limits from @handler's arguments (ValueError naming the problem)."""
    for name, value in (("concurrency", concurrency), ("key_concurrency", key_concurrency)):
        if value is not None and not 1 <= value <= 100_000:
            raise ValueError(f"{name} must be between 1 and 100000")
    if concurrency_key is not None and not _FIELD.match(concurrency_key):
        raise ValueError(f"concurrency_key {concurrency_key!r} is not a payload field name")
    if concurrency_key is not None and key_concurrency is None:
        key_concurrency = 1
    count, window_s = parse_rate(rate) if rate is not None else (None, None)
    return Limits(concurrency, key_concurrency, concurrency_key, count, window_s)


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler: the function, its payload model and its limits.

    `sync`: a plain `def`, run in the worker's thread pool (WORKER_SYNC_THREADS) instead of
    on the event loop; decided once here, not per job."""

    name: str
    func: HandlerFunc | SyncHandlerFunc
    payload: type[pydantic.BaseModel]
    max_attempts: int = 5
    timeout_s: float | None = None
    limits: Limits = NO_LIMITS
    sync: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sync", not inspect.iscoroutinefunction(self.func))


class Task(Generic[P, R]):
    """What `@handler` returns: the handler function, called exactly as before, that also
    enqueues jobs for itself with the payload checked against its model first:

        await send_welcome_mail.enqueue(conn, WelcomeMail(user_id=1))
        await send_welcome_mail.enqueue(conn, {"user_id": 1}, dedupe_key="welcome:1")

    A payload the model refuses raises pydantic.ValidationError (a ValueError) before
    anything is written. `max_attempts` defaults to the handler's."""

    def __init__(self, spec: Handler, func: Callable[[JobContext, P], R]) -> None:
        functools.update_wrapper(self, func)
        self.handler = spec
        self._func = func

    def __call__(self, ctx: JobContext, payload: P) -> R:
        return self._func(ctx, payload)

    def job(self, payload: P | Mapping[str, Any], **options: Unpack[client.Options]) -> client.Job:
        """A checked job for worker.client.enqueue_many."""
        options.setdefault("max_attempts", self.handler.max_attempts)
        return client.Job(self.handler.name, self._payload(payload), **options)

    async def enqueue(
        self,
        conn: AsyncConnection,
        payload: P | Mapping[str, Any],
        **options: Unpack[client.EnqueueOptions],
    ) -> client.Enqueued:
        """worker.client.enqueue of this task type, the payload checked first."""
        options.setdefault("max_attempts", self.handler.max_attempts)
        return await client.enqueue(conn, self.handler.name, self._payload(payload), **options)

    def enqueue_sync(
        self,
        conn: SyncConnection,
        payload: P | Mapping[str, Any],
        **options: Unpack[client.EnqueueOptions],
    ) -> client.Enqueued:
        """worker.client.enqueue_sync of this task type, the payload checked first."""
        options.setdefault("max_attempts", self.handler.max_attempts)
        return client.enqueue_sync(conn, self.handler.name, self._payload(payload), **options)

    def _payload(self, payload: P | Mapping[str, Any]) -> dict[str, Any]:
        model = self.handler.payload
        checked = payload if isinstance(payload, model) else model.model_validate(payload)
        return checked.model_dump(mode="json", by_alias=True)


class Registry:
    """Task type -> Handler. The worker claims only the task types registered here."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def add(self, handler: Handler) -> None:
        if not names.is_task_type(handler.name):
            raise ValueError(
                f"invalid task type {values.shown(handler.name)!r}: use {names.TASK_TYPE_RULE}"
            )
        if handler.max_attempts < 1:
            raise ValueError(f"{handler.name}: max_attempts must be >= 1")
        if handler.timeout_s is not None and handler.timeout_s <= 0:
            raise ValueError(f"{handler.name}: timeout_s must be > 0")
        if handler.name in self._handlers:
            raise errors.DuplicateHandler(f"task type {handler.name!r} is already registered")
        self._handlers[handler.name] = handler

    def get(self, task_type: str) -> Handler:
        try:
            return self._handlers[task_type]
        except KeyError:
            raise errors.UnknownTask(f"no handler registered for task type {task_type!r}") from None

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._handlers

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._handlers[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._handlers)


REGISTRY = Registry()
"""The process-wide registry that `@handler` adds to."""


def handler(
    name: str,
    *,
    payload: type[P],
    max_attempts: int = 5,
    timeout_s: float | None = None,
    concurrency: int | None = None,
    concurrency_key: str | None = None,
    key_concurrency: int | None = None,
    rate: str | None = None,
    registry: Registry | None = None,
) -> Callable[[Callable[[JobContext, P], R]], Task[P, R]]:
    """Register a handler under the task type `name`: an `async def`, or a plain `def`
    (for sync clients such as supabase-py), which runs in a thread of the worker's bounded
    pool (WORKER_SYNC_THREADS) and takes a slot like any job. A thread cannot be killed: on
    timeout the attempt ends as `timeout` and whatever the thread returns later is
    discarded, so a sync handler should bound its own I/O (a client timeout shorter than
    `timeout_s`). Returns the function as a `Task`: still called as before, and with
    `.enqueue(conn, payload)` for its own jobs.

    `payload` validates the job's JSON payload before the handler runs (an invalid payload
    fails the job at once); `max_attempts` applies to jobs that do not set their own;
    `timeout_s` (default: WORKER_DEFAULT_TIMEOUT_S) bounds each attempt.

    Flow control, fleet-wide (see Limits): `concurrency` jobs at once; `key_concurrency` at
    once per key, the key being a job's concurrency_key or its payload field
    `concurrency_key` (naming the field alone means one at a time per key); `rate` such as
    "100/m", "5/s" or "10/30s".
    """
    checked = limits(
        concurrency=concurrency,
        concurrency_key=concurrency_key,
        key_concurrency=key_concurrency,
        rate=rate,
    )

    def register(func: Callable[[JobContext, P], R]) -> Task[P, R]:
        target = REGISTRY if registry is None else registry
        spec = Handler(
            name,
            cast("HandlerFunc | SyncHandlerFunc", func),
            payload,
            max_attempts,
            timeout_s,
            checked,
        )
        target.add(spec)
        return Task(spec, func)

    return register


def register_secret(value: str) -> None:
    """Never write `value` anywhere: the worker replaces it with [Filtered] in log lines,
    Sentry events and the error text of failed jobs (last_error, job_runs.error).

    For secrets a handler module loads itself (an API token, a webhook secret): register
    them when loading, before any job can fail with one in its message. Patterns catch
    credentials in URLs and `token=`-style text anyway; registering catches the rest.
    """
    redact.register([value])


def register_secrets_of(settings: pydantic.BaseModel) -> None:
    """register_secret for the value of every SecretStr field of a settings model (nested
    models, dicts and lists too)."""
    redact.register(redact.secret_values(settings))
