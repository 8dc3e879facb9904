"""The dashboard's actions (POST; the Dashboard checked the session and the CSRF token).

Each one is an admin use case (worker.admin): a guarded change plus its audit row in one
transaction. A job in the wrong state changes nothing: 409 and the job page saying why. Bad
input: 400 and the page again with the message, nothing changed. Success: 303 back with a
flash.
"""

from __future__ import annotations

from starlette.responses import Response

from worker import errors
from worker.admin import jobs, queues, schedules
from worker.web.dashboard import pages
from worker.web.dashboard.view import BadInput, Flash, View, first, json_object, name, text

# -- jobs --------------------------------------------------------------------------------------


async def retry_job(view: View) -> Response:
    job_id = view.int_param("id")
    try:
        row = await jobs.retry(view.app.admin, view.actor, job_id)
    except (errors.NotFound, errors.Conflict) as exc:
        return await _refused(view, exc, "retried")
    return view.redirect(
        f"/dashboard/jobs/{job_id}",
        f"Job {job_id} is pending again, due now (it may use attempt {row['attempts'] + 1} "
        f"of {row['max_attempts']}).",
    )


async def cancel_job(view: View) -> Response:
    job_id = view.int_param("id")
    try:
        row = await jobs.cancel(view.app.admin, view.actor, job_id)
    except (errors.NotFound, errors.Conflict) as exc:
        return await _refused(view, exc, "cancelled")
    message = f"Job {job_id} cancelled."
    if row["previous_status"] == "running":
        message += (
            " It was running: its worker stops the handler at its next heartbeat, and whatever"
            " the handler returns is discarded."
        )
    return view.redirect(f"/dashboard/jobs/{job_id}", message)


async def run_job_now(view: View) -> Response:
    job_id = view.int_param("id")
    try:
        await jobs.run_now(view.app.admin, view.actor, job_id)
    except (errors.NotFound, errors.Conflict) as exc:
        return await _refused(view, exc, "run now")
    return view.redirect(f"/dashboard/jobs/{job_id}", f"Job {job_id} is due now.")


async def _refused(view: View, exc: errors.WorkerError, what: str) -> Response:
    """404 for a job that does not exist; 409 and its page for one in the wrong state."""
    job_id = view.int_param("id")
    if isinstance(exc, errors.NotFound):
        return pages.not_found(view, f"There is no job {job_id}.")
    message = f"Nothing changed: {exc}."
    if isinstance(exc, errors.Conflict) and exc.state is not None:
        message = f"Nothing changed: job {job_id} is {exc.state} and cannot be {what}."
    return await pages.job(view, status=409, flash=Flash("error", message))


# -- schedules -------------------------------------------------------------------------------


async def create_schedule(view: View) -> Response:
    form = view.form
    fields = {key: first(form, key) for key in ("name", "cron", "timezone", "task_type", "payload")}
    fields["queue"] = first(form, "queue") or "default"
    fields["timezone"] = fields["timezone"] or "UTC"
    try:
        payload = json_object(form, "payload")
        row = await schedules.create(
            view.app.admin,
            view.app.registry,
            view.actor,
            fields["name"],
            force=True,  # the dashboard may schedule a task another service handles
            cron=fields["cron"],
            task_type=fields["task_type"],
            timezone=fields["timezone"],
            payload=payload,
            queue=fields["queue"],
        )
    except (errors.ScheduleError, errors.Conflict, BadInput) as exc:
        return await pages.schedules(
            view, status=400, flash=Flash("error", f"Schedule not created: {exc}"), form=fields
        )
    return view.redirect(
        f"/dashboard/schedules/{row['name']}", f"Schedule {row['name']!r} created."
    )


async def pause_schedule(view: View) -> Response:
    return await _toggle(view, active=False)


async def resume_schedule(view: View) -> Response:
    return await _toggle(view, active=True)


async def _toggle(view: View, *, active: bool) -> Response:
    schedule_name = view.param("name")
    async with view.reads() as reads:
        current = await reads.schedule(schedule_name)
    if current is None:
        return pages.not_found(view, f"There is no schedule named {schedule_name!r}.")
    word = "active" if active else "paused"
    if current["active"] == active:
        return view.redirect(
            "/dashboard/schedules", f"Schedule {schedule_name!r} is already {word}."
        )
    try:
        await schedules.set_active(
            view.app.admin, view.app.registry, view.actor, schedule_name, active
        )
    except errors.NotFound:
        return pages.not_found(view, f"There is no schedule named {schedule_name!r}.")
    note = " Ticks missed while it was paused are not run." if active else ""
    return view.redirect("/dashboard/schedules", f"Schedule {schedule_name!r} is {word}.{note}")


async def retime_schedule(view: View) -> Response:
    schedule_name = view.param("name")
    form = view.form
    fields = {"cron": first(form, "cron"), "timezone": first(form, "timezone") or "UTC"}
    try:
        row = await schedules.retime(
            view.app.admin,
            view.app.registry,
            view.actor,
            schedule_name,
            cron=fields["cron"],
            timezone=fields["timezone"],
        )
    except errors.ScheduleError as exc:
        return await pages.schedule(
            view, status=400, flash=Flash("error", f"Schedule not changed: {exc}"), form=fields
        )
    except errors.NotFound:
        return pages.not_found(view, f"There is no schedule named {schedule_name!r}.")
    return view.redirect(
        f"/dashboard/schedules/{schedule_name}",
        f"Schedule {schedule_name!r} re-timed to '{row['cron']}' ({row['timezone']}); "
        "its next run counts from now.",
    )


async def run_schedule_now(view: View) -> Response:
    schedule_name = view.param("name")
    try:
        row = await schedules.run_now(view.app.admin, view.actor, schedule_name)
    except errors.NotFound:
        return pages.not_found(view, f"There is no schedule named {schedule_name!r}.")
    return view.redirect(
        f"/dashboard/jobs/{row['id']}",
        f"Manual run of schedule {schedule_name!r} enqueued as job {row['id']}.",
    )


# -- queues ------------------------------------------------------------------------------------


async def pause_queue(view: View) -> Response:
    queue = name(view.form, "queue", required=True)
    assert queue is not None
    reason = text(view.form, "reason", max_chars=500) or None
    if not await queues.pause(view.app.admin, view.actor, queue, reason):
        return view.redirect("/dashboard/", f"Queue {queue!r} was already paused.", kind="error")
    return view.redirect(
        "/dashboard/", f"Queue {queue!r} paused: no worker claims from it until it is resumed."
    )


async def resume_queue(view: View) -> Response:
    queue = view.param("queue")
    if not await queues.resume(view.app.admin, view.actor, queue):
        return view.redirect("/dashboard/", f"Queue {queue!r} was not paused.", kind="error")
    return view.redirect("/dashboard/", f"Queue {queue!r} resumed.")
