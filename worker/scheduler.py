"""Cron schedules -> job rows: each tick of each active schedule is enqueued exactly once.

Pure part (no database; time is passed in): `cron_error`, `timezone_error`,
`schedule_problem` (the same checks, word for word, as the SQL functions of
schema/0002_schedules.sql), `next_tick`, `prev_tick`, `due_ticks` and `plan`.
Database part: `Scheduler.run_once(now)` and its thin loop `Scheduler.run()`, and
`load_file()` for schedule files (the bundled apps' handlers/schedules/*.toml, yours).

Exactly once: a pass enqueues a schedule's ticks in ONE statement that also moves
`job_schedules.last_tick_at` forward with a compare-and-set on the value it read (and on
the schedule's `revision`). `last_tick_at` never moves backwards, so only one transaction
can ever cross a given tick, whichever replica runs it and however late it sees the tick;
a replica that loses the race changes nothing. The dedupe key `schedule:<name>:<tick>` on
the job row is a second guard.

DST rule (ticks are wall-clock times in the schedule's timezone):
- a wall-clock time that does not exist (clocks go forward) runs at the first instant
  after the gap; several such times collapse into that one run;
- a wall-clock time that happens twice (clocks go back) runs once, at its first
  occurrence, except for schedules whose hour field is `*` (`*/5 * * * *`, `@hourly`):
  they follow elapsed time and also tick during the repeated hour.
"""

from __future__ import annotations

import functools
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import pydantic
import structlog

from worker import errors, faults, names, store, values
from worker.clock import Clock, SystemClock
from worker.config import Settings

if TYPE_CHECKING:  # imported where a cron expression is first read: ~60 ms of a start
    from croniter import croniter

log = structlog.get_logger("worker.scheduler")

Policy = Literal["latest", "skip", "all"]
POLICIES: tuple[Policy, ...] = ("latest", "skip", "all")

# -- validation (mirrored in SQL by job_schedule_cron_error / _timezone_error / _problem) --

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_LOWS = (0, 0, 1, 1, 0)
_HIGHS = (59, 23, 31, 12, 7)  # day-of-week 7 is Sunday again
_SIZES = (60, 24, 31, 12, 7)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ITEM = re.compile(r"(\*|([a-z0-9]{1,9})(-([a-z0-9]{1,9}))?)(/([0-9]{1,9}))?")
_CRON_CHARS = frozenset(" \t0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ*,/@-")
_MAX_CRON_CHARS = 200

_TZ_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*")
# POSIX TZ strings (`UTC+3`, `EST5`) are not zones; these few real zone names have digits.
_TZ_WITH_DIGITS = frozenset({"EST5EDT", "CST6CDT", "MST7MDT", "PST8PDT", "GMT0", "GMT+0", "GMT-0"})
_TZ_NOT_ZONES = frozenset({"posix", "right", "localtime", "posixrules"})


def cron_error(expr: object) -> str | None:
    """Why `expr` is not a cron expression schedules accept, or None if it is.

    Accepted: 5 fields (minute hour day-of-month month day-of-week) of `*`, numbers, names
    (jan-dec, sun-sat), ranges `a-b`, steps `/n` and lists `a,b`; or one of the aliases
    @yearly @annually @monthly @weekly @daily @midnight @hourly.
    """
    if not isinstance(expr, str):
        return "a cron expression is required"
    if len(expr) > _MAX_CRON_CHARS:
        return f"longer than {_MAX_CRON_CHARS} characters"
    bad = next((c for c in expr if c not in _CRON_CHARS), None)
    if bad is not None:
        return f"unexpected character '{bad}'"
    text = expr.strip(" \t").lower()
    if text.startswith("@"):
        if text in ALIASES:
            return None
        return f"unknown alias '{text}': use {', '.join(list(ALIASES)[:-1])} or @hourly"
    fields = text.split()
    if len(fields) != len(_FIELDS):
        return f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
    values: list[set[int]] = []
    for index, text_field in enumerate(fields):
        matched: set[int] = set()
        for item in text_field.split(","):
            problem = _item_problem(index, item, matched)
            if problem is not None:
                return problem
        values.append(matched)
    if fields[4] == "*" and fields[2] != "*":
        first_day = min(values[2])
        if first_day > max(_MONTH_DAYS[month - 1] for month in values[3]):
            return (
                f"day-of-month {first_day} never occurs in the months listed, so it would never run"
            )
    return _croniter_problem(text)


