"""The HTTP API's request and response bodies (pydantic). Requests refuse unknown fields and
anything PostgreSQL could not store (text with NUL characters or lone surrogates, NaN)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from worker import names, store, values

JobStatus = Literal["waiting", "pending", "running", "succeeded", "failed", "cancelled"]
RunStatus = Literal["succeeded", "retry", "failed", "cancelled", "rescued"]
RunType = Literal["queue", "cron", "manual"]


def _storable_text(value: str) -> str:
    problem = values.text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _storable_json(value: dict[str, Any]) -> dict[str, Any]:
    problem = values.jsonb_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Text = Annotated[str, AfterValidator(_storable_text)]
Payload = Annotated[dict[str, Any], AfterValidator(_storable_json)]
DedupeKey = Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_storable_text)]
Reason = Annotated[str, Field(max_length=500), AfterValidator(_storable_text)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldProblem(BaseModel):
    """One refused part of the request: `pointer` (a JSON pointer into the body, such as
    `#/payload/user_id`) or `parameter` (a query or path parameter)."""

    detail: str
    pointer: str | None = None
    parameter: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldProblem] | None = None


# -- jobs ---------------------------------------------------------------------------------------


class EnqueueJob(Request):
    task_type: names.TaskType
    payload: Payload = {}
    """Checked against the handler's payload model when this worker has the handler."""
    run_at: AwareDatetime | None = None
    """When it becomes due (default: now)."""
    queue: names.QueueName = "default"
    priority: int = Field(default=0, ge=-1000, le=1000)
    """Lower runs first."""
    max_attempts: int | None = Field(default=None, ge=1, le=1000)
    """Default: the handler's."""
    dedupe_key: DedupeKey | None = None
    """At most one live (pending or running) job per key: a second enqueue returns it."""
    user_id: UUID | None = None
    """Who asked for it (job_queue.requested_by); default: the caller, for a signed-in user."""
    force: bool = False
    """Enqueue a task type no handler in this worker serves (another service may)."""
    depends_on: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(
        default_factory=list, max_length=1000
    )
    """Ids of jobs that must succeed first (they must exist). Until then the job is
    `waiting`; not with a dedupe_key."""
    on_parent_failure: Literal["cancel", "run"] = "cancel"
    """When a parent fails for good or is cancelled: cancel this job too, or run it once
    every parent is final."""


class Enqueued(BaseModel):
    job_id: int
    status: str
    duplicate: bool = False
    """True: a live job already held the dedupe key; `job_id` is that job."""


class RunTask(Request):
    """A manual run: the payload, and who asked for it."""

    user_id: UUID | None = None
    """Who asked for the run (job_runs.user_id); default: the caller, for a signed-in user."""
    payload: Payload = {}
    queue: names.QueueName = "default"
    priority: int = Field(default=0, ge=-1000, le=1000)
    max_attempts: int | None = Field(default=None, ge=1, le=1000)


class RunResult(BaseModel):
    """The job contract: what one attempt of a manual run did."""

    ok: bool
    ran: str
    """The task type."""
    started_at: datetime | None
    finished_at: datetime | None
    rows_affected: int | None
    notes: list[str]
    job_id: int
    status: str
    """The attempt's outcome: succeeded, retry, failed, cancelled or rescued."""
    error: str | None


class JobSummary(BaseModel):
    id: int
    queue: str
    task_type: str
    status: str
    priority: int
    attempts: int
    max_attempts: int | None
    run_type: str
    run_at: datetime
    created_at: datetime
    finished_at: datetime | None
    error_excerpt: str | None


class JobList(BaseModel):
    jobs: list[JobSummary]
    next_cursor: int | None
    """Pass as `before` for the next (older) page; null on the last page."""


class Run(BaseModel):
    id: int
    status: str
    reason: str | None
    attempt: int
    run_type: str
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    worker_id: str | None
    user_id: UUID | None
    rows_affected: int | None
    notes: str | None
    error: str | None


class Job(BaseModel):
    id: int
    queue: str
    task_type: str
    payload: Any
    status: str
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int | None
    last_error: str | None
    dedupe_key: str | None
    locked_by: str | None
    lease_expires_at: datetime | None
    run_type: str
    schedule_name: str | None
    requested_by: UUID | None
    result: Any
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class JobLink(BaseModel):
    """A parent or child of a job, and its state."""

    id: int
    task_type: str
    status: str
    finished_at: datetime | None


