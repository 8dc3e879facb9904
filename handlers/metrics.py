"""refresh_metrics: refresh the materialized views and call the refresh functions that
settings allow (HANDLERS_METRICS_VIEWS, HANDLERS_METRICS_FUNCTIONS).

A payload may pick some of them by name (naming only views calls no function, and the
other way round); a name outside the allow-lists fails the job at once. Every name is
resolved before anything runs, so a missing view fails the job before any refresh.

A view is refreshed CONCURRENTLY (readers are not blocked) when it is populated and has a
unique index on plain columns, plainly otherwise. Refreshing is idempotent; each refresh is
atomic, so a failure midway leaves every view either refreshed or as it was.
"""

from __future__ import annotations

import pydantic

from handlers import payloads, sqlnames
from handlers import settings as handler_settings
from handlers.settings import SqlName
from worker import errors
from worker.registry import JobContext, JobResult, handler

NOT_CONFIGURED_NOTE = (
    "refresh_metrics: nothing configured (HANDLERS_METRICS_VIEWS, HANDLERS_METRICS_FUNCTIONS)"
)


class RefreshMetricsPayload(payloads.Payload):
    views: list[SqlName] | None = pydantic.Field(default=None, max_length=100)
    """Views to refresh, from HANDLERS_METRICS_VIEWS."""
    functions: list[SqlName] | None = pydantic.Field(default=None, max_length=100)
    """Functions to call, from HANDLERS_METRICS_FUNCTIONS. With neither list given, every
    allowed view and function runs; with one given, the other defaults to none."""


def _pick(asked: list[str] | None, allowed: list[str], kind: str, variable: str) -> list[str]:
    if asked is None:
        return list(allowed)
    refused = [name for name in asked if name not in allowed]
    if refused:
        raise errors.PermanentJobError(
            f"refresh_metrics: {kind} {', '.join(map(repr, refused))} not allowed; "
            f"{variable} allows {allowed or 'none'}"
        )
    return list(dict.fromkeys(asked))


@handler("refresh_metrics", payload=RefreshMetricsPayload, max_attempts=3, timeout_s=1800)
async def refresh_metrics(ctx: JobContext, payload: RefreshMetricsPayload) -> JobResult:
    """Refresh the allowed materialized views and call the allowed refresh functions."""
    conf = handler_settings.get()
    views_asked, functions_asked = payload.views, payload.functions
    if (views_asked is None) != (functions_asked is None):
        views_asked, functions_asked = views_asked or [], functions_asked or []
    view_names = _pick(views_asked, conf.metrics_views, "view(s)", "HANDLERS_METRICS_VIEWS")
    function_names = _pick(
        functions_asked, conf.metrics_functions, "function(s)", "HANDLERS_METRICS_FUNCTIONS"
    )
    if not view_names and not function_names:
        return JobResult(notes=[NOT_CONFIGURED_NOTE])
    views: list[sqlnames.MatView] = []
    for name in view_names:
        view = await sqlnames.matview(ctx.pool, name)
        if view is None:
            raise errors.PermanentJobError(
                f"refresh_metrics: materialized view {name!r} (HANDLERS_METRICS_VIEWS) "
                "does not exist"
            )
        views.append(view)
    functions: list[sqlnames.Function] = []
    for name in function_names:
        func = await sqlnames.function(ctx.pool, name)
        if func is None:
            raise errors.PermanentJobError(
                f"refresh_metrics: function {name}() (HANDLERS_METRICS_FUNCTIONS) does not exist"
            )
        functions.append(func)

    notes: list[str] = []
    rows_per_view: dict[str, int] = {}
    for view in views:
        rows, concurrently = await sqlnames.refresh(ctx.pool, view)
        rows_per_view[view.name] = rows
        notes.append(f"{view.name}: {rows} rows ({'concurrently' if concurrently else 'plain'})")
    rows_per_function: dict[str, int] = {}
    for func in functions:
        rows = await sqlnames.call(ctx.pool, func)
        rows_per_function[func.call] = rows
        notes.append(f"{func.call}: {rows} rows")
    total = sum(rows_per_view.values()) + sum(rows_per_function.values())
    return JobResult(
        rows_affected=total,
        notes=notes,
        data={"views": rows_per_view, "functions": rows_per_function},
    )