def _item_problem(index: int, item: str, matched: set[int]) -> str | None:
    """Check one list item of field `index`; add the values it matches to `matched`."""
    name = _FIELDS[index]
    match = _ITEM.fullmatch(item)
    if match is None:
        return f"{name} field: cannot read '{item}'"
    first, last, step_text = match.group(2), match.group(4), match.group(6)
    if match.group(1) == "*":
        low, high = _LOWS[index], 6 if index == 4 else _HIGHS[index]
    else:
        bounds: list[int] = []
        for token in (first, last) if last is not None else (first,):
            value = _value(index, token)
            if value is None:
                return f"{name} field: '{token}' is not a valid value"
            if not _LOWS[index] <= value <= _HIGHS[index]:
                return f"{name} value {value} is out of range {_LOWS[index]}-{_HIGHS[index]}"
            bounds.append(value)
        low = bounds[0]
        high = bounds[-1] if last is not None or step_text is None else _HIGHS[index]
        if low > high:
            return f"{name} range {first}-{last} runs backwards"
    step = 1
    if step_text is not None:
        step = int(step_text)
        if not 1 <= step <= _SIZES[index]:
            return f"{name} step {step} must be between 1 and {_SIZES[index]}"
    matched.update(range(low, high + 1, step))
    return None


def _value(index: int, token: str) -> int | None:
    if token.isdigit():
        return int(token)
    names = {3: _MONTHS, 4: _WEEKDAYS}.get(index, ())
    if token not in names:
        return None
    return names.index(token) + (1 if index == 3 else 0)


def _croniter_problem(text: str) -> str | None:
    """The grammar above is stricter than croniter's; this only guards against the two
    disagreeing (and so never shows when they agree)."""
    from croniter import croniter  # noqa: PLC0415 - see the imports

    try:
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except Exception as exc:  # croniter raises several unrelated types
        return f"not understood by croniter: {exc}"
    return None


def timezone_error(tz: object) -> str | None:
    """Why `tz` is not an IANA timezone name (such as UTC or Europe/London), or None."""
    if not isinstance(tz, str) or not tz:
        return "a timezone is required"
    unknown = f"unknown timezone '{values.cut(tz)}': use an IANA name such as UTC or Europe/London"
    head = tz.split("/")[0]
    if (
        not _TZ_SHAPE.fullmatch(tz)
        or (re.search(r"[0-9+]", head) is not None and head not in _TZ_WITH_DIGITS)
        or head.lower() in _TZ_NOT_ZONES
    ):
        return unknown
    if tz not in _zone_names():
        canonical = {name.lower(): name for name in _zone_names()}.get(tz.lower())
        return (
            f"unknown timezone '{values.cut(tz)}': did you mean '{canonical}'?"
            if canonical
            else unknown
        )
    return None


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def schedule_problem(fields: Mapping[str, Any]) -> str | None:
    """The first problem with the schedule fields given (any subset of name, cron, timezone,
    task_type, payload, queue, priority, max_attempts, missed), or None."""
    checks: tuple[tuple[str, Callable[[Any], str | None]], ...] = (
        ("name", _name_problem),
        ("cron", _cron_problem),
        ("timezone", timezone_error),
        ("task_type", _task_type_problem),
        ("payload", _payload_problem),
        ("queue", _queue_problem),
        ("priority", _priority_problem),
        ("max_attempts", _max_attempts_problem),
        ("missed", _missed_problem),
    )
    for key, check in checks:
        if key in fields:
            problem = check(fields[key])
            if problem is not None:
                return problem
    return None


