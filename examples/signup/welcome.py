"""An app's own handler, written outside this repository's handlers/: a welcome mail
after sign-up. The mail API is a sync client here, so the handler is a plain `def` (it runs
in the worker's thread pool)."""

from __future__ import annotations

import asyncpg
import pydantic

from worker import errors
from worker.registry import JobContext, JobResult, handler

SENT: list[str] = []
"""Stands in for the mail provider: the addresses mailed, in order."""


class WelcomeMail(pydantic.BaseModel):
    user_id: int
    email: str


@handler("example_welcome_mail", payload=WelcomeMail, max_attempts=3, timeout_s=10)
def send_welcome_mail(ctx: JobContext, payload: WelcomeMail) -> JobResult:
    if not payload.email.endswith(".test"):
        raise errors.PermanentJobError(f"user {payload.user_id}: no test address")
    SENT.append(payload.email)
    return JobResult(rows_affected=1, notes=[f"welcomed user {payload.user_id}"])


async def sign_up(conn: asyncpg.Connection, user_id: int, email: str) -> int:
    """The app's sign-up path: the mail job is written in the sign-up's transaction (it
    runs once that commits, and never if it rolls back). Returns the job's id."""
    enqueued = await send_welcome_mail.enqueue(
        conn, WelcomeMail(user_id=user_id, email=email), dedupe_key=f"welcome:{user_id}"
    )
    return enqueued.job_id
