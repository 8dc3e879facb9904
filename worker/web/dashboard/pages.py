"""The dashboard's pages (GET): read in one read-only transaction each, never change state."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from worker import errors, presence, scheduler, store
from worker.admin import jobs as admin_jobs
from worker.admin.store import JobFilter
from worker.web.dashboard import cronwords, payloadform, render
from worker.web.dashboard.view import (
    JOB_STATUSES,
    PAGE_SIZE,
    RUN_STATUSES,
    RUN_TYPES,
    BadInput,
    Flash,
    Values,
    View,
    before,
    choice,
    first,
    name,
    task_type,
    text,
)

# Below this many rows (as the planner last counted them) succeeded jobs are counted
# exactly; above it the overview shows an estimate, because counting them reads the table.
EXACT_COUNT_MAX_ROWS = 200_000
_RECENT_AUDIT = 10


async def overview(view: View) -> Response:
    now = view.app.clock.now()
    hour_start = now - timedelta(minutes=59)
    day_start = now - timedelta(hours=23)
    # The page's two largest reads (live jobs by queue and task type; a day of job_runs)
    # each in a read-only transaction of its own, at the same time as the rest.
    (live, exact, minutes, paused, audit), breakdown, hours = await asyncio.gather(
        _overview_reads(view, hour_start),
        _breakdown(view),
        _throughput(view, day_start, "hour"),
    )
    by_queue, by_task, oldest_due_s = _group(breakdown)
    return view.page(
        "overview.html",
        counts=live,
        succeeded_exact=exact,
        by_queue=by_queue,
        by_task=by_task,
        oldest_due_s=oldest_due_s,
        hour_chart=render.bar_chart(
            _buckets(minutes), end=now, step=timedelta(minutes=1), buckets=60, label_format="%H:%M"
        ),
        day_chart=render.bar_chart(
            _buckets(hours), end=now, step=timedelta(hours=1), buckets=24, label_format="%d %H:00"
        ),
        paused=paused,
        audit=audit,
    )


async def _throughput(view: View, since: datetime, bucket: str) -> list[store.Record]:
    """The day chart's buckets."""
    async with view.reads() as reads:
        return await reads.throughput(since.replace(minute=0, second=0, microsecond=0), bucket)


async def _overview_reads(
    view: View, hour_start: datetime
) -> tuple[dict[str, int], bool, list[store.Record], list[store.Record], list[store.Record]]:
    """Counts by status, the hour chart, paused queues, the latest admin actions."""
    async with view.reads() as reads:
        counts = await reads.overview_counts()
        estimated_rows = int(counts["estimated_rows"])
        live = {status: int(counts[status]) for status in ("pending", "running", "failed")}
        live["cancelled"] = int(counts["cancelled"])
        live["waiting"] = int(counts["waiting"])
        exact = estimated_rows < EXACT_COUNT_MAX_ROWS
        if exact:
            live["succeeded"] = await reads.succeeded_count()
        else:
            live["succeeded"] = max(0, estimated_rows - sum(live.values()))
        minutes = await reads.throughput(hour_start.replace(second=0, microsecond=0), "minute")
        paused = await reads.paused_queues()
        audit = await reads.recent_audit(_RECENT_AUDIT)
    return live, exact, minutes, paused, audit


async def _breakdown(view: View) -> list[store.Record]:
    async with view.reads() as reads:
        return await reads.live_breakdown()


def _group(
    rows: list[store.Record],
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]], float | None]:
    by_queue: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_LIVE, 0))
    by_task: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_LIVE, 0))
    oldest: float | None = None
    for row in rows:
        by_queue[row["queue"]][row["status"]] += row["jobs"]
        by_task[row["task_type"]][row["status"]] += row["jobs"]
        age_s = row["oldest_due_age_s"]
        if age_s is not None and (oldest is None or age_s > oldest):
            oldest = age_s
    return dict(sorted(by_queue.items())), dict(sorted(by_task.items())), oldest


_LIVE = ("waiting", "pending", "running", "failed")