def _name_problem(value: Any) -> str | None:
    if value is None:
        return "a schedule name is required"
    if isinstance(value, str) and names.is_schedule(value):
        return None
    return f"invalid schedule name '{values.cut(str(value))}': use {names.SCHEDULE_RULE}"


def _cron_problem(value: Any) -> str | None:
    problem = cron_error(value)
    if problem is None or value is None:
        return problem
    return f"invalid cron expression '{values.cut(str(value))}': {problem}"


def _task_type_problem(value: Any) -> str | None:
    if value is None:
        return "a task type is required"
    if isinstance(value, str) and names.is_task_type(value):
        return None
    return f"invalid task type '{values.cut(str(value))}': use {names.TASK_TYPE_RULE}"


def _payload_problem(value: Any) -> str | None:
    return None if isinstance(value, dict) else "payload must be a JSON object"


def _queue_problem(value: Any) -> str | None:
    if value is None:
        return "a queue is required"
    if isinstance(value, str) and names.is_queue(value):
        return None
    return f"invalid queue name '{values.cut(str(value))}': use {names.QUEUE_RULE}"


def _priority_problem(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and -1000 <= value <= 1000
    return None if ok else "priority must be between -1000 and 1000"


def _max_attempts_problem(value: Any) -> str | None:
    ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
    if ok and (value is None or 1 <= value <= 1000):
        return None
    return "max_attempts must be between 1 and 1000"


def _missed_problem(value: Any) -> str | None:
    if value in POLICIES:
        return None
    return f"invalid missed-tick policy '{values.cut(str(value))}': use latest, skip or all"


# -- tick math ----------------------------------------------------------------------------

_STEP_LIMIT = 100_000  # croniter steps in one search; real expressions need a handful
_LOOKAROUND_H = 26  # offsets sampled this many hours around a time, to see DST folds
_EPSILON = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class _Cron:
    every_hour: bool
    # Iterates wall-clock (naive) times. One per expression, reset with set_current, since
    # building a croniter costs ~5x a step; fine on the event loop, not thread-safe.
    walls: croniter


@functools.lru_cache(maxsize=512)
def _compile(expr: str) -> _Cron:
    problem = _cron_problem(expr)
    if problem is not None:
        raise errors.ScheduleError(problem)
    from croniter import croniter  # noqa: PLC0415 - see the imports

    text = expr.strip(" \t").lower()
    walls = croniter(ALIASES.get(text, text), datetime(2000, 1, 1))
    return _Cron(walls.expanded[1] == ["*"], walls)


@functools.lru_cache(maxsize=256)
def _zone(tz: str) -> zoneinfo.ZoneInfo:
    problem = timezone_error(tz)
    if problem is not None:
        raise errors.ScheduleError(problem)
    return zoneinfo.ZoneInfo(tz)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} is naive: pass a timezone-aware datetime")
    return moment.astimezone(UTC)


