"""Jobs as an admin sees and steers them (CLI, HTTP API, dashboard): show, enqueue a manual
run, retry, cancel, run now. Refusals are errors the callers map to their own answers:
NotFound (no such job), Conflict (not in a state the action applies to), InvalidInput and
UnknownTask (a payload or task type the handlers refuse)."""

from __future__ import annotations

from typing import Any

import pydantic

from worker import errors, executor
from worker.admin.store import Actor, AdminStore, Enqueued, JobRequest, Record
from worker.registry import Registry

RULES = {
    "retry": "only a failed or cancelled job can be retried",
    "cancel": "only a pending or running job can be cancelled",
    "run_now": "only a pending job can be run now",
}


def check_payload(registry: Registry, task_type: str, payload: Any, *, force: bool) -> None:
    """The payload must fit the local handler's model; a task type with no handler in this
    process needs `force` (another service may serve it)."""
    if task_type not in registry:
        if force:
            return
        known = ", ".join(registry.names()) or "none"
        raise errors.UnknownTask(
            f"no handler for task type {task_type!r} in this worker (known: {known}); "
            "force it to enqueue a task another service handles"
        )
    try:
        registry.get(task_type).payload.model_validate(payload)
    except pydantic.ValidationError as exc:
        found = executor.problems_of(exc)
        problems = [
            ("/payload" + "".join(f"/{p}" for p in where.split(".") if p), what)
            for where, what in found
        ]
        text = "; ".join(f"{where or 'payload'}: {what}" for where, what in found)
        raise errors.InvalidInput(f"invalid payload for {task_type!r}: {text}", problems) from None


async def enqueue(
    admin: AdminStore,
    registry: Registry,
    actor: Actor,
    job: JobRequest,
    *,
    run_type: str = "manual",
    force: bool = False,
) -> Enqueued:
    """Check the payload, then insert the job (audited as `job_enqueue`)."""
    check_payload(registry, job.task_type, job.payload, force=force)
    return await admin.enqueue(actor, job, run_type=run_type)


async def show(admin: AdminStore, job_id: int, *, runs: int = 20) -> dict[str, Any]:
    """A job and its latest `runs` attempts (job_runs, newest first); NotFound if none."""
    async with admin.reads() as reads:
        job = await reads.job(job_id)
        if job is None:
            raise errors.NotFound(f"no job {job_id}")
        attempts = await reads.job_runs(job_id, runs)
    return {"job": dict(job), "runs": [dict(run) for run in attempts]}


async def retry(admin: AdminStore, actor: Actor, job_id: int) -> Record:
    """A failed or cancelled job back to pending, due now, with one more attempt."""
    try:
        row = await admin.retry_job(actor, job_id)
    except errors.Conflict as exc:  # a live job took the dedupe key meanwhile
        raise errors.Conflict(f"job {job_id} cannot be retried: {exc}") from None
    return row if row is not None else await _refused(admin, job_id, "retry")


async def cancel(admin: AdminStore, actor: Actor, job_id: int) -> Record:
    """Cancel a pending or running job (a running handler stops at its next heartbeat)."""
    row = await admin.cancel_job(actor, job_id)
    return row if row is not None else await _refused(admin, job_id, "cancel")


async def run_now(admin: AdminStore, actor: Actor, job_id: int) -> Record:
    """A pending job becomes due now."""
    row = await admin.run_job_now(actor, job_id)
    return row if row is not None else await _refused(admin, job_id, "run_now")


async def _refused(admin: AdminStore, job_id: int, action: str) -> Record:
    async with admin.reads() as reads:
        row = await reads.job(job_id)
    if row is None:
        raise errors.NotFound(f"no job {job_id}")
    status = str(row["status"])
    raise errors.Conflict(f"job {job_id} is {status}: {RULES[action]}", state=status)
