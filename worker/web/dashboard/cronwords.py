"""Cron expressions in words, for the schedule pages: "0 * * * *" is "hourly", "15 3 * * *"
is "at 03:15 every day". Only the shapes people write are described; anything else (steps
of hours with lists, day-of-month with day-of-week...) gets None and the page shows the
expression alone. The scheduler never reads this: words are for people, the expression
(evaluated by croniter) is what runs."""

from __future__ import annotations

import re

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_NUMBER = re.compile(r"\d{1,2}")
_STEP = re.compile(r"\*/(\d{1,2})")


def describe(expression: str, timezone: str = "UTC") -> str | None:
    """The expression in words, with its timezone when it names times of day; None when
    it has no simple reading."""
    fields = _ALIASES.get(expression.strip().lower(), expression).split()
    if len(fields) != 5:
        return None
    minute, hour, dom, month, dow = fields
    try:
        when = _days(dom, month, dow)
        if when is None:
            return None
        if hour == "*":
            every = _minutes(minute)
            if every is None:
                return None
            return every if when == "every day" else f"{every}, {when}"
        times = _times(minute, hour)
        if times is None:
            return None
        if times.startswith("every"):
            return times if when == "every day" else f"{times}, {when}"
        return f"{times} {timezone} {when}"
    except (ValueError, IndexError):
        return None


def _minutes(minute: str) -> str | None:
    """The minute field when the hour is `*`."""
    if minute == "*":
        return "every minute"
    step = _STEP.fullmatch(minute)
    if step:
        n = int(step.group(1))
        return "every minute" if n == 1 else f"every {n} minutes"
    if minute == "0":
        return "hourly"
    if _NUMBER.fullmatch(minute):
        return f"hourly at minute {int(minute)}"
    if re.fullmatch(r"\d{1,2}(,\d{1,2})+", minute):
        return "hourly at minutes " + ", ".join(str(int(m)) for m in minute.split(","))
    return None


def _times(minute: str, hour: str) -> str | None:
    """Times of day: "at 03:15", "at 09:00 and 17:00", "every 2 hours at :30"."""
    if not _NUMBER.fullmatch(minute):
        return None
    step = _STEP.fullmatch(hour)
    if step:
        n = int(step.group(1))
        at = "" if minute == "0" else f" at minute {int(minute)}"
        return f"every {n} hours{at}"
    if re.fullmatch(r"\d{1,2}(,\d{1,2})*", hour):
        hours = [int(h) for h in hour.split(",")]
        if any(h > 23 for h in hours) or int(minute) > 59:
            return None
        clock = [f"{h:02d}:{int(minute):02d}" for h in hours]
        return "at " + (
            clock[0] if len(clock) == 1 else ", ".join(clock[:-1]) + " and " + clock[-1]
        )
    return None


def _days(dom: str, month: str, dow: str) -> str | None:
    if month != "*" and not (_NUMBER.fullmatch(month) and 1 <= int(month) <= 12):
        return None
    if dom != "*" and dow != "*":
        return None  # cron's "either" rule reads badly in words
    if dow != "*":
        days = _weekdays(dow)
        if days is None or month != "*":
            return None
        return days
    if dom == "*":
        return "every day" if month == "*" else f"every day in {_MONTHS[int(month) - 1]}"
    if not _NUMBER.fullmatch(dom) or not 1 <= int(dom) <= 31:
        return None
    if month == "*":
        return f"on day {int(dom)} of every month"
    return f"on {_MONTHS[int(month) - 1]} {int(dom)}"


def _weekdays(dow: str) -> str | None:
    if dow in ("1-5", "mon-fri", "MON-FRI"):
        return "on weekdays"
    if dow in ("0,6", "6,0", "sat,sun", "SAT,SUN"):
        return "on weekends"
    if re.fullmatch(r"[0-7](,[0-7])*", dow):
        names = [_DAYS[int(d) % 7] for d in dow.split(",")]
        return "on " + (
            names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        )
    span = re.fullmatch(r"([0-7])-([0-7])", dow)
    if span:
        return f"{_DAYS[int(span.group(1)) % 7]} to {_DAYS[int(span.group(2)) % 7]}"
    return None
