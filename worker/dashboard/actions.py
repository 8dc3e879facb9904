"""The dashboard's actions (POST; the Dashboard checked the session and the CSRF token).

Each one is a guarded change plus its audit row in one transaction (store._admin_action).
A job in the wrong state changes nothing: 409 and the job page saying why. Bad input: 400
and the page again with the message, nothing changed. Success: 303 back with a flash.
"""

from __future__ import annotations

from worker import errors, http, store
from worker.dashboard import pages
from worker.dashboard.view import BadInput, Flash, View, first, json_object, name, text

# -- jobs --------------------------------------------------------------------------------------


async def retry_job(view: View) -> http.Response:
    job_id = view.request.int_param("id")
    try:
        row = await view.app.db.admin_retry_job(view.actor, job_id)
    except errors.ScheduleError as exc:  # a live job took the dedupe key meanwhile
        return await pages.job(view, status=409, flash=Flash("error", str(exc)))
    if row is None:
        return await _refused(
            view,
            "retried: only a failed or cancelled job can be (and no live job may hold its "
            "dedupe key)",
        )
    return view.redirect(
        f"/dashboard/jobs/{job_id}",
        f"Job {job_id} is pending again, due now (it may use attempt {row['attempts'] + 1} "
        f"of {row['max_attempts']}).",
    )


async def cancel_job(view: View) -> http.Response:
    job_id = view.request.int_param("id")
    row = await view.app.db.admin_cancel_job(view.actor, job_id)
    if row is None:
        return await _refused(view, "cancelled: only a pending or running job can be")
    message = f"Job {job_id} cancelled."
    if row["previous_status"] == "running":
        message += (
            " It was running: its worker stops the handler at its next heartbeat, and whatever"
            " the handler returns is discarded."
        )
    return view.redirect(f"/dashboard/jobs/{job_id}", message)


async def run_job_now(view: View) -> http.Response:
    job_id = view.request.int_param("id")
    row = await view.app.db.admin_run_job_now(view.actor, job_id)
    if row is None:
        return await _refused(view, "run now: only a pending job can be")
    return view.redirect(f"/dashboard/jobs/{job_id}", f"Job {job_id} is due now.")


async def _refused(view: View, what: str) -> http.Response:
    """404 for a job that does not exist; 409 and its page for one in the wrong state."""
    job_id = view.request.int_param("id")
    async with view.reads() as reads:
        row = await reads.job(job_id)
    if row is None:
        return pages.not_found(view, f"There is no job {job_id}.")
    message = f"Nothing changed: job {job_id} is {row['status']} and cannot be {what}."
    return await pages.job(view, status=409, flash=Flash("error", message))


# -- schedules -------------------------------------------------------------------------------


async def create_schedule(view: View) -> http.Response:
    form = view.form()
    fields = {key: first(form, key) for key in ("name", "cron", "timezone", "task_type", "payload")}
    fields["queue"] = first(form, "queue") or "default"
    fields["timezone"] = fields["timezone"] or "UTC"
    try:
        payload = json_object(form, "payload")
        schedule = store.ScheduleDef(
            name=fields["name"],
            cron=fields["cron"],
            task_type=fields["task_type"],
            timezone=fields["timezone"],
            payload=payload,
            queue=fields["queue"],
            priority=0,
            max_attempts=None,
            missed="latest",
            active=True,
            source="admin",
        )
        row = await view.app.db.admin_create_schedule(view.actor, schedule)
    except (errors.ScheduleError, BadInput) as exc:
        return await pages.schedules(
            view, status=400, flash=Flash("error", f"Schedule not created: {exc}"), form=fields
        )
    return view.redirect(
        f"/dashboard/schedules/{row['name']}", f"Schedule {row['name']!r} created."
    )


async def pause_schedule(view: View) -> http.Response:
    return await _toggle(view, active=False)


async def resume_schedule(view: View) -> http.Response:
    return await _toggle(view, active=True)


async def _toggle(view: View, *, active: bool) -> http.Response:
    schedule_name = view.request.str_param("name")
    async with view.reads() as reads:
        current = await reads.schedule(schedule_name)
    if current is None:
        return pages.not_found(view, f"There is no schedule named {schedule_name!r}.")
    word = "active" if active else "paused"
    if current["active"] == active:
        return view.redirect(
            "/dashboard/schedules", f"Schedule {schedule_name!r} is already {word}."
        )
    row = await view.app.db.admin_toggle_schedule(view.actor, schedule_name, active)
    if row is None:
        return pages.not_found(view, f"There is no schedule named {schedule_name!r}.")
    note = " Ticks missed while it was paused are not run." if active else ""
    return view.redirect("/dashboard/schedules", f"Schedule {schedule_name!r} is {word}.{note}")


async def retime_schedule(view: View) -> http.Response:
    schedule_name = view.request.str_param("name")
    form = view.form()
    fields = {"cron": first(form, "cron"), "timezone": first(form, "timezone") or "UTC"}
    try:
        row = await view.app.db.admin_retime_schedule(
            view.actor, schedule_name, fields["cron"], fields["timezone"]
        )
    except errors.ScheduleError as exc:
        return await pages.schedule(
            view, status=400, flash=Flash("error", f"Schedule not changed: {exc}"), form=fields
        )
    if row is None:
        return pages.not_found(view, f"There is no schedule named {schedule_name!r}.")
    return view.redirect(
        f"/dashboard/schedules/{schedule_name}",
        f"Schedule {schedule_name!r} re-timed to '{row['cron']}' ({row['timezone']}); "
        "its next run counts from now.",
    )


async def run_schedule_now(view: View) -> http.Response:
    schedule_name = view.request.str_param("name")
    row = await view.app.db.admin_run_schedule_now(view.actor, schedule_name)
    if row is None:
        return pages.not_found(view, f"There is no schedule named {schedule_name!r}.")
    return view.redirect(
        f"/dashboard/jobs/{row['id']}",
        f"Manual run of schedule {schedule_name!r} enqueued as job {row['id']}.",
    )


# -- queues ------------------------------------------------------------------------------------


async def pause_queue(view: View) -> http.Response:
    form = view.form()
    queue = name(form, "queue", required=True)
    assert queue is not None
    reason = text(form, "reason", max_chars=500) or None
    row = await view.app.db.admin_pause_queue(view.actor, queue, reason)
    if row is None:
        return view.redirect("/dashboard/", f"Queue {queue!r} was already paused.", kind="error")
    return view.redirect(
        "/dashboard/", f"Queue {queue!r} paused: no worker claims from it until it is resumed."
    )


async def resume_queue(view: View) -> http.Response:
    queue = view.request.str_param("queue")
    row = await view.app.db.admin_resume_queue(view.actor, queue)
    if row is None:
        return view.redirect("/dashboard/", f"Queue {queue!r} was not paused.", kind="error")
    return view.redirect("/dashboard/", f"Queue {queue!r} resumed.")
