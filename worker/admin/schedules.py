"""Schedules as an admin manages them (CLI, HTTP API, dashboard): list, create, change,
pause, resume, re-time, delete, run now, history. Every change goes through the
`job_schedule_*` SQL functions (which check every value) and is audited."""

from __future__ import annotations

from typing import Any

from worker import errors, executor, scheduler
from worker.admin.store import Actor, AdminStore, Record
from worker.registry import Registry


def check_handler(registry: Registry, task_type: str, payload: Any, *, force: bool) -> None:
    """The payload must fit the local handler's model; a task type with no local handler
    needs `force` (it may be served by another service)."""
    if task_type in registry:
        try:
            executor.parse_payload(registry.get(task_type), payload)
        except errors.PermanentJobError as exc:
            raise errors.ScheduleError(str(exc)) from None
    elif not force:
        known = ", ".join(registry.names()) or "none"
        raise errors.ScheduleError(
            f"no handler for task type '{task_type}' in this worker (known: {known}); "
            "force it to schedule a task another service handles"
        )


def as_dict(row: Record, registry: Registry) -> dict[str, Any]:
    return {**dict(row), "served_here": row["task_type"] in registry}


async def list_all(admin: AdminStore, registry: Registry) -> list[dict[str, Any]]:
    """Every schedule with its next run and last result (job_schedules_list())."""
    async with admin.reads() as reads:
        rows = await reads.schedules()
    return [as_dict(row, registry) for row in rows]


async def get(admin: AdminStore, registry: Registry, name: str) -> dict[str, Any]:
    for row in await list_all(admin, registry):
        if row["name"] == name:
            return row
    raise errors.NotFound(f"no schedule named '{name}'")


async def create(
    admin: AdminStore,
    registry: Registry,
    actor: Actor,
    name: str,
    *,
    force: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """Create a schedule (source 'admin') from ScheduleSpec's fields; ScheduleError if it
    is invalid or the name is taken."""
    spec = scheduler.spec(name=name, **fields)
    check_handler(registry, spec.task_type, spec.payload, force=force)
    row = await admin.create_schedule(actor, spec.to_def("admin"))
    return as_dict(row, registry)


async def update(
    admin: AdminStore,
    registry: Registry,
    actor: Actor,
    name: str,
    changes: dict[str, Any],
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Change some fields of a schedule (a new cron or timezone re-times it from now);
    `active` pauses or resumes it."""
    changes = dict(changes)
    active = changes.pop("active", None)
    problem = scheduler.schedule_problem(changes)
    if problem is not None:
        raise errors.ScheduleError(problem)
    if "task_type" in changes or "payload" in changes:
        current = await get(admin, registry, name)
        check_handler(
            registry,
            changes.get("task_type", current["task_type"]),
            changes.get("payload", current["payload"]),
            force=force,
        )
    row: Record | None = None
    if changes:
        row = await admin.update_schedule(actor, name, changes)
        if row is None:
            raise errors.NotFound(f"no schedule named '{name}'")
    if active is not None:
        return await set_active(admin, registry, actor, name, bool(active))
    if row is None:
        raise errors.ScheduleError("nothing to change")
    return as_dict(row, registry)


async def set_active(
    admin: AdminStore, registry: Registry, actor: Actor, name: str, active: bool
) -> dict[str, Any]:
    """Pause or resume a schedule; a resumed one does not run the ticks it missed."""
    row = await admin.toggle_schedule(actor, name, active)
    if row is None:
        raise errors.NotFound(f"no schedule named '{name}'")
    return as_dict(row, registry)


async def retime(
    admin: AdminStore, registry: Registry, actor: Actor, name: str, *, cron: str, timezone: str
) -> dict[str, Any]:
    """A new cron (and timezone): the next tick counts from now."""
    row = await admin.retime_schedule(actor, name, cron, timezone)
    if row is None:
        raise errors.NotFound(f"no schedule named '{name}'")
    return as_dict(row, registry)


async def remove(admin: AdminStore, actor: Actor, name: str) -> None:
    """Delete a schedule (its jobs and history stay)."""
    if not await admin.delete_schedule(actor, name):
        raise errors.NotFound(f"no schedule named '{name}'")


async def run_now(admin: AdminStore, actor: Actor, name: str) -> Record:
    """One manual run of the schedule, now; the new job's row."""
    row = await admin.run_schedule_now(actor, name)
    if row is None:
        raise errors.NotFound(f"no schedule named '{name}'")
    return row


async def history(admin: AdminStore, name: str, limit: int) -> list[dict[str, Any]]:
    """The newest job_runs rows of a schedule's jobs, newest first."""
    async with admin.reads() as reads:
        return [dict(row) for row in await reads.schedule_runs(name, limit)]