def _buckets(rows: list[store.Record]) -> dict[datetime, tuple[int, int]]:
    return {row["bucket"]: (int(row["succeeded"]), int(row["failed"])) for row in rows}


# -- jobs ------------------------------------------------------------------------------------


async def jobs(view: View) -> Response:
    query = view.query
    filters = {
        "status": choice(query, "status", JOB_STATUSES),
        "queue": name(query, "queue"),
        "task_type": task_type(query, "task_type"),
        "q": text(query, "q") or None,
    }
    cursor = before(query)
    window_floor: int | None = None
    args: dict[str, Any] = {
        "status": filters["status"],
        "queue": filters["queue"],
        "task_type": filters["task_type"],
        "text": filters["q"],
        "before": cursor,
        "limit": PAGE_SIZE + 1,
    }
    async with view.reads() as reads:
        if _scans_table(filters):
            lowest, highest = await reads.job_id_range()
            top = cursor if cursor is not None else (highest or 0) + 1
            floor = max(lowest or 0, top - JOBS_WINDOW_IDS)
            rows = await reads.jobs_window(**args, lowest_id=floor)
            if lowest is not None and floor > lowest and len(rows) <= PAGE_SIZE:
                window_floor = floor
        else:
            rows = await reads.jobs(**args)
    window_url = None
    if window_floor is not None:
        params = {key: value for key, value in filters.items() if value}
        window_url = f"/dashboard/jobs?{urlencode({**params, 'before': window_floor})}"
    return _paged(
        view,
        "jobs",
        filters,
        rows,
        cursor,
        statuses=JOB_STATUSES,
        bulk_actions=_bulk_actions(filters["status"]),
        window_floor=window_floor,
        window_url=window_url,
        window_top=cursor,
        window_ids=JOBS_WINDOW_IDS,
    )


# A queue, task type or error-text filter on every state (or on succeeded jobs, most of the
# table) has no partial index to read: the list then looks at this many ids at a time.
JOBS_WINDOW_IDS = 100_000


def _scans_table(filters: dict[str, str | None]) -> bool:
    narrowed = any(filters[key] for key in ("queue", "task_type", "q"))
    return narrowed and filters["status"] in (None, "succeeded")


def _bulk_actions(status: str | None) -> list[tuple[str, str]]:
    """(action, label) of the bulk actions that apply to some jobs of the status filter."""
    labels = {"retry": "Retry", "cancel": "Cancel", "delete": "Delete"}
    return [
        (action, labels[action])
        for action in admin_jobs.BULK_STATES
        if admin_jobs.bulk_states(action, status)
    ]


def job_filter(values: Values) -> JobFilter:
    """The jobs list's filter, from a query or a form (BadInput for a bad value)."""
    return JobFilter(
        status=choice(values, "status", JOB_STATUSES),
        queue=name(values, "queue"),
        task_type=task_type(values, "task_type"),
        text=text(values, "q") or None,
    )


def _paged(
    view: View,
    page: str,
    filters: dict[str, str | None],
    rows: list[store.Record],
    cursor: int | None,
    **context: Any,
) -> Response:
    """A keyset-paged list (`page` names its template, its path and its rows): the first
    PAGE_SIZE rows, the filters echoed back, and the links to older rows and to the newest."""
    path = f"/dashboard/{page}"
    context[page] = rows[:PAGE_SIZE]
    return view.page(
        f"{page}.html",
        filters={key: value or "" for key, value in filters.items()},
        next_url=_next_url(path, filters, rows),
        first_url=_next_url(path, filters, None) if cursor else None,
        **context,
    )


def _next_url(path: str, filters: dict[str, str | None], rows: list[store.Record] | None) -> str:
    """The link to the next page (rows beyond PAGE_SIZE exist), or to the first (rows None)."""
    params = {key: value for key, value in filters.items() if value}
    if rows is not None:
        if len(rows) <= PAGE_SIZE:
            return ""
        params["before"] = str(rows[PAGE_SIZE - 1]["id"])
    return f"{path}?{urlencode(params)}" if params else path


