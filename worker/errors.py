"""Every exception the worker defines.

    WorkerError
    ├── ConfigError          a setting is missing or invalid; the worker stops at start
    ├── DatabaseUnavailable  the database cannot be reached at start
    ├── DatabaseFault        the database refuses the worker until the operator acts (exit 3)
    ├── MigrationError       the schema cannot be brought up to date
    ├── UnknownTask          no handler is registered under a task type
    ├── DuplicateHandler     a task type was registered twice
    ├── ScheduleError        a schedule is invalid (cron, timezone, task type...) or unknown
    ├── InvalidInput         an admin's input is refused (a payload its handler rejects, ...)
    ├── NotFound             an admin action names a job, schedule or queue that does not exist
    ├── Conflict             an admin action does not apply to the object's current state
    ├── PermissionDenied     the database role may not do what was asked
    └── JobError             raised by or on behalf of a handler
        ├── PermanentJobError    never retried: bad payload, unknown entity
        ├── RetryLater           retry after `delay_s` seconds (rate limits, not-yet-ready)
        └── JobTimeout           the handler ran past its timeout (retried)

Handlers raise `PermanentJobError` or `RetryLater`; any other exception is retried with
exponential backoff until the job's attempts run out.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""


class ConfigError(WorkerError):
    """A setting is missing or invalid."""


class DatabaseUnavailable(WorkerError):
    """The database could not be reached within WORKER_CONNECT_TIMEOUT_S."""


class DatabaseFault(WorkerError):
    """A running loop met a database error only the operator can mend: a table, column or
    function missing (the schema is not this version's), a permission revoked from the
    worker's role. The daemon stops with this one line and exit code 3."""

    def __init__(self, message: str, *, loop: str, sqlstate: str) -> None:
        super().__init__(message)
        self.loop = loop
        self.sqlstate = sqlstate


class MigrationError(WorkerError):
    """The database schema cannot be migrated (or was changed behind our back)."""


class UnknownTask(WorkerError):
    """No handler is registered under this task type."""


class DuplicateHandler(WorkerError):
    """A task type was registered twice."""


class ScheduleError(WorkerError):
    """A schedule was refused (invalid cron expression, timezone, task type...) or does not
    exist. The message is one line, fit to show an admin."""


class InvalidInput(WorkerError):
    """An admin's input is refused before anything is written: a payload the handler's model
    rejects, a task type no handler serves. `problems` holds (location, message) pairs, the
    location a JSON pointer into the request (`/payload/user_id`)."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class NotFound(WorkerError):
    """An admin action (CLI, HTTP API, dashboard) names something that does not exist."""


class Conflict(WorkerError):
    """An admin action does not apply to the current state (retrying a running job,
    cancelling a finished one); nothing was changed. `state` is what the object is now."""

    def __init__(self, message: str, *, state: str | None = None) -> None:
        super().__init__(message)
        self.state = state


class PermissionDenied(WorkerError):
    """The database role (or the API caller) may not do this: an admin command run as the
    worker's least-privilege role, a token without the scope."""


class JobError(WorkerError):
    """Raised by a handler, or on its behalf, to steer what happens to the job."""


class PermanentJobError(JobError):
    """The job can never succeed (bad payload, unknown entity): fail it now, no retry."""


class RetryLater(JobError):
    """Try again after `delay_s` seconds; the attempt counts toward max_attempts.

    `hold_task_type`: the wait applies to every job of this task type, on every worker (a
    provider answered 429 with Retry-After: the next job would get the same answer)."""

    def __init__(
        self, message: str = "retry later", *, delay_s: float, hold_task_type: bool = False
    ) -> None:
        if delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        super().__init__(message)
        self.delay_s = delay_s
        self.hold_task_type = hold_task_type


class JobTimeout(JobError):
    """The handler ran longer than its timeout."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"handler timed out after {timeout_s:g}s")
        self.timeout_s = timeout_s
