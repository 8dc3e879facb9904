"""Cron math, validation and the schedule file: pure, no database, time passed in."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.clock import FakeClock
from worker import errors, scheduler
from worker.scheduler import next_tick, plan, prev_tick

NY, LONDON = "America/New_York", "Europe/London"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ticks(expr: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    """Every tick in (start, end], by repeated next_tick."""
    found: list[datetime] = []
    tick = next_tick(expr, tz, start)
    while tick <= end:
        found.append(tick)
        tick = next_tick(expr, tz, tick)
    return found


def local(ticks_: list[datetime], tz: str) -> list[str]:
    return [f"{t.astimezone(ZoneInfo(tz)):%m-%d %H:%M %Z}" for t in ticks_]


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/5 * * * *", utc(2026, 1, 1, 10, 2, 30), utc(2026, 1, 1, 10, 5)),
        ("*/5 * * * *", utc(2026, 1, 1, 10, 5), utc(2026, 1, 1, 10, 10)),  # strictly after
        ("0 2 * * *", utc(2026, 1, 1, 2, 0, 0, 1), utc(2026, 1, 2, 2)),
        ("@hourly", utc(2026, 1, 1, 23, 59, 59), utc(2026, 1, 2, 0)),
        ("@daily", utc(2026, 12, 31, 12), utc(2027, 1, 1)),
        ("0 3 * * 0", utc(2026, 11, 22, 3), utc(2026, 11, 29, 3)),  # Sundays
        ("0 9 * * MON-FRI", utc(2026, 11, 20, 10), utc(2026, 11, 23, 9)),  # Fri -> Mon
        ("0 0 29 2 *", utc(2026, 1, 1), utc(2028, 2, 29)),
        ("15 3 1 jan,jul *", utc(2026, 2, 1), utc(2026, 7, 1, 3, 15)),
    ],
)
def test_next_tick_in_utc(expr: str, after: datetime, expected: datetime) -> None:
    assert next_tick(expr, "UTC", after) == expected


def test_next_tick_uses_the_schedules_timezone() -> None:
    # 08:00 in Tokyo is 23:00 UTC the day before; in London (GMT in winter) 08:00 UTC.
    assert next_tick("0 8 * * *", "Asia/Tokyo", utc(2026, 1, 1, 12)) == utc(2026, 1, 1, 23)
    assert next_tick("0 8 * * *", LONDON, utc(2026, 1, 1, 12)) == utc(2026, 1, 2, 8)
    assert next_tick("0 8 * * *", LONDON, utc(2026, 7, 1, 12)) == utc(2026, 7, 2, 7)  # BST


def test_times_must_be_aware() -> None:
    with pytest.raises(ValueError, match="naive"):
        next_tick("* * * * *", "UTC", datetime(2026, 1, 1))


def test_prev_tick_is_strictly_before() -> None:
    assert prev_tick("*/5 * * * *", "UTC", utc(2026, 1, 1, 10, 5)) == utc(2026, 1, 1, 10, 0)
    assert prev_tick("*/5 * * * *", "UTC", utc(2026, 1, 1, 10, 7)) == utc(2026, 1, 1, 10, 5)
    assert prev_tick("0 2 * * *", "UTC", utc(2026, 1, 1)) == utc(2025, 12, 31, 2)


def test_invalid_expression_or_timezone_raises_schedule_error() -> None:
    with pytest.raises(errors.ScheduleError, match="minute value 61 is out of range 0-59"):
        next_tick("61 * * * *", "UTC", utc(2026, 1, 1))
    with pytest.raises(errors.ScheduleError, match="unknown timezone 'Mars/Olympus'"):
        next_tick("* * * * *", "Mars/Olympus", utc(2026, 1, 1))


# -- DST: America/New_York (2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00
# EST) and Europe/London (2026-03-29 01:00 GMT -> 02:00 BST; 2026-10-25 02:00 BST -> 01:00 GMT)


def test_new_york_spring_forward_runs_a_skipped_time_at_the_end_of_the_gap() -> None:
    got = ticks("30 2 * * *", NY, utc(2026, 3, 6, 12), utc(2026, 3, 9, 12))
    assert local(got, NY) == ["03-07 02:30 EST", "03-08 03:00 EDT", "03-09 02:30 EDT"]


def test_new_york_spring_forward_interval_schedule_loses_no_run() -> None:
    # 01:30 EST is followed 30 real minutes later by 03:00 EDT: 02:00 and 02:30 do not
    # exist and collapse into that one run.
    got = ticks("*/30 * * * *", NY, utc(2026, 3, 8, 5, 45), utc(2026, 3, 8, 8))
    assert local(got, NY) == [
        "03-08 01:00 EST",
        "03-08 01:30 EST",
        "03-08 03:00 EDT",
        "03-08 03:30 EDT",
        "03-08 04:00 EDT",
    ]
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(got))


def test_new_york_fall_back_runs_a_repeated_time_once() -> None:
    got = ticks("30 1 * * *", NY, utc(2026, 10, 31, 0), utc(2026, 11, 2, 12))
    assert local(got, NY) == ["10-31 01:30 EDT", "11-01 01:30 EDT", "11-02 01:30 EST"]
    got = ticks("*/20 1 * * *", NY, utc(2026, 11, 1, 4), utc(2026, 11, 1, 12))
    assert local(got, NY) == ["11-01 01:00 EDT", "11-01 01:20 EDT", "11-01 01:40 EDT"]


def test_new_york_fall_back_hourly_follows_elapsed_time() -> None:
    # Hour field `*`: an interval, not a time of day. It ticks in both 01:00 hours, so the
    # 25-hour local day has 25 hourly runs, one real hour apart.
    start, end = utc(2026, 11, 1, 3, 30), utc(2026, 11, 2, 4, 30)  # local day 11-01
    got = ticks("0 * * * *", NY, start, end)
    assert len(got) == 25
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(got))
    assert local(got, NY)[1:3] == ["11-01 01:00 EDT", "11-01 01:00 EST"]


def test_london_spring_forward_and_fall_back() -> None:
    got = ticks("30 1 * * *", LONDON, utc(2026, 3, 27, 12), utc(2026, 3, 30, 12))
    assert local(got, LONDON) == ["03-28 01:30 GMT", "03-29 02:00 BST", "03-30 01:30 BST"]
    got = ticks("0 1 * * *", LONDON, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    assert local(got, LONDON) == ["10-25 01:00 BST", "10-26 01:00 GMT"]
    got = ticks("@hourly", LONDON, utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 2, 30))
    assert local(got, LONDON) == ["10-25 01:00 BST", "10-25 01:00 GMT", "10-25 02:00 GMT"]


@pytest.mark.parametrize("tz", [NY, LONDON])
@pytest.mark.parametrize(
    ("start", "end"), [(utc(2026, 3, 6), utc(2026, 3, 31)), (utc(2026, 10, 23), utc(2026, 11, 4))]
)
def test_a_daily_schedule_runs_once_every_local_day_across_dst(
    tz: str, start: datetime, end: datetime
) -> None:
    zone = ZoneInfo(tz)
    first_day = (start + timedelta(days=1)).astimezone(zone).date()
    last_day = (end - timedelta(days=1)).astimezone(zone).date()
    for hour in range(24):
        for minute in (0, 30):
            per_day = Counter(
                t.astimezone(zone).date() for t in ticks(f"{minute} {hour} * * *", tz, start, end)
            )
            days = [first_day + timedelta(days=n) for n in range((last_day - first_day).days)]
            assert [per_day[d] for d in days] == [1] * len(days), (hour, minute)


def test_a_simulated_scheduler_on_a_fake_clock_runs_each_tick_once_across_dst() -> None:
    # The scheduler's pure core, stepped minute by minute through both NY transitions.
    for expr, start in (("*/15 * * * *", utc(2026, 3, 8, 4)), ("30 1 * * *", utc(2026, 10, 31))):
        clock = FakeClock(start)
        last, enqueued = clock.now(), []
        end = start + timedelta(days=2)
        while clock.now() < end:
            clock.advance(timedelta(minutes=1))
            todo = plan(
                expr, NY, "latest", last_tick_at=last, now=clock.now(), grace_s=60, backfill_max=9
            )
            enqueued += todo.ticks
            last = todo.last_tick_at
            assert todo.next_tick_at > clock.now()
        assert enqueued == ticks(expr, NY, start, end)
        assert len(set(enqueued)) == len(enqueued)


# -- properties ----------------------------------------------------------------------------

_ZONES = [
    "UTC",
    NY,
    LONDON,
    "Australia/Lord_Howe",  # 30-minute DST shift
    "America/Santiago",  # transitions at midnight
    "Asia/Kolkata",
    "Europe/Dublin",  # "negative" DST in the tz database
]


def _items(low: int, high: int, size: int) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    pair = st.tuples(number, number).map(lambda p: f"{min(p)}-{max(p)}")
    step = st.integers(1, size)
    item = st.one_of(
        st.just("*"),
        number.map(str),
        pair,
        step.map(lambda s: f"*/{s}"),
        st.tuples(pair, step).map(lambda p: f"{p[0]}/{p[1]}"),
    )
    return st.lists(item, min_size=1, max_size=3).map(",".join)


cron_expressions = st.one_of(
    st.sampled_from(sorted(scheduler.ALIASES)),
    st.tuples(
        _items(0, 59, 60),
        st.one_of(st.just("*"), _items(0, 23, 24)),
        st.one_of(st.just("*"), _items(1, 31, 31)),
        st.one_of(st.just("*"), _items(1, 12, 12)),
        st.one_of(st.just("*"), _items(0, 7, 7)),
    ).map(" ".join),
)

_TRANSITIONS = [
    utc(2026, 3, 8, 7),
    utc(2026, 11, 1, 6),
    utc(2026, 3, 29, 1),
    utc(2026, 10, 25, 1),
    utc(2026, 4, 4, 15),  # Lord Howe, back 30 minutes
    utc(2026, 10, 3, 15, 30),  # Lord Howe, forward 30 minutes
]
instants = st.one_of(
    st.datetimes(datetime(2019, 1, 1), datetime(2031, 1, 1), timezones=st.just(UTC)),
    st.tuples(st.sampled_from(_TRANSITIONS), st.integers(-4 * 3600, 4 * 3600)).map(
        lambda p: p[0] + timedelta(seconds=p[1])
    ),
)


def _matches_or_ends_a_gap(expr: str, tz: str, tick: datetime) -> bool:
    zone = ZoneInfo(tz)
    text = expr.strip().lower()
    wall = tick.astimezone(zone).replace(tzinfo=None)
    if croniter.match(scheduler.ALIASES.get(text, text), wall):
        return True
    before = (tick - timedelta(seconds=1)).astimezone(zone).utcoffset()
    return before != tick.astimezone(zone).utcoffset()


@settings(max_examples=300, deadline=None)
@given(expr=cron_expressions, tz=st.sampled_from(_ZONES), now=instants)
def test_next_tick_is_after_now_and_nothing_lies_in_between(
    expr: str, tz: str, now: datetime
) -> None:
    if scheduler.cron_error(expr) is not None:  # a never-running day/month combination
        return
    upcoming = next_tick(expr, tz, now)
    assert upcoming > now
    assert prev_tick(expr, tz, upcoming) <= now
    assert _matches_or_ends_a_gap(expr, tz, upcoming)
    previous = prev_tick(expr, tz, now)
    assert previous < now
    assert next_tick(expr, tz, previous) in (now, upcoming)  # `now` itself may be a tick


@settings(max_examples=200, deadline=None)
@given(expr=cron_expressions)
def test_croniter_accepts_everything_the_grammar_accepts(expr: str) -> None:
    problem = scheduler.cron_error(expr)
    assert problem is None or "never occurs" in problem


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("*/5 * * * *", None),
        ("  0 2 * * *\t", None),
        ("@hourly", None),
        ("@DAILY", None),
        ("0 9 * jan-mar mon-fri", None),
        ("0 0 * * 7", None),
        (None, "a cron expression is required"),
        ("", "expected 5 fields (minute hour day-of-month month day-of-week), got 0"),
        ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("0 0 * * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 6"),
        (
            "@reboot",
            "unknown alias '@reboot': use @yearly, @annually, @monthly, @weekly, @daily, "
            "@midnight or @hourly",
        ),
        ("61 * * * *", "minute value 61 is out of range 0-59"),
        ("0 24 * * *", "hour value 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month value 0 is out of range 1-31"),
        ("0 0 * 13 *", "month value 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week value 8 is out of range 0-7"),
        ("5-2 * * * *", "minute range 5-2 runs backwards"),
        ("*/0 * * * *", "minute step 0 must be between 1 and 60"),
        ("0 */25 * * *", "hour step 25 must be between 1 and 24"),
        ("x * * * *", "minute field: 'x' is not a valid value"),
        ("0 0 * * funday", "day-of-week field: 'funday' is not a valid value"),
        ("1,,2 * * * *", "minute field: cannot read ''"),
        ("1-2-3 * * * *", "minute field: cannot read '1-2-3'"),
        ("0 0 L * *", "day-of-month field: 'l' is not a valid value"),
        ("0 0 * * 1#2", "unexpected character '#'"),
        ("0 0 ? * *", "unexpected character '?'"),
        ("0 0 30 2 *", "day-of-month 30 never occurs in the months listed, so it would never run"),
        (
            "0 0 31 4,6 *",
            "day-of-month 31 never occurs in the months listed, so it would never run",
        ),
        ("0" * 201, "longer than 200 characters"),
    ],
)
def test_cron_error(expr: str | None, problem: str | None) -> None:
    assert scheduler.cron_error(expr) == problem


@pytest.mark.parametrize(
    ("tz", "problem"),
    [
        ("UTC", None),
        ("Europe/London", None),
        ("America/Argentina/Buenos_Aires", None),
        ("Etc/GMT+5", None),
        ("EST5EDT", None),
        ("", "a timezone is required"),
        (None, "a timezone is required"),
        (
            "Mars/Olympus",
            "unknown timezone 'Mars/Olympus': use an IANA name such as UTC or Europe/London",
        ),
        ("europe/london", "unknown timezone 'europe/london': did you mean 'Europe/London'?"),
        ("UTC+3", "unknown timezone 'UTC+3': use an IANA name such as UTC or Europe/London"),
        ("PST", "unknown timezone 'PST': use an IANA name such as UTC or Europe/London"),
        (
            "localtime",
            "unknown timezone 'localtime': use an IANA name such as UTC or Europe/London",
        ),
        (
            "../etc/passwd",
            "unknown timezone '../etc/passwd': use an IANA name such as UTC or Europe/London",
        ),
    ],
)
def test_timezone_error(tz: str | None, problem: str | None) -> None:
    assert scheduler.timezone_error(tz) == problem


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"name": "nightly.report:v2"}, None),
        (
            {"name": "has space"},
            "invalid schedule name 'has space': use 1-128 of A-Z a-z 0-9 _ . : -",
        ),
        (
            {"cron": "61 * * * *"},
            "invalid cron expression '61 * * * *': minute value 61 is out of range 0-59",
        ),
        (
            {"task_type": "bad type"},
            "invalid task type 'bad type': use 1-128 of A-Z a-z 0-9 _ . : -",
        ),
        ({"payload": [1]}, "payload must be a JSON object"),
        # A refused value is echoed in part: its first 64 characters (as the SQL does).
        (
            {"queue": "a" * 65},
            f"invalid queue name '{'a' * 64}...': use 1-64 of A-Z a-z 0-9 _ . : -",
        ),
        ({"priority": 1001}, "priority must be between -1000 and 1000"),
        ({"max_attempts": 0}, "max_attempts must be between 1 and 1000"),
        ({"max_attempts": None}, None),
        ({"missed": "some"}, "invalid missed-tick policy 'some': use latest, skip or all"),
        # The first problem, in a fixed order, wins.
        (
            {"missed": "x", "name": "bad name"},
            "invalid schedule name 'bad name': use 1-128 of A-Z a-z 0-9 _ . : -",
        ),
    ],
)
def test_schedule_problem(fields: dict[str, Any], problem: str | None) -> None:
    assert scheduler.schedule_problem(fields) == problem


def test_spec_refuses_with_one_line() -> None:
    with pytest.raises(errors.ScheduleError) as caught:
        scheduler.spec(name="x", cron="0 0 30 2 *", task_type="noop")
    assert str(caught.value) == (
        "invalid cron expression '0 0 30 2 *': day-of-month 30 never occurs in the months "
        "listed, so it would never run"
    )
    with pytest.raises(errors.ScheduleError, match=r"^priority: Input should be a valid integer"):
        scheduler.spec(name="x", cron="* * * * *", task_type="noop", priority="high")


def test_dedupe_key_names_the_schedule_and_the_utc_tick() -> None:
    tick = datetime(2026, 3, 8, 3, 0, tzinfo=ZoneInfo(NY))
    assert scheduler.dedupe_key("stats", tick) == "schedule:stats:2026-03-08T07:00:00Z"


# -- missed-tick policies (pure) ---------------------------------------------------------------

T0 = utc(2026, 6, 1, 12)


def _plan(missed: Any, now: datetime, **kw: Any) -> scheduler.Plan:
    options: dict[str, Any] = {"grace_s": 60, "backfill_max": 100, **kw}
    return plan("*/10 * * * *", "UTC", missed, last_tick_at=T0, now=now, **options)


def test_nothing_due_only_computes_the_next_tick() -> None:
    assert _plan("latest", T0 + timedelta(minutes=9)) == scheduler.Plan(
        (), 0, T0, T0 + timedelta(minutes=10)
    )


def test_on_time_tick_runs_under_every_policy() -> None:
    for missed in ("latest", "skip", "all"):
        todo = _plan(missed, T0 + timedelta(minutes=10, seconds=5))
        assert todo.ticks == (T0 + timedelta(minutes=10),)
        assert todo.next_tick_at == T0 + timedelta(minutes=20)


def test_latest_runs_only_the_newest_missed_tick() -> None:
    todo = _plan("latest", T0 + timedelta(minutes=65))
    assert todo.ticks == (T0 + timedelta(minutes=60),)
    assert (todo.skipped, todo.last_tick_at) == (5, T0 + timedelta(minutes=60))
    assert todo.next_tick_at == T0 + timedelta(minutes=70)


def test_skip_runs_a_tick_only_within_the_grace_period() -> None:
    late = _plan("skip", T0 + timedelta(minutes=65), grace_s=60)
    assert (late.ticks, late.skipped, late.last_tick_at) == ((), 6, T0 + timedelta(minutes=60))
    assert _plan("skip", T0 + timedelta(minutes=65), grace_s=300).ticks == (
        T0 + timedelta(minutes=60),
    )


def test_all_backfills_every_missed_tick_oldest_first_bounded() -> None:
    todo = _plan("all", T0 + timedelta(minutes=65))
    assert todo.ticks == tuple(T0 + timedelta(minutes=10 * n) for n in range(1, 7))
    bounded = _plan("all", T0 + timedelta(minutes=65), backfill_max=4)
    assert bounded.ticks == tuple(T0 + timedelta(minutes=10 * n) for n in range(3, 7))
    assert bounded.skipped >= 1


def test_a_last_tick_ahead_of_now_makes_nothing_due() -> None:
    # Another replica with a fast clock already handled ticks this one has not seen yet.
    todo = plan(
        "*/10 * * * *",
        "UTC",
        "latest",
        last_tick_at=T0,
        now=T0 - timedelta(minutes=25),
        grace_s=60,
        backfill_max=10,
    )
    assert todo.ticks == () and todo.next_tick_at == T0 + timedelta(minutes=10)


# -- the schedule file ----------------------------------------------------------------------


def test_load_file_reads_every_field(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[schedules.report]\ncron = "0 6 * * 1-5"\ntask_type = "call_endpoint"\n'
        'timezone = "Europe/London"\npayload = { endpoint = "report" }\nqueue = "slow"\n'
        'priority = -5\nmax_attempts = 2\nmissed = "skip"\nactive = false\n'
    )
    [spec] = scheduler.load_file(path)
    assert spec.model_dump() == {
        "name": "report",
        "cron": "0 6 * * 1-5",
        "task_type": "call_endpoint",
        "timezone": "Europe/London",
        "payload": {"endpoint": "report"},
        "queue": "slow",
        "priority": -5,
        "max_attempts": 2,
        "missed": "skip",
        "active": False,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[schedules.a]\ncron = "61 * * * *"\ntask_type = "x"\n',
            "schedule 'a': invalid cron "
            "expression '61 * * * *': minute value 61 is out of range 0-59",
        ),
        (
            '[schedules.a]\ncron = "* * * * *"\ntask = "x"\n',
            "schedule 'a': unknown key 'task' (keys: cron, task_type, timezone, payload, "
            "queue, priority, max_attempts, missed, active)",
        ),
        ('[schedules.a]\ncron = "* * * * *"\n', "schedule 'a': task_type: Field required"),
        ('[schedule.a]\ncron = "* * * * *"\n', "unknown top-level keys ['schedule']"),
        ("[schedules.a\n", "not valid TOML"),
        ("[schedules]\na = 1\n", "schedules.a must be a table"),
    ],
)
def test_load_file_errors_name_the_file_and_schedule(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(errors.ConfigError) as caught:
        scheduler.load_file(path)
    assert str(caught.value).startswith(f"WORKER_SCHEDULES_FILE: {path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="cannot read: No such file"):
        scheduler.load_file(tmp_path / "missing.toml")


def test_resolve_file_falls_back_to_beside_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    resolved = scheduler.resolve_file(Path("handlers/schedules/trading.toml"))
    assert resolved.is_absolute() and resolved.exists()