class JobDetail(BaseModel):
    job: Job
    runs: list[Run]
    """The latest attempts, newest first."""
    parents: list[JobLink] = []
    """The jobs it depends on (depends_on)."""
    children: list[JobLink] = []
    """The jobs that depend on it (the first 100)."""


class JobChanged(BaseModel):
    job_id: int
    action: str
    """retry, cancel or run_now."""
    status: str
    """The job's status after the change."""


class DrainJobs(Request):
    max_jobs: int = Field(default=100, ge=1, le=10_000)
    task_types: list[names.TaskType] | None = Field(default=None, min_length=1, max_length=100)
    """Only these task types (default: every one this worker serves)."""
    queues: list[names.QueueName] | None = Field(default=None, min_length=1, max_length=100)
    """Only these queues (default: WORKER_QUEUES)."""
    max_seconds: float = Field(default=30.0, gt=0, le=600)
    """Claim no new job after this long; jobs already started finish."""


class DrainResult(BaseModel):
    job_id: int
    task_type: str
    attempt: int
    outcome: str
    reason: str
    duration_ms: int
    rows_affected: int | None
    notes: list[str]
    error: str | None


class Drained(BaseModel):
    processed: int
    succeeded: int
    failed: int
    retried: int
    cancelled: int
    lease_lost: int
    results: list[DrainResult]


# -- schedules ----------------------------------------------------------------------------------


class NewSchedule(Request):
    name: names.ScheduleName
    cron: Annotated[str, Field(min_length=1, max_length=200)]
    """5 fields (minute hour day-of-month month day-of-week) or @hourly, @daily, ..."""
    task_type: names.TaskType
    timezone: Annotated[str, Field(min_length=1, max_length=100)] = "UTC"
    payload: Payload = {}
    queue: names.QueueName = "default"
    priority: int = Field(default=0, ge=-1000, le=1000)
    max_attempts: int | None = Field(default=None, ge=1, le=1000)
    missed: Literal["latest", "skip", "all"] = "latest"
    active: bool = True
    force: bool = False
    """Schedule a task type no handler in this worker serves (another service may)."""


class ScheduleChanges(Request):
    cron: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    timezone: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    task_type: names.TaskType | None = None
    payload: Payload | None = None
    queue: names.QueueName | None = None
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    max_attempts: int | None = Field(default=None, ge=1, le=1000)
    missed: Literal["latest", "skip", "all"] | None = None
    active: bool | None = None
    """False pauses the schedule, true resumes it (missed ticks are not run)."""
    force: bool = False


class Schedule(BaseModel):
    name: str
    cron: str
    timezone: str
    task_type: str
    payload: Any
    queue: str
    priority: int
    max_attempts: int | None
    missed: str
    active: bool
    paused_by: str | None
    source: str
    last_tick_at: datetime | None
    next_tick_at: datetime | None
    last_job_id: int | None
    last_job_status: str | None
    last_run_status: str | None
    last_run_reason: str | None
    last_run_finished_at: datetime | None
    last_run_error: str | None
    served_here: bool
    """Whether this worker has a handler for the task type."""


class ScheduleRun(BaseModel):
    id: int
    job_id: int
    attempt: int
    status: str
    reason: str | None
    run_type: str
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    rows_affected: int | None
    notes: str | None
    error: str | None


# -- queues and runs ----------------------------------------------------------------------------


class Queue(BaseModel):
    queue: str
    pending: int
    running: int
    oldest_due_age_s: float | None
    paused: bool
    paused_at: datetime | None
    paused_by: str | None
    reason: str | None


class PauseQueue(Request):
    reason: Reason | None = None


class QueueChanged(BaseModel):
    queue: str
    paused: bool
    changed: bool
    """False: it already was in that state."""


class RunRow(BaseModel):
    id: int
    job_id: int
    job_key: str
    queue: str
    run_type: str
    status: str
    reason: str | None
    attempt: int
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    rows_affected: int | None
    user_id: UUID | None
    worker_id: str | None
    schedule_name: str | None
    error_excerpt: str | None
    actor: str | None
    """Who started a manual run, when it was started through the CLI, the API or the
    dashboard."""


class RunList(BaseModel):
    runs: list[RunRow]
    next_cursor: int | None


def json_value(value: Any) -> Any:
    """A stored JSON value for a response: one Python cannot decode is shown as text."""
    if isinstance(value, store.UndecodableJson):
        return str(value)
    return value
