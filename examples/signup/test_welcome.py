"""How an app tests its own handler with worker.testing: the `job_db` fixture (a migrated
throwaway database; TEST_DATABASE_URL or an embedded PostgreSQL), `run_job` through the
real worker, `captured` for what the app's code enqueued."""

from __future__ import annotations

import pydantic
import pytest

from examples.signup import welcome
from worker import errors
from worker.testing import JobDatabase


async def test_a_welcome_mail_is_sent_once(job_db: JobDatabase) -> None:
    welcome.SENT.clear()
    ran = await job_db.run_job(welcome.send_welcome_mail, {"user_id": 1, "email": "a@b.test"})
    assert ran.status == "succeeded"
    assert ran.last_run["notes"] == "welcomed user 1"
    assert welcome.SENT == ["a@b.test"]


async def test_an_address_it_cannot_mail_fails_the_job_at_once(job_db: JobDatabase) -> None:
    ran = await job_db.run_job(
        "example_welcome_mail", {"user_id": 2, "email": "x@y"}, max_attempts=3
    )
    assert (ran.status, len(ran.runs)) == ("failed", 1)
    assert ran.error == "PermanentJobError: user 2: no test address"


async def test_sign_up_enqueues_the_mail_in_its_transaction(job_db: JobDatabase) -> None:
    async with job_db.captured() as jobs, job_db.pool.acquire() as conn, conn.transaction():
        await welcome.sign_up(conn, 3, "c@d.test")
    [job] = jobs
    assert (job.task_type, job.payload, job.status) == (
        "example_welcome_mail",
        {"user_id": 3, "email": "c@d.test"},
        "pending",
    )
    # A rolled-back sign-up leaves nothing behind.
    async with job_db.captured() as jobs, job_db.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await welcome.sign_up(conn, 4, "e@f.test")
        await tx.rollback()
    assert jobs == []


async def test_a_payload_the_model_refuses_is_refused_at_the_call_site(
    job_db: JobDatabase,
) -> None:
    async with job_db.captured() as jobs, job_db.pool.acquire() as conn:
        with pytest.raises(pydantic.ValidationError, match="user_id"):
            await welcome.send_welcome_mail.enqueue(conn, {"email": "no-id@x.test"})
    assert jobs == []


async def test_calling_the_handler_directly_validates_its_payload(job_db: JobDatabase) -> None:
    result = await job_db.call(welcome.send_welcome_mail, {"user_id": 5, "email": "g@h.test"})
    assert result.rows_affected == 1
    with pytest.raises(errors.PermanentJobError, match="user_id"):
        await job_db.call(welcome.send_welcome_mail, {"email": "g@h.test"})
