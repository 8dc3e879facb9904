"""The dashboard's actions (POST; the Dashboard checked the session and the CSRF token).

Each one is an admin use case (worker.admin): a guarded change plus its audit row in one
transaction. A job in the wrong state changes nothing: 409 and the job page saying why. Bad
input: 400 and the page again with the message, nothing changed. Success: 303 back with a
flash.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from worker import errors, names
from worker.admin import jobs, queues, schedules
from worker.admin.store import JobRequest
from worker.web.dashboard import pages, payloadform
from worker.web.dashboard.view import BadInput, Flash, View, first, json_object, name, text

_MAX_BULK = 10_000_000

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


async def delete_job(view: View) -> Response:
    job_id = view.int_param("id")
    try:
        await jobs.delete(view.app.admin, view.actor, job_id)
    except (errors.NotFound, errors.Conflict) as exc:
        return await _refused(view, exc, "deleted")
    return view.redirect(
        "/dashboard/jobs", f"Job {job_id} deleted; its attempts stay in the runs list."
    )


async def _refused(view: View, exc: errors.WorkerError, what: str) -> Response:
    """404 for a job that does not exist; 409 and its page for one in the wrong state."""
    job_id = view.int_param("id")
    if isinstance(exc, errors.NotFound):
        return pages.not_found(view, f"There is no job {job_id}.")
    message = f"Nothing changed: {exc}."
    if isinstance(exc, errors.Conflict) and exc.state is not None:
        message = f"Nothing changed: job {job_id} is {exc.state} and cannot be {what}."
    return await pages.job(view, status=409, flash=Flash("error", message))


# -- bulk actions by filter -------------------------------------------------------------------


async def bulk_jobs(view: View) -> Response:
    """Retry, cancel or delete every job the jobs list's filter matches, in two steps: the
    first POST counts them and asks; the second (confirm, with the count seen and the
    highest id counted) applies the action to at most those, in batches."""
    form = view.form
    action = first(form, "action")
    if action not in jobs.BULK_STATES:
        raise BadInput(f"action must be one of {', '.join(jobs.BULK_STATES)}")
    where = pages.job_filter(form)
    listing = "/dashboard/jobs" + (f"?{urlencode(where.as_dict())}" if where.as_dict() else "")
    if first(form, "confirm") != "yes":
        plan = await jobs.bulk_plan(view.app.admin, action, where)
        return view.page(
            "bulk.html",
            plan=plan,
            listing=listing,
            filters=where.as_dict(),
            batch=jobs.BULK_BATCH,
        )
    expected = _whole(form, "expected", 0, _MAX_BULK)
    max_id = _whole(form, "max_id", 0, 2**63 - 1)
    result = await jobs.bulk_apply(
        view.app.admin, view.actor, action, where, max_id=max_id, expected=expected
    )
    done = {"retry": "retried", "cancel": "cancelled", "delete": "deleted"}[action]
    message = f"{result.changed} of the {expected} jobs counted {done}"
    message += f" in {result.batches} batch{'es' if result.batches != 1 else ''}"
    if result.changed < expected:
        message += "; the others had changed state meanwhile and were left as they were"
    message += f" (audit target bulk:{result.bulk_id})."
    return view.redirect(listing, message)


def _whole(form: Any, field: str, low: int, high: int) -> int:
    value = first(form, field)
    if not value.isdigit() or not low <= int(value) <= high:
        raise BadInput(f"{field} must be a whole number from {low} to {high}")
    return int(value)


# -- enqueue -----------------------------------------------------------------------------------

_JOB_FIELDS = ("task_type", "queue", "priority", "run_at", "max_attempts", "payload_json")


async def enqueue_job(view: View) -> Response:
    """A manual run by the signed-in user: the payload from the form's fields (or the raw
    JSON box), checked by the handler's model; refusals are shown beside their fields."""
    form = view.form
    values = {key: first(form, key) for key in _JOB_FIELDS}
    values.update({k: first(form, k) for k in form if k.startswith(payloadform.FIELD_PREFIX)})
    registry = view.app.registry
    task = values["task_type"]
    if task not in registry:
        raise BadInput(f"no handler for task type {task!r} in this worker")
    fields = payloadform.fields_of(registry.get(task).payload)
    problems: dict[str, str] = {}
    job_fields = _job_fields(values, problems)
    if values["payload_json"]:
        try:
            payload: Any = json_object(form, "payload_json")
        except BadInput as exc:
            problems["payload_json"] = str(exc).removeprefix("payload_json").strip(": ")
            payload = None
    else:
        parsed = payloadform.read(fields, values)
        problems.update(parsed.problems)
        payload = parsed.payload
    if not problems:
        try:
            jobs.check_payload(registry, task, payload, force=False)
        except errors.InvalidInput as exc:
            for where, what in exc.problems:
                slot = payloadform.problem_field(where) if not values["payload_json"] else None
                key = slot if slot in {f.form_name for f in fields} else "payload_json"
                problems[key] = f"{problems[key]}; {what}" if key in problems else what
    if problems:
        return await pages.enqueue(
            view,
            status=400,
            flash=Flash("error", "Job not enqueued: see the fields marked below."),
            form=values,
            problems=problems,
        )
    request = JobRequest(task_type=task, payload=payload, **job_fields)
    enqueued = await jobs.enqueue(view.app.admin, view.app.registry, view.actor, request)
    return view.redirect(
        f"/dashboard/jobs/{enqueued.job_id}",
        f"Job {enqueued.job_id} enqueued: a manual run of {task} by {view.actor.name}.",
    )


