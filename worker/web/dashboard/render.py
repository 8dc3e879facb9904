"""HTML for the dashboard: Jinja2 templates with autoescaping on, filters, inline SVG charts."""

from __future__ import annotations

import json
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2
from starlette.responses import HTMLResponse

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("worker.web.dashboard", "templates"),
    # Every value is escaped unless a template says otherwise (none does): payloads, errors
    # and names are written by users and handlers.
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

CONTENT_TYPE_HTML = "text/html; charset=utf-8"


def when(moment: datetime | None) -> str:
    """A timestamp in UTC, to the second."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def in_zone(moment: datetime | None, tz: str) -> str:
    """A timestamp in the IANA timezone `tz` (a schedule's own), with its abbreviation."""
    if moment is None:
        return "—"
    try:
        local = moment.astimezone(zoneinfo.ZoneInfo(tz))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return when(moment)
    return local.strftime("%Y-%m-%d %H:%M:%S %Z")


def is_utc(moment: datetime, tz: str) -> bool:
    """Whether `moment` in timezone `tz` reads the same as in UTC (offset zero): then one
    rendering says it all."""
    try:
        offset = moment.astimezone(zoneinfo.ZoneInfo(tz)).utcoffset()
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return True  # in_zone() falls back to UTC for a zone it cannot read
    return offset == timedelta(0)


def duration(ms: int | float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1:
        # job_runs.duration_ms is rounded to whole milliseconds: 0 means under one.
        return "<1 ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return age(ms / 1000)


def age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def pretty(value: Any) -> str:
    """JSON, indented, keys sorted; anything JSON cannot say is shown as text."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


_ENV.filters.update(
    when=when, in_zone=in_zone, is_utc=is_utc, duration=duration, age=age, pretty=pretty
)


def html(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    body = _ENV.get_template(template).render(**context)
    return HTMLResponse(body, status_code=status)


# -- charts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    ok_y: float
    ok_height: float
    failed_y: float
    failed_height: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    succeeded: int
    failed: int
    peak: int
    first_label: str
    last_label: str


def bar_chart(
    counts: dict[datetime, tuple[int, int]],
    *,
    end: datetime,
    step: timedelta,
    buckets: int,
    label_format: str,
    width: int = 600,
    height: int = 80,
) -> Chart:
    """Stacked bars (succeeded below, failed on top) for the `buckets` intervals of length
    `step` up to `end` (the current, partial interval included); missing buckets are 0."""
    last = _floor(end, step)
    starts = [last - step * i for i in range(buckets - 1, -1, -1)]
    rows = [(start, *counts.get(start, (0, 0))) for start in starts]
    peak = max((ok + bad for _, ok, bad in rows), default=0)
    scale = (height - 2) / peak if peak else 0.0
    slot = width / buckets
    bars = []
    for index, (start, ok, bad) in enumerate(rows):
        ok_h, bad_h = ok * scale, bad * scale
        bars.append(
            Bar(
                x=round(index * slot, 2),
                width=round(max(slot - 1, 1), 2),
                ok_y=round(height - ok_h, 2),
                ok_height=round(ok_h, 2),
                failed_y=round(height - ok_h - bad_h, 2),
                failed_height=round(bad_h, 2),
                label=f"{start.strftime(label_format)} UTC: {ok} succeeded, {bad} failed",
            )
        )
    return Chart(
        width=width,
        height=height,
        bars=bars,
        succeeded=sum(ok for _, ok, _ in rows),
        failed=sum(bad for _, _, bad in rows),
        peak=peak,
        first_label=starts[0].strftime(label_format),
        last_label=starts[-1].strftime(label_format),
    )


def _floor(moment: datetime, step: timedelta) -> datetime:
    moment = moment.astimezone(UTC)
    if step >= timedelta(hours=1):
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)
