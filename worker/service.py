"""The worker process: find the database, load handlers, run the dispatcher under signals."""

from __future__ import annotations

import contextlib
import importlib
import signal
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
import asyncpg
import structlog
import tenacity

from worker import (
    dispatcher,
    embedded,
    errors,
    executor,
    http,
    maintenance,
    migrations,
    observability,
    scheduler,
    store,
)
from worker.clock import SystemClock
from worker.config import Settings
from worker.dashboard import app as dashboard
from worker.registry import REGISTRY, Registry

log = structlog.get_logger("worker.service")

MIN_SERVER_VERSION = 140000
# Also refused logins, unknown databases and the like: all fatal at start.
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*store.CONNECTION_ERRORS, asyncpg.PostgresError)


def load_handlers(settings: Settings) -> Registry:
    """Import each module of WORKER_HANDLER_MODULES; importing registers its handlers."""
    for module in settings.handler_modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise errors.ConfigError(
                f"WORKER_HANDLER_MODULES: cannot import {module!r}: {exc}"
            ) from None
    return REGISTRY


def resolve_dsn(settings: Settings) -> tuple[str, bool]:
    """(dsn, embedded): DATABASE_URL, or the embedded server started on demand."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value(), False
    return embedded.start(settings.embedded_dir), True


def _log_unreachable(state: tenacity.RetryCallState) -> None:
    failure = state.outcome.exception() if state.outcome else None
    log.warning(
        "database_unreachable",
        attempt=state.attempt_number,
        error=executor.describe(failure) if failure else None,
    )


async def _connect(settings: Settings, dsn: str, pool_size: int) -> store.Store:
    """Connect, retrying with backoff while the server is starting or unreachable."""
    retrying = tenacity.AsyncRetrying(
        # A malformed URL (asyncpg raises ValueError, ClientConfigurationError among them,
        # though that is also an InterfaceError) is not retried: no wait will mend it.
        retry=tenacity.retry_if_exception_type(store.CONNECTION_ERRORS)
        & tenacity.retry_if_not_exception_type(ValueError),
        wait=tenacity.wait_exponential(multiplier=0.2, max=5),
        stop=tenacity.stop_after_delay(settings.connect_timeout_s),
        before_sleep=_log_unreachable,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await store.connect(
                    dsn,
                    min_size=1,
                    max_size=pool_size,
                    statement_cache_size=0 if settings.pooler_mode else 100,
                )
    except ValueError as exc:
        problem = observability.Scrubber.from_settings(settings).scrub_text(executor.describe(exc))
        raise errors.ConfigError(f"DATABASE_URL: cannot use it: {problem}") from None
    except _CONNECT_ERRORS as exc:
        raise errors.DatabaseUnavailable(
            f"DATABASE_URL: cannot connect: {executor.describe(exc)}"
        ) from None
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def database(
    settings: Settings, *, migrate: bool | None = None
) -> AsyncIterator[store.Store]:
    """A connected Store whose schema is up to date (or an error saying how to get there).

    `migrate`: None applies pending migrations only when WORKER_AUTO_MIGRATE is set or the
    database is the embedded one; False only checks.
    """
    dsn, is_embedded = resolve_dsn(settings)
    db = await _connect(settings, dsn, settings.pool_size)
    try:
        version_num, version = await db.server_version()
        if version_num < MIN_SERVER_VERSION:
            raise errors.ConfigError(f"DATABASE_URL: PostgreSQL {version} is too old (need 14+)")
        should_migrate = (settings.auto_migrate or is_embedded) if migrate is None else migrate
        if should_migrate:
            for applied in await migrations.migrate(db):
                log.info("migration_applied", version=applied.version, name=applied.name)
        elif pending := await migrations.pending(db):
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
            raise errors.MigrationError(
                f"database schema is not up to date (pending: {names}); "
                "run `python -m worker migrate` or set WORKER_AUTO_MIGRATE=true"
            )
        yield db
    finally:
        await db.close()


async def run(settings: Settings, *, once: bool) -> dispatcher.Summary:
    """Run until stopped (SIGTERM/SIGINT) or, with `once`, until no due job is left."""
    registry = load_handlers(settings)
    async with database(settings) as db, _observed(settings, db, once=once) as telemetry:
        if settings.scheduler and not once:
            await sync_schedule_file(db, settings, registry)
        worker = dispatcher.Dispatcher(
            db, registry, settings, once=once, keep_results=once, observer=telemetry
        )
        rescuer = maintenance.Rescuer(db, settings, telemetry)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_forward_signals, worker)
            if once:
                # A cron-style `--once` deployment has no other rescuer: free the jobs of
                # crashed runs first, so they are drained too.
                await rescuer.run_once()
            else:
                _start_maintenance(tg, db, settings, rescuer, worker.observer)
                if settings.scheduler:
                    cron = scheduler.Scheduler(db, settings)
                    tg.start_soon(cron.run, worker.observer.loop_alive)
            summary = await worker.run()
            tg.cancel_scope.cancel()
        return summary


def _observed(
    settings: Settings, db: store.Store, *, once: bool
) -> contextlib.AbstractAsyncContextManager[observability.Telemetry | None]:
    """Metrics, /health and Sentry belong to the daemon; a --once run prints its summary."""
    if once:
        return contextlib.nullcontext()
    mounts: dict[str, http.Handler] = {}
    if settings.dashboard_users is not None:
        mounts[dashboard.PREFIX] = dashboard.Dashboard(settings, db)
    return observability.running(settings, db, mounts=mounts)


def _start_maintenance(
    tg: anyio.abc.TaskGroup,
    db: store.Store,
    settings: Settings,
    rescuer: maintenance.Rescuer,
    observer: dispatcher.Observer,
) -> None:
    pruner = maintenance.Pruner(db, settings, SystemClock())
    tg.start_soon(
        maintenance.every,
        settings.rescue_interval_s,
        "rescuer",
        rescuer.run_once,
        observer.loop_alive,
    )
    tg.start_soon(
        maintenance.every, settings.prune_interval_s, "pruner", pruner.run_once, observer.loop_alive
    )


async def _forward_signals(worker: dispatcher.Dispatcher) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal_received", signal=signal.Signals(signum).name)
            worker.request_stop()


async def migrate(settings: Settings, *, reference: bool = False) -> list[store.Migration]:
    """Apply pending migrations; with `reference`, the handlers' reference tables too (after
    the core set)."""
    dsn, _ = resolve_dsn(settings)
    db = await _connect(settings, dsn, 2)
    try:
        return await migrations.migrate(db, "reference" if reference else "core")
    finally:
        await db.close()


async def status(settings: Settings) -> dict[str, Any]:
    registry = load_handlers(settings)
    async with database(settings) as db:
        report = await db.status()
        paused = await db.paused_queues()
    served = set(registry.names())
    return {
        "counts": [dict(row) for row in report.counts],
        "oldest_pending": [
            {"queue": row["queue"], "age_s": round(row["age_s"], 3), "due": row["due"]}
            for row in report.oldest_pending
        ],
        "unserved_task_types": [
            {"task_type": row["task_type"], "pending": row["jobs"]}
            for row in report.pending_task_types
            if row["task_type"] not in served
        ],
        "served_task_types": sorted(served),
        "paused_queues": [dict(row) for row in paused],
    }


async def enqueue(
    settings: Settings,
    task_type: str,
    payload: Any,
    *,
    force: bool = False,
    **options: Any,
) -> int | None:
    """Validate against the local handler (when there is one) and insert the job."""
    registry = load_handlers(settings)
    if task_type in registry:
        executor.parse_payload(registry.get(task_type), payload)
    elif not force:
        known = ", ".join(registry.names()) or "none"
        raise errors.UnknownTask(
            f"no handler for task type {task_type!r} in this worker (known: {known}); "
            "pass --force to enqueue a task another service handles"
        )
    async with database(settings) as db:
        return await db.enqueue(task_type, payload, **options)


async def demo(settings: Settings, *, jobs: int) -> dispatcher.Summary:
    """Enqueue a batch of demo jobs (echo, noop, one flaky that retries), then drain them.
    On the embedded database it also shows the business handlers on a little demo data."""
    registry = load_handlers(settings)
    missing = {"echo", "noop", "flaky"} - set(registry.names())
    if missing:
        raise errors.ConfigError(
            f"WORKER_HANDLER_MODULES: the demo needs the `handlers` module "
            f"(missing {sorted(missing)})"
        )
    async with database(settings) as db:
        await db.enqueue_many(
            "echo", [{"message": f"hello from demo job {i + 1}"} for i in range(jobs)]
        )
        await db.enqueue_many("noop", [{} for _ in range(3)])
        await db.enqueue("flaky", {"fail_times": 1})
        if settings.database_url is None:  # embedded: never seed an app's own database
            await _demo_business_jobs(db, registry)
    return await run(settings, once=True)


async def _demo_business_jobs(db: store.Store, registry: Registry) -> None:
    """Apply the reference tables, seed demo rows and enqueue a few business jobs (the
    seeding lives with the handlers: the engine knows nothing about orders)."""
    try:
        demo_data = importlib.import_module("handlers.demo_data")
    except ImportError:
        return
    if not {*demo_data.TASK_TYPES} <= set(registry.names()):
        return  # WORKER_HANDLER_MODULES left the business handlers out
    for applied in await migrations.migrate(db, "reference"):
        log.info("migration_applied", version=applied.version, name=applied.name)
    for task_type, payload in await demo_data.prepare(db.pool):
        await db.enqueue(task_type, payload)


async def set_paused(settings: Settings, queue: str, paused: bool, reason: str | None) -> bool:
    """Pause or resume a queue for every worker; returns whether anything changed."""
    async with database(settings) as db:
        if paused:
            return await db.pause_queue(queue, reason)
        return await db.resume_queue(queue)


# -- one job, from the command line --------------------------------------------------------


async def show_job(settings: Settings, job_id: int, *, runs: int) -> dict[str, Any] | None:
    """A job and its latest `runs` attempts (job_runs, newest first); None if there is none."""
    async with database(settings) as db, db.admin_reads(statement_timeout_s=10.0) as reads:
        job = await reads.job(job_id)
        if job is None:
            return None
        attempts = await reads.job_runs(job_id, runs)
    return {"job": dict(job), "runs": [dict(run) for run in attempts]}


async def change_job(
    settings: Settings, job_id: int, action: Literal["retry", "cancel"], actor: str
) -> tuple[store.Record | None, str | None]:
    """Retry or cancel one job through the dashboard's guarded, audited path. Returns the
    changed row, else None and the job's status (None: no such job)."""
    who = store.Actor(actor, None)
    async with database(settings) as db:
        if action == "retry":
            row = await db.admin_retry_job(who, job_id)
        else:
            row = await db.admin_cancel_job(who, job_id)
        if row is not None:
            return row, None
        async with db.admin_reads(statement_timeout_s=10.0) as reads:
            job = await reads.job(job_id)
    return None, None if job is None else str(job["status"])


