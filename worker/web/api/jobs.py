"""Jobs over HTTP: enqueue, a manual run (optionally waiting for its outcome), drain due
jobs in this process, list and inspect jobs and runs, retry, cancel, run now."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import anyio
from fastapi import APIRouter, Body, Path, Query
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from worker import dispatcher, errors, names, tracing
from worker.admin import jobs as admin_jobs
from worker.admin.store import JobRequest, Record
from worker.web.api import common, models
from worker.web.api.security import Principal
from worker.web.services import DrainRequest, Services

router = APIRouter(route_class=common.ProblemRoute, tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="job_queue.id")]
TaskTypePath = Annotated[str, Path(pattern=f"^{names.TASK_TYPE.pattern}$")]
Cursor = Annotated[int | None, Query(ge=1, le=2**63 - 1, description="ids below this one")]
Limit = Annotated[int, Query(ge=1, le=200)]
Read = Annotated[Principal, common.scope("read")]
Enqueue = Annotated[Principal, common.scope("enqueue")]
Admin = Annotated[Principal, common.scope("admin")]
_WAIT_POLL_S = (0.02, 0.5)  # first and longest wait between looks at the job's runs


def _location(job_id: int) -> dict[str, str]:
    return {"Location": f"/api/v1/jobs/{job_id}"}


@router.post(
    "/jobs",
    status_code=201,
    response_model=models.Enqueued,
    responses=common.responses(
        ok={200: {"model": models.Enqueued, "description": "The dedupe key was taken"}}
    ),
    summary="Enqueue a job",
)
async def enqueue_job(body: models.EnqueueJob, request: Request, caller: Enqueue) -> Response:
    svc = common.services(request)
    job = JobRequest(
        task_type=body.task_type,
        payload=body.payload,
        run_at=body.run_at,
        queue=body.queue,
        priority=body.priority,
        max_attempts=body.max_attempts,
        dedupe_key=body.dedupe_key,
        requested_by=body.user_id,
        trace_context=tracing.from_headers(request.headers),
        depends_on=tuple(body.depends_on),
        on_parent_failure=body.on_parent_failure,
    )
    if job.depends_on and job.dedupe_key is not None:
        problem = "a job with depends_on cannot have a dedupe_key"
        raise errors.InvalidInput(problem, [("/dedupe_key", problem)])
    done = await admin_jobs.enqueue(
        svc.admin, svc.registry, caller.actor, job, run_type="queue", force=body.force
    )
    answer = models.Enqueued(job_id=done.job_id, status=done.status, duplicate=not done.created)
    return JSONResponse(
        answer.model_dump(),
        status_code=201 if done.created else 200,
        headers=_location(done.job_id),
    )


@router.post(
    "/tasks/{task_type}/run",
    status_code=202,
    response_model=models.Enqueued,
    responses=common.responses(
        404, ok={200: {"model": models.RunResult, "description": "The attempt's outcome"}}
    ),
    summary="Run a task now (a manual run), optionally waiting for its outcome",
)
async def run_task(
    task_type: TaskTypePath,
    request: Request,
    caller: Enqueue,
    body: Annotated[models.RunTask | None, Body()] = None,
    wait: Annotated[float | None, Query(gt=0, le=60, description="seconds to wait")] = None,
) -> Response:
    svc = common.services(request)
    if task_type not in svc.registry:
        raise errors.NotFound(f"no handler for task type {task_type!r} in this worker")
    body = body or models.RunTask()
    job = JobRequest(
        task_type=task_type,
        payload=body.payload,
        queue=body.queue,
        priority=body.priority,
        max_attempts=body.max_attempts,
        requested_by=body.user_id,
        trace_context=tracing.from_headers(request.headers),
    )
    done = await admin_jobs.enqueue(svc.admin, svc.registry, caller.actor, job)
    if wait is not None:
        run = await _first_run(svc, done.job_id, wait)
        if run is not None:
            return JSONResponse(_contract(task_type, done.job_id, run), status_code=200)
    pending = models.Enqueued(job_id=done.job_id, status=done.status)
    return JSONResponse(pending.model_dump(), status_code=202, headers=_location(done.job_id))


async def _first_run(svc: Services, job_id: int, timeout_s: float) -> Record | None:
    """The job's first attempt once it is written, or None after `timeout_s`. A job run by
    this process wakes the wait at once; another replica's is seen by polling."""
    event = svc.telemetry.watch(job_id) if svc.telemetry is not None else None
    delay_s, longest_s = _WAIT_POLL_S
    try:
        with anyio.move_on_after(timeout_s):
            while True:
                async with svc.admin.reads() as reads:
                    run = await reads.first_run(job_id)
                if run is not None:
                    return run
                with anyio.move_on_after(delay_s):
                    if event is not None:
                        await event.wait()
                    else:
                        await anyio.sleep(delay_s)
                delay_s = min(delay_s * 2, longest_s)
    finally:
        if svc.telemetry is not None:
            svc.telemetry.unwatch(job_id)
    return None


def _contract(task_type: str, job_id: int, run: Record) -> dict[str, Any]:
    notes: str | None = run["notes"]
    result = models.RunResult(
        ok=run["status"] == "succeeded",
        ran=task_type,
        started_at=run["started_at"],
        finished_at=run["finished_at"],
        rows_affected=run["rows_affected"],
        notes=notes.split("\n") if notes else [],
        job_id=job_id,
        status=run["status"],
        error=run["error"],
    )
    return result.model_dump(mode="json")