def _wall(moment: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _offset(moment: datetime, zone: zoneinfo.ZoneInfo) -> timedelta:
    offset = moment.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def _instants(wall: datetime, zone: zoneinfo.ZoneInfo) -> tuple[datetime, datetime]:
    """(first, last) instant that shows wall-clock time `wall`. Both are the same instant
    for an ordinary time, and for a time skipped by a DST gap: the end of the gap."""
    early = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0
    late = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if early <= late:  # ordinary, or repeated (fold=0 is the first occurrence)
        return early, late
    # In a gap, PEP 495 maps fold=0 with the offset from before the gap (the later
    # instant) and fold=1 with the one after it: the transition lies in between.
    transition = _transition(late, early, zone)
    return transition, transition


def _transition(before: datetime, after: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The first second at which `zone` uses the offset it has at `after`."""
    target = _offset(after, zone)
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(datetime.fromtimestamp(middle, UTC), zone) == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _offset_drop_ahead(moment: datetime, zone: zoneinfo.ZoneInfo) -> timedelta:
    """How far clocks will go back within a day after `moment` (0 when they won't)."""
    later = (_offset(moment + timedelta(hours=h), zone) for h in range(1, _LOOKAROUND_H + 1))
    return max(timedelta(0), _offset(moment, zone) - min(later))


def _offset_drop_behind(moment: datetime, zone: zoneinfo.ZoneInfo) -> timedelta:
    """How far clocks went back within a day before `moment` (0 when they didn't)."""
    earlier = (_offset(moment - timedelta(hours=h), zone) for h in range(1, _LOOKAROUND_H + 1))
    return max(timedelta(0), max(earlier) - _offset(moment, zone))


def next_tick(expr: str, tz: str, after: datetime) -> datetime:
    """The first tick of cron `expr` in timezone `tz` strictly after `after` (aware), in UTC.

    Raises ScheduleError for an invalid expression or timezone.
    """
    cron, zone = _compile(expr), _zone(tz)
    after = _as_utc(after)
    # Each wall time W maps to first(W) and, for every-hour schedules, also last(W); both
    # grow with W. first(W) > after needs W > wall(after); last(W) > after may hold for a
    # W a fold's length earlier, so every-hour schedules start that much earlier.
    start = _wall(after, zone)
    if cron.every_hour:
        start -= _offset_drop_ahead(after, zone)
    cron.walls.set_current(start, force=True)
    second: datetime | None = None
    for _ in range(_STEP_LIMIT):
        first, last = _instants(cron.walls.get_next(datetime), zone)
        if cron.every_hour and second is None and last > after:
            second = last
        if first > after:
            return first if second is None else min(first, second)
    raise errors.ScheduleError(f"cron expression '{expr}' has no tick after {after:%Y-%m-%d}")


def prev_tick(expr: str, tz: str, before: datetime) -> datetime:
    """The last tick of cron `expr` in timezone `tz` strictly before `before`, in UTC."""
    cron, zone = _compile(expr), _zone(tz)
    before = _as_utc(before)
    # Mirror of next_tick: walk wall times down from the latest one seen before `before`.
    start = _wall(before, zone) + _offset_drop_behind(before, zone) + timedelta(minutes=1)
    cron.walls.set_current(start, force=True)
    best: datetime | None = None
    for _ in range(_STEP_LIMIT):
        first, last = _instants(cron.walls.get_prev(datetime), zone)
        if best is None and first < before:
            best = first
            if not cron.every_hour:
                return best
        if best is not None and last < before:
            return max(best, last)
    raise errors.ScheduleError(f"cron expression '{expr}' has no tick before {before:%Y-%m-%d}")


def due_ticks(expr: str, tz: str, since: datetime, until: datetime, limit: int) -> list[datetime]:
    """Up to `limit` of the most recent ticks in (since, until], newest first."""
    found: list[datetime] = []
    before = _as_utc(until) + _EPSILON
    while len(found) < limit:
        tick = prev_tick(expr, tz, before)
        if tick <= since:
            break
        found.append(tick)
        before = tick
    return found


@dataclass(frozen=True, slots=True)
class Plan:
    """What one pass does for one schedule."""

    ticks: tuple[datetime, ...]
    """Ticks to enqueue, oldest first."""
    skipped: int
    """Due ticks left out by the missed-tick policy (counted up to backfill_max)."""
    last_tick_at: datetime
    """Every tick up to here is handled once the plan is applied."""
    next_tick_at: datetime


def plan(
    expr: str,
    tz: str,
    missed: Policy,
    *,
    last_tick_at: datetime,
    now: datetime,
    grace_s: float,
    backfill_max: int,
) -> Plan:
    """Which ticks in (last_tick_at, now] to enqueue under missed-tick policy `missed`:
    `latest` the newest one; `skip` the newest one if it is at most `grace_s` old (older
    ticks were missed: nobody ran them in time); `all` each of them, the newest
    `backfill_max` at most."""
    due = due_ticks(expr, tz, last_tick_at, now, limit=backfill_max + 1)
    if not due:
        return Plan((), 0, last_tick_at, next_tick(expr, tz, max(last_tick_at, now)))
    if missed == "all":
        chosen = due[:backfill_max]
    elif missed == "skip" and (now - due[0]).total_seconds() > grace_s:
        chosen = []
    else:
        chosen = due[:1]
    skipped = len(due) - len(chosen)
    return Plan(tuple(reversed(chosen)), skipped, due[0], next_tick(expr, tz, due[0]))


def dedupe_key(schedule: str, tick: datetime) -> str:
    """`schedule:<name>:<tick in UTC>`: the job row's dedupe key for one tick."""
    return f"schedule:{schedule}:{_as_utc(tick):%Y-%m-%dT%H:%M:%SZ}"


# -- the schedule file -----------------------------------------------------------------------


class ScheduleSpec(pydantic.BaseModel):
    """One schedule as the file, the CLI and the SQL functions declare it."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str
    cron: str
    task_type: str
    timezone: str = "UTC"
    payload: dict[str, Any] = pydantic.Field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    max_attempts: int | None = None
    missed: str = "latest"
    active: bool = True

    @pydantic.model_validator(mode="after")
    def _check(self) -> ScheduleSpec:
        problem = schedule_problem(self.model_dump(exclude={"active"}))
        if problem is not None:
            raise ValueError(problem)
        return self

    def to_def(self, source: str) -> store.ScheduleDef:
        return store.ScheduleDef(source=source, **self.model_dump())


def spec(**fields: Any) -> ScheduleSpec:
    """A validated ScheduleSpec; ScheduleError (one line) if a field is wrong."""
    try:
        return ScheduleSpec(**fields)
    except pydantic.ValidationError as exc:
        raise errors.ScheduleError(_first_problem(exc)) from None


def _first_problem(exc: pydantic.ValidationError) -> str:
    problems = exc.errors()
    # A misspelt key also makes a required one "missing": name the misspelling first.
    unknown = [str(e["loc"][0]) for e in problems if e["type"] == "extra_forbidden"]
    if unknown:
        keys = ", ".join(name for name in ScheduleSpec.model_fields if name != "name")
        return f"unknown key '{unknown[0]}' (keys: {keys})"
    first = problems[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {message}" if where else message


def load_file(path: Path) -> list[ScheduleSpec]:
    """Read a schedule file: one `[schedules.<name>]` table per schedule, with keys cron,
    task_type, and optionally timezone, payload, queue, priority, max_attempts, missed,
    active. Raises ConfigError naming the file and the schedule."""
    where = f"WORKER_SCHEDULES_FILE: {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise errors.ConfigError(f"{where}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise errors.ConfigError(f"{where}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"schedules"})
    if unknown:
        raise errors.ConfigError(f"{where}: unknown top-level keys {unknown}; use [schedules.NAME]")
    specs: list[ScheduleSpec] = []
    for name, body in data.get("schedules", {}).items():
        if not isinstance(body, dict):
            raise errors.ConfigError(f"{where}: schedules.{name} must be a table")
        try:
            specs.append(ScheduleSpec(name=name, **body))
        except pydantic.ValidationError as exc:
            raise errors.ConfigError(f"{where}: schedule '{name}': {_first_problem(exc)}") from None
    return specs


def resolve_file(configured: Path) -> Path:
    """A relative path is looked up in the working directory, then beside the `worker`
    package (a checkout's root, or site-packages where the `handlers` package lives)."""
    if configured.is_absolute() or configured.exists():
        return configured
    beside = Path(__file__).resolve().parent.parent / configured
    return beside if beside.exists() else configured


# -- the scheduler ---------------------------------------------------------------------------


@dataclass
class PassReport:
    """What one `run_once` did."""

    enqueued: list[tuple[str, datetime, int]] = field(default_factory=list)
    """(schedule, tick, job id) per job inserted."""
    taken: int = 0
    """Schedules another replica (or an admin's edit) got to first: nothing done here."""
    invalid: list[str] = field(default_factory=list)
    next_due_at: datetime | None = None


class Scheduler:
    """Turns the due ticks of active `job_schedules` rows into `job_queue` rows (run_type
    'cron'). Any number of replicas may run one at once: each tick is enqueued once."""

    def __init__(self, db: store.Store, settings: Settings, clock: Clock | None = None) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock or SystemClock()
        self._reported: set[tuple[str, int]] = set()  # invalid (schedule, revision) logged
        self._skewed = False

    async def run_once(self, now: datetime | None = None) -> PassReport:
        """One pass at `now` (default: the clock's): enqueue every schedule's due ticks."""
        now = _as_utc(now or self.clock.now())
        report = PassReport()
        for row in await self.db.due_schedules(now):
            await self._fire(row, now, report)
        report.next_due_at = await self.db.next_schedule_due()
        return report

    async def _fire(self, row: store.Record, now: datetime, report: PassReport) -> None:
        name = row["name"]
        try:
            todo = plan(
                row["cron"],
                row["timezone"],
                row["missed"],
                last_tick_at=row["last_tick_at"] or row["created_at"],
                now=now,
                grace_s=self.settings.scheduler_grace_s,
                backfill_max=self.settings.scheduler_backfill_max,
            )
            jobs = await self.db.fire_schedule(
                name,
                revision=row["revision"],
                seen_last_tick_at=row["last_tick_at"],
                last_tick_at=todo.last_tick_at,
                next_tick_at=todo.next_tick_at,
                ticks=list(todo.ticks),
                dedupe_keys=[dedupe_key(name, tick) for tick in todo.ticks],
            )
        except errors.ScheduleError as exc:
            report.invalid.append(name)
            if (name, row["revision"]) not in self._reported:
                self._reported.add((name, row["revision"]))
                log.error("schedule_invalid", schedule=name, error=str(exc))
            return
        if jobs is None:
            report.taken += 1
            return
        for tick, job_id in jobs:
            report.enqueued.append((name, tick, job_id))
            log.info("schedule_enqueued", schedule=name, tick=tick.isoformat(), job_id=job_id)
        if todo.skipped:
            log.warning(
                "schedule_ticks_skipped",
                schedule=name,
                policy=row["missed"],
                skipped_at_least=todo.skipped,
                newest_tick=todo.last_tick_at.isoformat(),
            )

    async def run(self, on_alive: Callable[[str], None] | None = None) -> None:
        """Pass after pass until cancelled: wake when the next tick is due, and at least
        every WORKER_SCHEDULER_INTERVAL_S (to see schedules created or changed). A failed
        pass is retried with backoff; a fatal fault raises DatabaseFault."""
        interval_s = self.settings.scheduler_interval_s
        log.info("scheduler_started", interval_s=interval_s)
        # A pass cut short by a fault is simply run again: ticks already enqueued moved
        # last_tick_at forward (one statement each), so none is enqueued twice.
        episode = faults.Episode("scheduler", log, reset=self.db.expire_sessions, cap_s=interval_s)
        while True:
            try:
                wait_s = await self._pass()
            except Exception as exc:  # a daemon loop outlives all but a fatal fault
                await episode.failed(exc)
                await anyio.sleep(min(episode.delay_s(), interval_s))
                continue
            episode.ok()
            if on_alive is not None:
                on_alive("scheduler")
            await anyio.sleep(wait_s)

    async def _pass(self) -> float:
        """One pass, unless this host's clock disagrees with the database's; returns how
        long to wait before the next."""
        now = self.clock.now()
        skew_s = (await self.db.database_now() - now).total_seconds()
        skewed = abs(skew_s) > self.settings.scheduler_max_skew_s
        if skewed != self._skewed:
            self._skewed = skewed
            emit = log.error if skewed else log.info
            emit("scheduler_clock_skew" if skewed else "scheduler_clock_ok", skew_s=skew_s)
        if skewed:
            return self.settings.scheduler_interval_s
        report = await self.run_once(now)
        if report.next_due_at is None:
            return self.settings.scheduler_interval_s
        until_due_s = (report.next_due_at - self.clock.now()).total_seconds()
        return min(max(until_due_s, 0.05), self.settings.scheduler_interval_s)