# -- schedules ---------------------------------------------------------------------------


async def sync_schedule_file(db: store.Store, settings: Settings, registry: Registry) -> None:
    """Sync WORKER_SCHEDULES_FILE into job_schedules (the daemon does this at start). A
    schedule whose task type no handler here serves is reported, not refused: another
    service may serve it. A payload its handler refuses stops the worker."""
    if settings.schedules_file is None:
        return
    path = scheduler.resolve_file(settings.schedules_file)
    specs = scheduler.load_file(path)
    for spec in specs:
        try:
            _check_schedule_handler(registry, spec.task_type, spec.payload, force=True)
        except errors.ScheduleError as exc:
            raise errors.ConfigError(
                f"WORKER_SCHEDULES_FILE: {path}: schedule '{spec.name}': {exc}"
            ) from None
        if spec.task_type not in registry:
            log.warning("schedule_task_unserved", schedule=spec.name, task_type=spec.task_type)
    rows, removed = await db.sync_file_schedules([spec.to_def("file") for spec in specs])
    log.info(
        "schedules_synced",
        file=str(path),
        schedules=len(rows),
        created=[row["name"] for row in rows if row["created"]],
        paused=[row["name"] for row in rows if not row["active"]],
        removed=removed,
    )


def _check_schedule_handler(
    registry: Registry, task_type: str, payload: Any, *, force: bool
) -> None:
    """The payload must fit the local handler's model; a task type with no local handler
    needs `force` (it may be served by another service)."""
    if task_type in registry:
        try:
            executor.parse_payload(registry.get(task_type), payload)
        except errors.PermanentJobError as exc:
            raise errors.ScheduleError(str(exc)) from None
    elif not force:
        known = ", ".join(registry.names()) or "none"
        raise errors.ScheduleError(
            f"no handler for task type '{task_type}' in this worker (known: {known}); "
            "pass --force to schedule a task another service handles"
        )