@router.post(
    "/drain",
    response_model=models.Drained,
    responses=common.responses(),
    summary="Process up to max_jobs due jobs in this process, as --once does",
)
async def drain(body: models.DrainJobs, request: Request, caller: Admin) -> models.Drained:
    svc = common.services(request)
    unknown = sorted(set(body.task_types or ()) - set(svc.registry.names()))
    if unknown:
        raise errors.InvalidInput(
            f"no handler in this worker for {', '.join(unknown)}",
            [("/task_types", f"not served here: {', '.join(unknown)}")],
        )
    summary = await svc.drain(
        DrainRequest(
            max_jobs=body.max_jobs,
            task_types=body.task_types,
            queues=body.queues,
            max_seconds=body.max_seconds,
        )
    )
    totals = {k: v for k, v in summary.as_dict().items() if k != "results"}
    await svc.admin.audit(caller.actor, "jobs_drain", "jobs", {**body.model_dump(), **totals})
    return _drained(summary)


def _drained(summary: dispatcher.Summary) -> models.Drained:
    data = summary.as_dict()
    return models.Drained(
        **{k: v for k, v in data.items() if k != "results"},
        results=[models.DrainResult(**entry) for entry in data["results"]],
    )


@router.get(
    "/jobs", response_model=models.JobList, responses=common.responses(), summary="List jobs"
)
async def list_jobs(
    request: Request,
    caller: Read,
    *,
    status: Annotated[models.JobStatus | None, Query()] = None,
    queue: Annotated[str | None, Query(pattern=f"^{names.QUEUE.pattern}$")] = None,
    task_type: Annotated[str | None, Query(pattern=f"^{names.TASK_TYPE.pattern}$")] = None,
    q: Annotated[
        models.Text | None,
        Query(min_length=1, max_length=200, description="text in the last error"),
    ] = None,
    before: Cursor = None,
    limit: Limit = 50,
) -> models.JobList:
    async with common.services(request).admin.reads() as reads:
        rows = await reads.jobs(
            status=status, queue=queue, task_type=task_type, text=q, before=before, limit=limit + 1
        )
    return models.JobList(
        jobs=[models.JobSummary(**dict(row)) for row in rows[:limit]],
        next_cursor=int(rows[limit - 1]["id"]) if len(rows) > limit else None,
    )


@router.get(
    "/jobs/{job_id}",
    response_model=models.JobDetail,
    responses=common.responses(404),
    summary="A job and its attempts",
)
async def get_job(
    job_id: JobId, request: Request, caller: Read, runs: Limit = 20
) -> models.JobDetail:
    shown = await admin_jobs.show(common.services(request).admin, job_id, runs=runs)
    job = dict(shown["job"])
    job["payload"] = models.json_value(job["payload"])
    job["result"] = models.json_value(job["result"])
    return models.JobDetail(
        job=models.Job(**{k: v for k, v in job.items() if k in models.Job.model_fields}),
        runs=[models.Run(**run) for run in shown["runs"]],
        parents=[models.JobLink(**link) for link in shown["parents"]],
        children=[models.JobLink(**link) for link in shown["children"]],
    )


async def _changed(action: str, row: Record, request: Request) -> models.JobChanged:
    async with common.services(request).admin.reads() as reads:
        job = await reads.job(int(row["id"]))
    status = str(job["status"]) if job is not None else "unknown"
    return models.JobChanged(job_id=int(row["id"]), action=action, status=status)


@router.post(
    "/jobs/{job_id}/retry",
    response_model=models.JobChanged,
    responses=common.responses(404, 409),
    summary="Retry a failed or cancelled job",
)
async def retry_job(job_id: JobId, request: Request, caller: Admin) -> models.JobChanged:
    row = await admin_jobs.retry(common.services(request).admin, caller.actor, job_id)
    return await _changed("retry", row, request)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=models.JobChanged,
    responses=common.responses(404, 409),
    summary="Cancel a waiting, pending or running job (and its waiting children)",
)
async def cancel_job(job_id: JobId, request: Request, caller: Admin) -> models.JobChanged:
    row = await admin_jobs.cancel(common.services(request).admin, caller.actor, job_id)
    return await _changed("cancel", row, request)


@router.post(
    "/jobs/{job_id}/run-now",
    response_model=models.JobChanged,
    responses=common.responses(404, 409),
    summary="Make a pending job due now",
)
async def run_job_now(job_id: JobId, request: Request, caller: Admin) -> models.JobChanged:
    row = await admin_jobs.run_now(common.services(request).admin, caller.actor, job_id)
    return await _changed("run_now", row, request)


@router.get(
    "/runs",
    response_model=models.RunList,
    responses=common.responses(),
    summary="The latest attempts (job_runs), newest first",
)
async def list_runs(
    request: Request,
    caller: Read,
    *,
    status: Annotated[models.RunStatus | None, Query()] = None,
    run_type: Annotated[models.RunType | None, Query()] = None,
    job_key: Annotated[
        str | None, Query(pattern=f"^{names.TASK_TYPE.pattern}$", description="task type")
    ] = None,
    user_id: UUID | None = None,
    before: Cursor = None,
    limit: Limit = 50,
) -> models.RunList:
    async with common.services(request).admin.reads() as reads:
        rows = await reads.runs(
            status=status,
            run_type=run_type,
            task_type=job_key,
            user_id=user_id,
            before=before,
            limit=limit + 1,
        )
    return models.RunList(
        runs=[models.RunRow(**dict(row)) for row in rows[:limit]],
        next_cursor=int(rows[limit - 1]["id"]) if len(rows) > limit else None,
    )
