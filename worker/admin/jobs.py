"""Jobs as an admin sees and steers them (CLI, HTTP API, dashboard): show, enqueue a manual
run, retry, cancel, run now. Refusals are errors the callers map to their own answers:
NotFound (no such job), Conflict (not in a state the action applies to), InvalidInput and
UnknownTask (a payload or task type the handlers refuse)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import pydantic
import structlog

from worker import errors, executor, values
from worker.admin.store import Actor, AdminStore, Enqueued, JobFilter, JobRequest, Record
from worker.registry import Registry

log = structlog.get_logger("worker.admin")

RULES = {
    "retry": "only a failed or cancelled job can be retried",
    "cancel": "only a waiting, pending or running job can be cancelled",
    "run_now": "only a pending job can be run now",
    "delete": "only a failed or cancelled job can be deleted",
}
BULK_STATES = {
    "retry": ("failed", "cancelled"),
    "cancel": ("waiting", "pending", "running"),
    "delete": ("failed", "cancelled"),
}
"""The states each bulk action applies to: the single actions' guards."""
BULK_BATCH = 1000
"""Jobs per transaction of a bulk action: each batch holds its row locks for a few ms."""


def check_payload(registry: Registry, task_type: str, payload: Any, *, force: bool) -> None:
    """The payload must fit the local handler's model; a task type with no handler in this
    process needs `force` (another service may serve it)."""
    if task_type not in registry:
        if force:
            return
        known = ", ".join(registry.names()) or "none"
        raise errors.UnknownTask(
            f"no handler for task type {values.shown(task_type)} in this worker (known: {known}); "
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


SHOWN_CHILDREN = 100
"""Children listed with a job (a group's parent may have many more)."""


async def show(admin: AdminStore, job_id: int, *, runs: int = 20) -> dict[str, Any]:
    """A job, its latest `runs` attempts (job_runs, newest first), and the jobs it depends
    on and that depend on it (the first SHOWN_CHILDREN), with their states; NotFound if
    none."""
    async with admin.reads() as reads:
        job = await reads.job(job_id)
        if job is None:
            raise errors.NotFound(f"no job {job_id}")
        attempts = await reads.job_runs(job_id, runs)
        parents = await reads.job_parents(job_id)
        children = await reads.job_children(job_id, SHOWN_CHILDREN)
    return {
        "job": dict(job),
        "runs": [dict(run) for run in attempts],
        "parents": [dict(p) for p in parents],
        "children": [dict(c) for c in children],
    }


async def retry(admin: AdminStore, actor: Actor, job_id: int) -> Record:
    """A failed or cancelled job back to pending, due now, with one more attempt."""
    try:
        row = await admin.retry_job(actor, job_id)
    except errors.Conflict as exc:  # a live job took the dedupe key meanwhile
        raise errors.Conflict(f"job {job_id} cannot be retried: {exc}") from None
    return row if row is not None else await _refused(admin, job_id, "retry")


async def cancel(admin: AdminStore, actor: Actor, job_id: int) -> Record:
    """Cancel a waiting, pending or running job (a running handler stops at its next
    heartbeat); its waiting children are cancelled too, unless they run anyway."""
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


async def delete(admin: AdminStore, actor: Actor, job_id: int) -> Record:
    """A failed or cancelled job out of job_queue (its attempts stay in job_runs)."""
    row = await admin.delete_job(actor, job_id)
    return row if row is not None else await _refused(admin, job_id, "delete")


# -- bulk actions by filter ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BulkPlan:
    """What a bulk action would change now: per state, how many jobs match; `max_id` bounds
    the action to the jobs counted (none enqueued later)."""

    action: str
    where: JobFilter
    counts: dict[str, int]
    max_id: int | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class BulkResult:
    bulk_id: str
    """The audit rows' target is `bulk:<bulk_id>`, one row per batch."""
    changed: int
    batches: int
    expected: int


def bulk_states(action: str, status: str | None) -> tuple[str, ...]:
    """The states `action` applies to among those the filter allows (none: nothing to do)."""
    if action not in BULK_STATES:
        raise errors.InvalidInput(f"unknown bulk action {values.shown(action)}")
    states = BULK_STATES[action]
    return states if status is None else tuple(s for s in states if s == status)


async def bulk_plan(admin: AdminStore, action: str, where: JobFilter) -> BulkPlan:
    """Count what `action` would change: each state through its own partial index."""
    counts: dict[str, int] = {}
    highest: list[int] = []
    async with admin.reads() as reads:
        for status in bulk_states(action, where.status):
            row = await reads.bulk_count(status, where, None)
            counts[status] = int(row["jobs"])
            if row["max_id"] is not None:
                highest.append(int(row["max_id"]))
    return BulkPlan(action, where, counts, max(highest) if highest else None)


async def bulk_apply(
    admin: AdminStore,
    actor: Actor,
    action: str,
    where: JobFilter,
    *,
    max_id: int,
    expected: int,
    batch_size: int = BULK_BATCH,
) -> BulkResult:
    """Apply `action` to the jobs a plan counted: ids up to `max_id`, still in a state the
    action applies to, and never more than `expected` (the count the operator confirmed).
    Batches of `batch_size`, newest first, each committed with its audit row; a job that
    changed state meanwhile, or is locked right now, is left as it is."""
    bulk_id = secrets.token_hex(6)
    changed = batches = 0
    for status in bulk_states(action, where.status):
        before: int | None = None
        while changed < expected:
            batch = await admin.bulk_batch(
                actor,
                action,
                bulk_id,
                where,
                status,
                max_id=max_id,
                before=before,
                limit=min(batch_size, expected - changed),
            )
            if batch.jobs == 0:
                break
            changed += batch.jobs
            batches += 1
            before = batch.lowest_id
            log.info(
                "admin_bulk_batch",
                bulk_id=bulk_id,
                action=action,
                status=status,
                batch=batches,
                jobs=batch.jobs,
                changed=changed,
                expected=expected,
                actor=actor.name,
            )
    log.info("admin_bulk_done", bulk_id=bulk_id, action=action, changed=changed, batches=batches)
    return BulkResult(bulk_id, changed, batches, expected)