def _job_fields(values: dict[str, str], problems: dict[str, str]) -> dict[str, Any]:
    """queue, priority, run_at (UTC) and max_attempts of the form; problems by field."""
    found: dict[str, Any] = {"queue": values["queue"] or "default"}
    if not names.is_queue(found["queue"]):
        problems["queue"] = f"must be {names.QUEUE_RULE}"
    for field, low, high in (("priority", -1000, 1000), ("max_attempts", 1, 1000)):
        raw = values[field]
        if raw == "":
            continue
        try:
            number = int(raw)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            problems[field] = f"must be a whole number from {low} to {high}"
        else:
            found[field] = number
    if values["run_at"]:
        try:
            moment = datetime.fromisoformat(values["run_at"])
        except ValueError:
            problems["run_at"] = "must be a date and time such as 2026-12-24T18:00"
        else:
            found["run_at"] = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return found


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


async def delete_schedule(view: View) -> Response:
    schedule_name = view.param("name")
    if first(view.form, "confirm") != schedule_name:
        return await pages.schedule(
            view,
            status=400,
            flash=Flash("error", "Not deleted: type the schedule's name to confirm."),
        )
    try:
        await schedules.remove(view.app.admin, view.actor, schedule_name)
    except errors.NotFound:
        return pages.not_found(view, f"There is no schedule named {schedule_name!r}.")
    return view.redirect(
        "/dashboard/schedules",
        f"Schedule {schedule_name!r} deleted; its jobs and their history stay.",
    )


_EDIT_FIELDS = ("missed", "payload", "max_attempts", "priority", "queue")


async def edit_schedule(view: View) -> Response:
    """The missed-tick policy, payload, queue, priority and max attempts of a schedule,
    checked by the handler's model (when served here) and by the database."""
    schedule_name = view.param("name")
    form = view.form
    values = {key: first(form, key) for key in _EDIT_FIELDS}
    problems: dict[str, str] = {}
    changes: dict[str, Any] = {"missed": values["missed"], "queue": values["queue"]}
    try:
        changes["payload"] = json_object(form, "payload")
    except BadInput as exc:
        problems["payload"] = str(exc).removeprefix("payload").strip(": ")
    for field, low, high in (("priority", -1000, 1000), ("max_attempts", 1, 1000)):
        raw = values[field]
        if raw == "" and field == "max_attempts":
            continue  # left as it is: the handler's default or the value set before
        if raw.lstrip("-").isdigit() and low <= int(raw) <= high:
            changes[field] = int(raw)
        else:
            problems[field] = f"must be a whole number from {low} to {high}"
    if not problems:
        try:
            await schedules.update(
                view.app.admin, view.app.registry, view.actor, schedule_name, changes, force=True
            )
        except errors.NotFound:
            return pages.not_found(view, f"There is no schedule named {schedule_name!r}.")
        except errors.ScheduleError as exc:
            problems["schedule"] = str(exc)
    if problems:
        return await pages.schedule(
            view,
            status=400,
            flash=Flash("error", "Schedule not changed: " + "; ".join(problems.values())),
            edit_form=values,
            edit_errors=problems,
        )
    return view.redirect(
        f"/dashboard/schedules/{schedule_name}", f"Schedule {schedule_name!r} updated."
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