async def job(view: View, *, status: int = 200, flash: Flash | None = None) -> Response:
    job_id = view.int_param("id")
    async with view.reads() as reads:
        row = await reads.job(job_id)
        if row is None:
            return not_found(view, f"There is no job {job_id}.")
        runs = await reads.job_runs(job_id, 200)
        audit = await reads.audit_entries(f"job:{job_id}", 50)
        parents = await reads.job_parents(job_id)
        children = await reads.job_children(job_id, admin_jobs.SHOWN_CHILDREN)
    return view.page(
        "job.html",
        status=status,
        flash=flash,
        job=row,
        runs=runs,
        audit=audit,
        parents=parents,
        children=children,
        shown_children=admin_jobs.SHOWN_CHILDREN,
        can_retry=row["status"] in ("failed", "cancelled"),
        can_cancel=row["status"] in ("waiting", "pending", "running"),
        can_run_now=row["status"] == "pending",
        can_delete=row["status"] in ("failed", "cancelled"),
    )


def not_found(view: View, message: str) -> Response:
    return view.page("error.html", status=404, title="Not found", message=message)


# -- schedules --------------------------------------------------------------------------------


async def schedules(
    view: View,
    *,
    status: int = 200,
    flash: Flash | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    now = view.app.clock.now()
    async with view.reads() as reads:
        rows = await reads.schedules()
    listed = [_with_next_run(row, now) for row in rows]
    return view.page(
        "schedules.html",
        status=status,
        flash=flash,
        schedules=listed,
        summary={
            "total": len(listed),
            "active": sum(1 for s in listed if s["active"]),
            "paused": sum(1 for s in listed if not s["active"]),
            "failing": sum(1 for s in listed if s["last_job_status"] == "failed"),
        },
        task_types=view.app.registry.names(),
        form=form or {"timezone": "UTC", "queue": "default", "payload": "{}"},
    )


def _with_next_run(row: store.Record, now: datetime) -> dict[str, Any]:
    """A schedule row plus `next_run`: the stored next tick, or (when a scheduler has not
    computed it yet: new, re-timed or resumed) the next tick from now."""
    schedule = dict(row)
    next_run = schedule["next_tick_at"]
    if next_run is None and schedule["active"]:
        try:
            after = max(now, schedule["last_tick_at"] or now)
            next_run = scheduler.next_tick(schedule["cron"], schedule["timezone"], after)
        except errors.ScheduleError:
            next_run = None
    schedule["next_run"] = next_run if schedule["active"] else None
    schedule["words"] = cronwords.describe(schedule["cron"], schedule["timezone"])
    return schedule


NEXT_RUNS = 5


def next_runs(cron: str, timezone: str, after: datetime, count: int = NEXT_RUNS) -> list[datetime]:
    """The next `count` ticks of a schedule after `after` (empty if it cannot be read)."""
    found: list[datetime] = []
    try:
        for _ in range(count):
            after = scheduler.next_tick(cron, timezone, after)
            found.append(after)
    except errors.ScheduleError:
        pass
    return found


async def schedule(
    view: View,
    *,
    status: int = 200,
    flash: Flash | None = None,
    form: dict[str, str] | None = None,
    edit_form: dict[str, str] | None = None,
    edit_errors: dict[str, str] | None = None,
) -> Response:
    schedule_name = view.param("name")
    cursor = before(view.query)
    now = view.app.clock.now()
    async with view.reads() as reads:
        row = await reads.schedule(schedule_name)
        if row is None:
            return not_found(view, f"There is no schedule named {schedule_name!r}.")
        jobs_rows = await reads.schedule_jobs(schedule_name, before=cursor, limit=PAGE_SIZE + 1)
        runs = await reads.schedule_runs(schedule_name, PAGE_SIZE)
        last = await reads.schedule_last_tick(schedule_name)
        audit = await reads.audit_entries(f"schedule:{schedule_name}", 20)
    path = f"/dashboard/schedules/{schedule_name}"
    shown = _with_next_run(row, now)
    first = shown["next_run"]
    upcoming = (
        [first, *next_runs(row["cron"], row["timezone"], first, NEXT_RUNS - 1)] if first else []
    )
    edit = {
        "missed": row["missed"],
        "payload": render.pretty(row["payload"]),
        "max_attempts": "" if row["max_attempts"] is None else str(row["max_attempts"]),
        "priority": str(row["priority"]),
        "queue": row["queue"],
    }
    return view.page(
        "schedule.html",
        status=status,
        flash=flash,
        schedule=shown,
        upcoming=upcoming,
        edit={**edit, **(edit_form or {})},
        edit_errors=edit_errors or {},
        served_here=row["task_type"] in view.app.registry,
        last_tick=_last_tick(schedule_name, last),
        jobs=jobs_rows[:PAGE_SIZE],
        runs=runs,
        audit=audit,
        next_url=_next_url(path, {}, jobs_rows),
        form=form or {"cron": row["cron"], "timezone": row["timezone"]},
    )


def _last_tick(schedule_name: str, row: store.Record | None) -> dict[str, Any] | None:
    """The newest tick the scheduler enqueued (row: dashboard_schedule_last_tick) and its job,
    or None: the schedule never ran."""
    if row is None:
        return None
    tick: datetime = row["run_at"]
    key = row["dedupe_key"] or ""
    prefix = f"schedule:{schedule_name}:"
    if key.startswith(prefix):
        with contextlib.suppress(ValueError):
            parsed = datetime.strptime(key.removeprefix(prefix), "%Y-%m-%dT%H:%M:%SZ")
            parsed = parsed.replace(tzinfo=UTC)
            # Only a key written by scheduler.dedupe_key itself names the tick.
            if scheduler.dedupe_key(schedule_name, parsed) == key:
                tick = parsed
    return {"tick": tick, "job_id": row["id"]}


# -- runs ----------------------------------------------------------------------------------


async def runs(view: View) -> Response:
    query = view.query
    filters = {
        "status": choice(query, "status", RUN_STATUSES),
        "run_type": choice(query, "run_type", RUN_TYPES),
    }
    cursor = before(query)
    async with view.reads() as reads:
        rows = await reads.runs(
            status=filters["status"],
            run_type=filters["run_type"],
            before=cursor,
            limit=PAGE_SIZE + 1,
        )
    return _paged(view, "runs", filters, rows, cursor, statuses=RUN_STATUSES, run_types=RUN_TYPES)


# -- enqueue ---------------------------------------------------------------------------------


async def enqueue(
    view: View,
    *,
    status: int = 200,
    flash: Flash | None = None,
    form: dict[str, str] | None = None,
    problems: dict[str, str] | None = None,
) -> Response:
    """The enqueue form: the task type from this worker's handlers (a GET form picks it),
    then the payload form its model describes, and the job's own fields."""
    values = form if form is not None else {"task_type": first(view.query, "task_type")}
    chosen = values.get("task_type", "")
    registry = view.app.registry
    if chosen and chosen not in registry:
        raise BadInput(f"no handler for task type {chosen!r} in this worker")
    handler = registry.get(chosen) if chosen else None
    return view.page(
        "enqueue.html",
        status=status,
        flash=flash,
        task_types=registry.names(),
        chosen=chosen,
        fields=payloadform.fields_of(handler.payload) if handler else [],
        default_attempts=handler.max_attempts if handler else None,
        form=values,
        problems=problems or {},
    )


# -- workers ---------------------------------------------------------------------------------


async def workers(view: View) -> Response:
    async with view.reads() as reads:
        rows = await reads.workers(presence.STALE_AFTER_BEATS)
    live = [row for row in rows if not row["stale"]]
    return view.page(
        "workers.html",
        live=live,
        stale=[row for row in rows if row["stale"]],
        totals={
            "workers": len(live),
            "concurrency": sum(row["concurrency"] for row in live),
            "in_flight": sum(row["in_flight"] for row in live),
        },
        stale_after_beats=presence.STALE_AFTER_BEATS,
        heartbeat_s=presence.HEARTBEAT_S,
    )


# -- playbook --------------------------------------------------------------------------------


async def playbook(view: View) -> Response:
    async with view.reads() as reads:
        paused = await reads.paused_queues()
    return view.page("playbook.html", paused=paused)
