"""The worker's runtime: find the database, load handlers, and run what a command asks for.

- `run()`: the daemon (dispatcher, heartbeat, rescuer, pruner, scheduler, and the web
  application on WORKER_HTTP_PORT) until SIGTERM/SIGINT; or with `once`, one cron-style
  pass: due schedule ticks, rescue, prune, then drain the due jobs and stop.
- `serve()`: the web application alone (`python -m worker serve`).
- `migrate()`, `demo()`, `admin()` (the CLI's admin commands).

This module and cli.py are the top layer: they may use worker.web and worker.admin; the
engine modules below them never do.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc
import asyncpg
import structlog
import tenacity

from worker import (
    dispatcher,
    embedded,
    errors,
    executor,
    faults,
    maintenance,
    migrations,
    observability,
    observer,
    presence,
    redact,
    scheduler,
    store,
)
from worker.admin.store import AdminStore
from worker.clock import SystemClock
from worker.config import Settings
from worker.registry import REGISTRY, Registry

if TYPE_CHECKING:  # the web side is imported when the HTTP server starts (see _web)
    from worker.web.services import DrainRequest, Services

log = structlog.get_logger("worker.service")

_T = TypeVar("_T")

MIN_SERVER_VERSION = 140000
# Also refused logins, unknown databases and the like: all fatal at start.
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*store.CONNECTION_ERRORS, asyncpg.PostgresError)


@dataclass(frozen=True, slots=True)
class BundledApp:
    """One of the bundled apps (the `handlers` package's catalog, handlers.APPS)."""

    name: str
    modules: tuple[str, ...]
    schedules: Path | None


def bundled_apps(names: list[str], *, include_demo: bool = False) -> list[BundledApp]:
    """The bundled apps named in WORKER_APPS (`all`: every one a deployment may pick; with
    `include_demo`, the demo's too). The catalog is loaded by name: the worker itself never
    imports the handlers."""
    if not names and not include_demo:
        return []
    try:
        catalog: dict[str, Any] = importlib.import_module("handlers").APPS
    except (ImportError, AttributeError) as exc:
        raise errors.ConfigError(
            f"WORKER_APPS: the bundled apps are not installed: {exc}"
        ) from None
    deployable = [name for name in catalog if name != "demo"]
    chosen = list(catalog) if include_demo else (deployable if names == ["all"] else names)
    unknown = [
        name for name in chosen if name not in catalog or (name == "demo" and not include_demo)
    ]
    if unknown:
        raise errors.ConfigError(
            f"WORKER_APPS: unknown app(s) {unknown} (bundled: {', '.join(deployable)}, or all)"
        )
    return [
        BundledApp(app.name, tuple(app.modules), app.schedules)
        for app in (catalog[n] for n in chosen)
    ]


def load_handlers(settings: Settings, *, include_demo: bool = False) -> Registry:
    """Import the modules of the WORKER_APPS and of WORKER_HANDLER_MODULES; importing
    registers their handlers."""
    apps = bundled_apps(settings.apps, include_demo=include_demo)
    modules = [module for app in apps for module in app.modules]
    for module in dict.fromkeys([*modules, *settings.handler_modules]):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise errors.ConfigError(
                f"WORKER_HANDLER_MODULES: cannot import {module!r}: {exc}"
            ) from None
    return REGISTRY


def schedule_files(settings: Settings) -> list[Path]:
    """The WORKER_APPS' schedule files, then WORKER_SCHEDULES_FILE's."""
    found = [app.schedules for app in bundled_apps(settings.apps) if app.schedules is not None]
    return [*found, *(scheduler.resolve_file(path) for path in settings.schedules_file)]


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
        error=redact.describe(failure) if failure else None,
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
                    pooled=settings.pooler_mode,
                )
    except ValueError as exc:
        problem = observability.Scrubber.from_settings(settings).scrub_text(redact.describe(exc))
        raise errors.ConfigError(f"DATABASE_URL: cannot use it: {problem}") from None
    except _CONNECT_ERRORS as exc:
        raise errors.DatabaseUnavailable(
            f"DATABASE_URL: cannot connect: {redact.describe(exc)}"
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
        with anyio.CancelScope(shield=True):  # a stop during the start cancels the block
            await db.close()


@contextlib.asynccontextmanager
async def admin(settings: Settings) -> AsyncIterator[tuple[AdminStore, Registry]]:
    """For the CLI's admin commands: the control plane's store and this worker's handlers."""
    registry = load_handlers(settings)
    async with database(settings) as db:
        yield AdminStore(db.pool), registry


# -- the daemon and --once ---------------------------------------------------------------------


@dataclass
class OnceReport:
    """What a `--once` pass did besides draining (printed with the drain's summary)."""

    ticks: list[dict[str, Any]] = field(default_factory=list)
    rescued: int = 0
    pruned_jobs: int = 0
    pruned_runs: int = 0


async def run(
    settings: Settings,
    *,
    once: bool,
    max_jobs: int | None = None,
    task_types: list[str] | None = None,
    queues: list[str] | None = None,
    demo: bool = False,
    exiting: bool = False,
    received: Sequence[int] = (),
) -> tuple[dispatcher.Summary, OnceReport]:
    """Run until stopped (SIGTERM/SIGINT) or, with `once`, until no due job is left.

    `once` is a whole cron-runner pass (GitHub Actions, Railway cron): it fires the due
    schedule ticks (per their missed-tick policy), rescues expired leases, prunes, reports
    to Sentry, then drains; `max_jobs`, `task_types` and `queues` bound the drain.
    `exiting`: the process ends after this (the CLI), see _stoppable. `received`: stop
    signals that came before the event loop ran (worker/__main__.py keeps them), acted on
    as soon as it does; a stop before the first claim returns an empty summary.
    """
    try:
        return await _run(
            settings,
            once=once,
            max_jobs=max_jobs,
            task_types=task_types,
            queues=queues,
            demo=demo,
            exiting=exiting,
            received=received,
        )
    except BaseExceptionGroup as group:
        # A loop met a fatal database fault (task groups wrap what their tasks raise):
        # the one line it says is the process's last.
        fault = _database_fault(group)
        if fault is None:
            raise
        raise fault from None


def _database_fault(group: BaseExceptionGroup[BaseException]) -> errors.DatabaseFault | None:
    for exc in group.exceptions:
        if isinstance(exc, errors.DatabaseFault):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (found := _database_fault(exc)):
            return found
    return None


async def _run(
    settings: Settings,
    *,
    once: bool,
    max_jobs: int | None,
    task_types: list[str] | None,
    queues: list[str] | None,
    demo: bool,
    exiting: bool,
    received: Sequence[int],
) -> tuple[dispatcher.Summary, OnceReport]:
    registry = _restricted(load_handlers(settings, include_demo=demo), task_types)
    if queues:
        settings = settings.model_copy(update={"queues": queues})
    report = OnceReport()
    summary = dispatcher.Summary(keep_results=once)
    async with (
        _stoppable(exiting=exiting, received=received) as stop,
        database(settings) as db,
        observability.sentry(settings),
    ):
        telemetry = observability.Telemetry(settings)
        if settings.scheduler:
            await sync_schedule_file(db, settings, registry)
        worker = dispatcher.Dispatcher(
            db,
            registry,
            settings,
            once=once,
            keep_results=once,
            observer=telemetry,
            max_jobs=max_jobs,
        )
        rescuer = maintenance.Rescuer(db, settings, telemetry)
        async with contextlib.AsyncExitStack() as stack:
            if not once and settings.http_port is not None:
                # Up before the first claim, down after the last job: /health tells a
                # platform the truth all along, and requests in flight get to finish.
                services = web_services(settings, db, registry, telemetry)
                await stack.enter_async_context(_web(services, None, settings.http_port))
            tg = await stack.enter_async_context(anyio.create_task_group())
            if once:
                await _once_first(db, settings, rescuer, report)
            else:
                _start_loops(tg, db, settings, rescuer, telemetry)
            stop.graceful = worker.request_stop  # from here a stop lets jobs finish
            summary = await worker.run()
            tg.cancel_scope.cancel()
    return summary, report


def _restricted(registry: Registry, task_types: list[str] | None) -> Registry:
    """The registry, or only these of its task types (ConfigError for one it lacks)."""
    if not task_types:
        return registry
    missing = sorted(set(task_types) - set(registry.names()))
    if missing:
        known = ", ".join(registry.names()) or "none"
        raise errors.ConfigError(
            f"--task-type: no handler for {', '.join(missing)} (known: {known})"
        )
    chosen = Registry()
    for name in task_types:
        chosen.add(registry.get(name))
    return chosen


async def _once_first(
    db: store.Store, settings: Settings, rescuer: maintenance.Rescuer, report: OnceReport
) -> None:
    """What a cron-style deployment has no other loop for: due ticks, rescue, prune. A step
    that meets a database fault is logged (one line) and left to the next run; the drain
    still runs. A fatal fault raises DatabaseFault (exit 3)."""
    if settings.scheduler:
        passed = await _once_step("scheduler", scheduler.Scheduler(db, settings).run_once)
        if passed is not None:
            report.ticks = [
                {"schedule": name, "tick": tick.isoformat(), "job_id": job_id}
                for name, tick, job_id in passed.enqueued
            ]
    rescued = await _once_step("rescuer", rescuer.run_once)
    if rescued is not None:
        report.rescued = rescued.rescued + rescued.failed
    pruned = await _once_step("pruner", maintenance.Pruner(db, settings, SystemClock()).run_once)
    if pruned is not None:
        report.pruned_jobs, report.pruned_runs = pruned.jobs_deleted, pruned.runs_deleted


async def _once_step(loop: str, step: Callable[[], Awaitable[_T]]) -> _T | None:
    try:
        return await step()
    except Exception as exc:  # the next run does it again
        await faults.Episode(loop, log).failed(exc)
        return None


def _start_loops(
    tg: anyio.abc.TaskGroup,
    db: store.Store,
    settings: Settings,
    rescuer: maintenance.Rescuer,
    observer: observer.Observer,
) -> None:
    pruner = maintenance.Pruner(db, settings, SystemClock())
    tg.start_soon(
        maintenance.every,
        settings.rescue_interval_s,
        "rescuer",
        rescuer.run_once,
        observer.loop_alive,
        db.expire_sessions,
    )
    tg.start_soon(
        maintenance.every,
        settings.prune_interval_s,
        "pruner",
        pruner.run_once,
        observer.loop_alive,
        db.expire_sessions,
    )
    if settings.scheduler:
        cron = scheduler.Scheduler(db, settings)
        tg.start_soon(cron.run, observer.loop_alive)
    tg.start_soon(presence.Presence(db, settings, observer).run)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Stop:
    """Where SIGTERM and SIGINT go once the event loop has them. Until `graceful` is set
    (connecting, checking the schema, starting the web server: nothing claimed yet) a
    signal cancels `scope`, the start; from then on it calls `graceful` (the dispatcher's
    request_stop: a second signal hurries it)."""

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.graceful: Callable[[], None] | None = None

    def signal(self, signum: int) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        if self.graceful is None:
            self.scope.cancel()
        else:
            self.graceful()

    async def follow(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            self.signal(signum)


@contextlib.asynccontextmanager
async def _stoppable(*, exiting: bool, received: Sequence[int]) -> AsyncIterator[_Stop]:
    """The block under SIGTERM and SIGINT (a _Stop). Those that came before the event loop
    took them over (`received`, kept by worker/__main__.py while it imported) are acted on
    first. The process's handler until then only records a signal: raising from it would
    land wherever Python happened to be, such as inside an import that turns the exception
    into another one (a traceback and exit 1 instead of a quiet stop).

    Leaving the receiver gives the signals their default action, so a second signal during
    the rest of the stop (closing the HTTP server and the pools, the interpreter's own exit:
    a few hundred ms) killed the process by the signal (exit 143 or 130) after a clean
    shutdown. `exiting` (the process ends after this stop): they are ignored from then on,
    since the stop under way is what either asks for; otherwise the handlers in place before
    come back."""
    stop = _Stop()
    before = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
    try:
        with anyio.open_signal_receiver(*_STOP_SIGNALS) as signals:
            async with anyio.create_task_group() as tg:
                tg.start_soon(stop.follow, signals)
                for signum in list(received):  # after the receiver is in place: none missed
                    stop.signal(signum)
                with stop.scope:
                    yield stop
                tg.cancel_scope.cancel()
    finally:
        for signum, handler in before.items():
            if exiting:
                signal.signal(signum, signal.SIG_IGN)
            else:
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)


# -- the web application --------------------------------------------------------------------


def web_services(
    settings: Settings,
    db: store.Store,
    registry: Registry,
    telemetry: observability.Telemetry | None,
) -> Services:
    from worker.web.services import Services  # noqa: PLC0415 - see _web

    async def drain(request: DrainRequest) -> dispatcher.Summary:
        """POST /api/v1/drain: a `--once` drain in this process, bounded."""
        scoped = settings
        if request.queues:
            scoped = settings.model_copy(update={"queues": request.queues})
        runner = dispatcher.Dispatcher(
            db,
            _restricted(registry, request.task_types),
            scoped,
            once=True,
            keep_results=True,
            observer=telemetry,
            max_jobs=request.max_jobs,
            claim_for_s=request.max_seconds,
        )
        return await runner.run()

    return Services(
        settings=settings,
        db=db,
        admin=AdminStore(db.pool),
        registry=registry,
        drain=drain,
        telemetry=telemetry,
    )


def _web(
    services: Services, host: str | None, port: int
) -> contextlib.AbstractAsyncContextManager[int]:
    # Imported here: the web stack (FastAPI, Starlette, uvicorn, the templates) takes about
    # 0.3 s to import, which a worker without WORKER_HTTP_PORT need not pay at start.
    from worker.web import app as web  # noqa: PLC0415

    settings = services.settings
    return web.serving(
        web.create_app(services),
        host=host or settings.http_host,
        port=port,
        forwarded_allow_ips=settings.http_forwarded_allow_ips,
    )


async def serve(
    settings: Settings,
    *,
    host: str | None,
    port: int | None,
    exiting: bool = False,
    received: Sequence[int] = (),
) -> None:
    """The web application alone until SIGTERM/SIGINT: the API (its drain runs jobs here,
    for deployments without a daemon), the dashboard, /health and /metrics."""
    registry = load_handlers(settings)
    async with (
        _stoppable(exiting=exiting, received=received) as stop,
        database(settings) as db,
        observability.sentry(settings),
    ):
        services = web_services(settings, db, registry, None)
        bind_port = port if port is not None else (settings.http_port or 8080)
        async with _web(services, host, bind_port):
            stopped = anyio.Event()
            stop.graceful = stopped.set  # requests in flight get to finish
            await stopped.wait()


# -- migrations, schedules file, demo ---------------------------------------------------------


async def migrate(settings: Settings, *, reference: bool = False) -> list[store.Migration]:
    """Apply pending migrations; with `reference`, the handlers' reference tables too (after
    the core set)."""
    dsn, _ = resolve_dsn(settings)
    db = await _connect(settings, dsn, 2)
    try:
        return await migrations.migrate(db, "reference" if reference else "core")
    finally:
        await db.close()


async def sync_schedule_file(db: store.Store, settings: Settings, registry: Registry) -> None:
    """Sync the schedule files (the WORKER_APPS' and WORKER_SCHEDULES_FILE's) into
    job_schedules, all in one statement (the daemon and --once do this at start). A
    schedule whose task type no handler here serves is reported, not refused: another
    service may serve it. A payload its handler refuses stops the worker. With no file at
    all nothing is synced, and file schedules written earlier stay as they are."""
    files = schedule_files(settings)
    if not files:
        return
    specs: list[scheduler.ScheduleSpec] = []
    where: dict[str, Path] = {}
    for path in files:
        for spec in scheduler.load_file(path):
            if spec.name in where:
                raise errors.ConfigError(
                    f"WORKER_SCHEDULES_FILE: {path}: schedule '{spec.name}' is also declared "
                    f"in {where[spec.name]}"
                )
            where[spec.name] = path
            specs.append(spec)
    for spec in specs:
        path = where[spec.name]
        if spec.task_type in registry:
            try:
                executor.parse_payload(registry.get(spec.task_type), spec.payload)
            except errors.PermanentJobError as exc:
                raise errors.ConfigError(
                    f"WORKER_SCHEDULES_FILE: {path}: schedule '{spec.name}': {exc}"
                ) from None
        else:
            log.warning("schedule_task_unserved", schedule=spec.name, task_type=spec.task_type)
    rows, removed = await db.sync_file_schedules([spec.to_def("file") for spec in specs])
    log.info(
        "schedules_synced",
        files=[str(path) for path in files],
        schedules=len(rows),
        created=[row["name"] for row in rows if row["created"]],
        paused=[row["name"] for row in rows if not row["active"]],
        removed=removed,
    )


async def demo(settings: Settings, *, jobs: int) -> tuple[dispatcher.Summary, OnceReport]:
    """Enqueue a batch of demo jobs (echo, noop, one flaky that retries), then drain them.
    On the embedded database it also shows the business handlers on a little demo data."""
    registry = load_handlers(settings, include_demo=True)  # every bundled app, and the demo
    async with database(settings) as db:
        await db.enqueue_many(
            "echo", [{"message": f"hello from demo job {i + 1}"} for i in range(jobs)]
        )
        await db.enqueue_many("noop", [{} for _ in range(3)])
        await db.enqueue("flaky", {"fail_times": 1})
        if settings.database_url is None:  # embedded: never seed an app's own database
            await _demo_business_jobs(db, registry)
    return await run(settings.model_copy(update={"scheduler": False}), once=True, demo=True)


async def _demo_business_jobs(db: store.Store, registry: Registry) -> None:
    """Apply the reference tables, seed demo rows and enqueue a few business jobs. The
    seeding lives with the handlers (the engine knows nothing about orders): the demo loads
    it by name, as it loads handler modules."""
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