def _schedule_dict(row: store.Record, registry: Registry) -> dict[str, Any]:
    return {**dict(row), "served_here": row["task_type"] in registry}


async def list_schedules(settings: Settings) -> list[dict[str, Any]]:
    """Every schedule with its next run and last result (job_schedules_list())."""
    registry = load_handlers(settings)
    async with database(settings) as db:
        rows = await db.list_schedules()
    return [_schedule_dict(row, registry) for row in rows]


async def add_schedule(
    settings: Settings, name: str, *, force: bool = False, **fields: Any
) -> dict[str, Any]:
    """Create a schedule (source 'admin') from ScheduleSpec's fields; ScheduleError if it
    is invalid or the name is taken."""
    spec = scheduler.spec(name=name, **fields)
    registry = load_handlers(settings)
    _check_schedule_handler(registry, spec.task_type, spec.payload, force=force)
    async with database(settings) as db:
        row = await db.create_schedule(spec.to_def("admin"))
    return _schedule_dict(row, registry)


async def update_schedule(
    settings: Settings, name: str, changes: dict[str, Any], *, force: bool = False
) -> dict[str, Any]:
    """Change some fields of a schedule (a new cron or timezone re-times it from now)."""
    problem = scheduler.schedule_problem(changes)
    if problem is not None:
        raise errors.ScheduleError(problem)
    registry = load_handlers(settings)
    async with database(settings) as db:
        if "task_type" in changes or "payload" in changes:
            current = await _schedule_row(db, name)
            _check_schedule_handler(
                registry,
                changes.get("task_type", current["task_type"]),
                changes.get("payload", current["payload"]),
                force=force,
            )
        row = await db.update_schedule(name, **changes)
    return _schedule_dict(row, registry)


