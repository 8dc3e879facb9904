"""The challenges app's engagement jobs: closing expired challenges and streak reminders.

`auto_complete_challenges` does what the app's SQL function of that name does, once:
active challenges whose `end_date` is before today (UTC) become `completed` when the
average `completion_rate` of their `challenge_member_stats` reaches
HANDLERS_CHALLENGE_SUCCESS_PCT (80), else `failed`, and every member gets the app's
notification (type `challenge_completed`, "Challenge Completed!", `Your challenge "<name>"
has ended`, data {challenge_id, status}). A batch per statement: the status change and its
notifications commit together. Unlike the app's function, a re-run never notifies twice:
only `active` challenges are taken, and notifications carry a dedupe key
(`challenge_closed:<id>`, unique per user); and a challenge closed days late still
notifies its members.

`send_streak_reminders` runs hourly. Users whose local time (their own IANA time zone,
`profiles.timezone`) is in the reminder hour (08:00-08:59) and who have logged nothing in
their local day get one reminder; the dedupe key `streak_reminder:<local day>` makes that
once per local day however often it runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, Field

from handlers import payloads, tables
from handlers import settings as handler_settings
from worker import queries
from worker.registry import JobContext, JobResult, handler

Q = queries.load("handlers", "queries.sql")


class AutoCompletePayload(payloads.Payload):
    batch_size: int = Field(default=100, ge=1, le=10_000)
    """Challenges closed per transaction."""


@handler("auto_complete_challenges", payload=AutoCompletePayload, max_attempts=5, timeout_s=600)
async def auto_complete_challenges(ctx: JobContext, payload: AutoCompletePayload) -> JobResult:
    """Close active challenges past their end date and notify their members once."""
    threshold = handler_settings.get().challenge_success_pct
    close = await tables.statement(ctx.pool, "close_expired_challenges")
    completed = failed = notified = 0
    while True:
        closed = await ctx.pool.fetch(close, payload.batch_size, threshold)
        for row in closed:
            completed += row["status"] == "completed"
            failed += row["status"] == "failed"
            notified += row["notified"]
        if len(closed) < payload.batch_size:
            break
    total = completed + failed
    return JobResult(
        rows_affected=total,
        notes=[
            f"closed {total} challenge(s): {completed} completed, {failed} failed "
            f"(threshold {threshold:g}%); {notified} member notification(s)"
        ],
        data={"completed": completed, "failed": failed, "notified": notified},
    )


class StreakRemindersPayload(payloads.Payload):
    as_of: AwareDatetime | None = None
    """The moment to evaluate local times at (default: the database's now())."""


@dataclass(frozen=True, slots=True)
class DueZone:
    """A time zone in the reminder hour, with its local day as UTC instants [start, end)."""

    timezone: str
    local_day: date
    day_start: datetime
    day_end: datetime


def due_zones(names: Iterable[str], now: datetime, hour: int) -> tuple[list[DueZone], list[str]]:
    """Which zones have local time in [hour:00, hour+1:00) at `now`, and which names are not
    IANA zones. DST-correct: a local day may be 23 or 25 hours long."""
    due: list[DueZone] = []
    unknown: list[str] = []
    for name in sorted(set(names)):
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            unknown.append(name)
            continue
        local = now.astimezone(zone)
        if local.hour != hour:
            continue
        day = local.date()
        start = datetime.combine(day, time(0), tzinfo=zone)
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
        due.append(DueZone(name, day, start, end))
    return due, unknown


@handler("send_streak_reminders", payload=StreakRemindersPayload, max_attempts=3, timeout_s=600)
async def send_streak_reminders(ctx: JobContext, payload: StreakRemindersPayload) -> JobResult:
    """Remind users at 08:00 local time who have not logged today, once per local day."""
    hour = handler_settings.get().streak_reminder_hour
    now: datetime = payload.as_of or await ctx.pool.fetchval(Q["db_now"])
    names = [row["timezone"] for row in await ctx.pool.fetch(Q["profile_timezones"])]
    zones, unknown = due_zones(names, now, hour)
    due = sent = 0
    if zones:
        row = await ctx.pool.fetchrow(
            await tables.statement(ctx.pool, "send_streak_reminders"),
            [z.timezone for z in zones],
            [z.local_day for z in zones],
            [z.day_start for z in zones],
            [z.day_end for z in zones],
        )
        assert row is not None
        due, sent = int(row["due"]), int(row["sent"])
    notes = [
        f"{len(zones)} time zone(s) in the {hour:02d}:00 hour; {due} user(s) had not logged "
        f"today, {sent} reminder(s) sent, {due - sent} already reminded"
    ]
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:5])
        notes.append(f"skipped users with unknown time zone(s): {shown}")
    return JobResult(
        rows_affected=sent,
        notes=notes,
        data={"zones": [z.timezone for z in zones], "due": due, "sent": sent},
    )