async def _schedule_row(db: store.Store, name: str) -> store.Record:
    for row in await db.list_schedules():
        if row["name"] == name:
            return row
    raise errors.ScheduleError(f"no schedule named '{name}'")


async def set_schedule_active(settings: Settings, name: str, active: bool) -> dict[str, Any]:
    """Pause or resume a schedule; a resumed one does not run the ticks it missed."""
    registry = load_handlers(settings)
    async with database(settings) as db:
        row = await db.toggle_schedule(name, active)
    return _schedule_dict(row, registry)


async def remove_schedule(settings: Settings, name: str) -> None:
    """Delete a schedule (its jobs and history stay); ScheduleError if there is none."""
    async with database(settings) as db:
        if not await db.delete_schedule(name):
            raise errors.ScheduleError(f"no schedule named '{name}'")


async def schedule_history(settings: Settings, name: str, limit: int) -> list[dict[str, Any]]:
    """The newest job_runs rows of a schedule's jobs, newest first."""
    async with database(settings) as db:
        return [dict(row) for row in await db.schedule_history(name, limit)]


# -- dashboard ----------------------------------------------------------------------------


async def serve_dashboard(settings: Settings, *, host: str, port: int) -> None:
    """Serve the dashboard (and /health) alone until SIGTERM/SIGINT; no job runs here."""
    if settings.dashboard_users is None:
        raise errors.ConfigError(
            "WORKER_DASHBOARD_USERS: not set; the dashboard needs at least one name:password "
            "login (passwords of 12+ characters)"
        )
    async with database(settings) as db:
        router = http.Router()
        router.get("/health", dashboard.health(db))
        router.mount(dashboard.PREFIX, dashboard.Dashboard(settings, db))
        server = http.HttpServer(router, host=host, port=port)
        try:
            await server.start()
        except OSError as exc:
            raise errors.ConfigError(
                f"--port: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        log.info("dashboard_listening", host=host, port=server.port, path="/dashboard/")
        try:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("signal_received", signal=signal.Signals(signum).name)
                    break
        finally:
            await server.close()
