"""The dashboard in a real headless Chromium: log in, read the pages, filter, act.

Written against the DOM contract of issue #7 (ids, data-testid and data-* attributes), not
against layout. Every test seeds its own rows with the factories, drives the browser, then
checks the database too. Each saves full-page screenshots to artifacts/screenshots/.
Waits are on selectors and page states (Playwright's expect retries), never on sleeps.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.async_api import Locator, Page, expect

from tests.support import factories
from worker import store

if TYPE_CHECKING:
    from tests.browser.conftest import Console, Dashboard

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
SUBMIT = "button[type=submit], input[type=submit], button:not([type])"
# Seeded pending jobs run tomorrow, so the daemon under test leaves them pending.
LATER = timedelta(days=1)


async def login(page: Page, dashboard: Dashboard) -> None:
    await page.goto(dashboard.url("/dashboard/login"))
    await page.fill("form#login input[name=user]", dashboard.user)
    await page.fill("form#login input[name=password]", dashboard.password)
    await page.click("form#login button[type=submit]")
    await page.wait_for_url(re.compile(r"/dashboard/(\?.*)?$"))


async def shoot(page: Page, screenshots: Path, name: str) -> None:
    """Save a full-page screenshot; on a logged-in page, check the parts every page has."""
    await page.screenshot(path=screenshots / f"{name}.png", full_page=True)
    if await page.locator("form#login").count():
        return
    nav = page.locator("nav")
    for label in ("Overview", "Jobs", "Schedules", "Runs"):
        await expect(nav.get_by_role("link", name=label, exact=True)).to_have_count(1)
    await expect(page.locator('form#logout[action="/dashboard/logout"]')).to_have_count(1)
    # Every state-changing form carries its CSRF token.
    unguarded = await page.locator("form").evaluate_all(
        """forms => forms
            .filter(f => f.method === "post")
            .filter(f => !f.querySelector('input[type=hidden][name=csrf_token][value]'))
            .map(f => f.id || f.className || f.action)"""
    )
    assert unguarded == [], f"POST forms without a csrf_token on {name}: {unguarded}"


async def gap_px(upper: Locator, lower: Locator) -> float:
    """The space between the bottom of `upper` and the top of `lower` (the first of each)."""
    top = await upper.first.bounding_box()
    bottom = await lower.first.bounding_box()
    assert top is not None and bottom is not None
    return bottom["y"] - (top["y"] + top["height"])


async def submit(form: Locator) -> None:
    await form.locator(SUBMIT).first.click()


async def reload_until(page: Page, check: Callable[[], Awaitable[None]], timeout_s: float) -> None:
    """Reload until `check` (a Playwright expect, retried briefly) passes: these pages never
    refresh themselves, so a change made by the worker shows only on a new load."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await page.reload()


async def job_ids_shown(page: Page) -> set[int]:
    ids = await page.locator("table#jobs tr[data-job-id]").evaluate_all(
        "rows => rows.map(row => row.dataset.jobId)"
    )
    return {int(value) for value in ids}


@dataclasses.dataclass(frozen=True)
class Seeded:
    id: int
    status: str
    task_type: str
    queue: str
    last_error: str | None


async def seed_mix(db: store.Store) -> list[Seeded]:
    """Jobs in every state, three task types and two queues; none is runnable now."""
    later = datetime.now(UTC) + LATER
    boom = "RuntimeError: boom on attempt 3"
    disk = "OSError: disk full while writing report.csv"
    plan = [
        *[("pending", "test_ok", "default", None)] * 2,
        ("pending", "report_export", "reports", None),
        ("running", "test_sleep", "default", None),
        *[("succeeded", "test_ok", "default", None)] * 2,
        *[("failed", "test_boom", "default", boom)] * 3,
        ("failed", "report_export", "reports", disk),
        *[("cancelled", "test_boom", "default", None)] * 5,
    ]
    seeded = []
    for status, task_type, queue, error in plan:
        fields: dict[str, object] = {"run_at": later} if status == "pending" else {"attempts": 1}
        if status == "running":
            # Leased by another worker for a day: the daemon under test neither runs nor
            # rescues it.
            fields.update(locked_by="elsewhere", lease_expires_at=later)
        job_id = await factories.make_job(
            db, status=status, task_type=task_type, queue=queue, last_error=error, **fields
        )
        seeded.append(Seeded(job_id, status, task_type, queue, error))
    return seeded


def ids_where(seeded: list[Seeded], **match: object) -> set[int]:
    return {
        job.id
        for job in seeded
        if all(getattr(job, name) == value for name, value in match.items())
    }


async def seed_run_history(db: store.Store, job_id: int) -> None:
    """Finished attempts over the last day, denser in the last hour, some failed: something
    for the overview's charts to draw."""
    await db.pool.execute(
        """
        INSERT INTO job_runs (job_id, job_key, queue, run_type, status, attempt,
                              started_at, finished_at, duration_ms)
        SELECT $1, 'test_ok', 'default', 'queue',
               CASE WHEN (m + k) % 6 = 0 THEN 'failed' ELSE 'succeeded' END, 1,
               now() - make_interval(mins => m),
               now() - make_interval(mins => m) + interval '40 milliseconds', 40
          FROM generate_series(1, 1439) m, generate_series(1, 1 + (m * 7) % 5) k
         WHERE m < 60 OR m % 10 = 0
        """,
        job_id,
    )


async def test_login_wrong_password_and_logout(
    page: Page, dashboard: Dashboard, console: Console, screenshots: Path
) -> None:
    await page.goto(dashboard.url("/dashboard/jobs"))
    await expect(page).to_have_url(re.compile(r"/dashboard/login"))
    await expect(page.locator("form#login")).to_be_visible()
    await shoot(page, screenshots, "login")

    console.allow_status(401)
    wrong = "not-the-password-" + dashboard.password[:4]
    await page.fill("form#login input[name=user]", dashboard.user)
    await page.fill("form#login input[name=password]", wrong)
    async with page.expect_response(
        lambda r: r.request.method == "POST" and "/dashboard/login" in r.url
    ) as answer:
        await page.click("form#login button[type=submit]")
    assert (await answer.value).status == 401
    await expect(page.locator("div.flash")).to_be_visible()
    await expect(page).to_have_url(re.compile(r"/dashboard/login"))
    await expect(page.locator("form#login")).to_be_visible()
    assert wrong not in await page.content()
    await shoot(page, screenshots, "login-wrong-password")

    await page.fill("form#login input[name=user]", dashboard.user)
    await page.fill("form#login input[name=password]", dashboard.password)
    await page.click("form#login button[type=submit]")
    # Back where the login started (the `next` page), or the overview.
    await page.wait_for_url(re.compile(r"/dashboard/(jobs)?(\?.*)?$"))
    for name in ("Overview", "Jobs", "Schedules", "Runs"):
        await expect(page.locator("nav").get_by_role("link", name=name, exact=True)).to_be_visible()
    # Nothing has run: both charts say so instead of drawing empty boxes.
    await page.goto(dashboard.url("/dashboard/"))
    await expect(page.get_by_text("no finished attempts in this period")).to_have_count(2)
    await expect(page.locator("svg.chart")).to_have_count(0)
    await shoot(page, screenshots, "overview-empty")

    await submit(page.locator("form#logout"))
    await page.wait_for_url(re.compile(r"/dashboard/login"))
    await page.goto(dashboard.url("/dashboard/"))
    await expect(page).to_have_url(re.compile(r"/dashboard/login"))


async def test_overview_counts_and_queue_pause(
    page: Page, dashboard: Dashboard, db: store.Store, screenshots: Path
) -> None:
    seeded = await seed_mix(db)
    await seed_run_history(db, next(iter(ids_where(seeded, status="succeeded"))))
    await login(page, dashboard)
    await expect(page.locator("h1")).to_have_text("Overview")
    for status in STATUSES:
        count = len(ids_where(seeded, status=status))
        card = page.locator(f'[data-testid="count-{status}"]')
        await expect(card).to_contain_text(re.compile(rf"(?<!\d){count}(?!\d)"))

    pause = page.locator("form#pause-queue")
    await pause.locator("input[name=queue]").fill("reports")
    await pause.locator("input[name=reason]").fill("e2e: nightly export window")
    await submit(pause)
    row = page.locator("table#paused-queues tr", has_text="reports")
    await expect(row).to_have_count(1)
    assert [r["queue"] for r in await factories.paused_queues(db)] == ["reports"]
    assert await gap_px(page.locator("table#paused-queues"), pause) >= 8
    await shoot(page, screenshots, "overview")

    await submit(row.locator("form.resume-queue"))
    await expect(row).to_have_count(0)
    assert await factories.paused_queues(db) == []


async def filter_jobs(page: Page, **values: str) -> None:
    """Fill the whole filter form (empty for the fields not given) and submit it."""
    form = page.locator("form#job-filters")
    await form.locator("select[name=status]").select_option(values.get("status", ""))
    for name in ("queue", "task_type", "q"):
        await form.locator(f"input[name={name}]").fill(values.get(name, ""))
    await form.locator("button[type=submit]").click()
    await page.wait_for_url(re.compile(r"/dashboard/jobs\?"))
    await expect(page.locator("table#jobs")).to_be_visible()


async def test_filter_jobs_by_status_queue_task_type_and_error(
    page: Page, dashboard: Dashboard, db: store.Store, screenshots: Path
) -> None:
    seeded = await seed_mix(db)
    await login(page, dashboard)
    await page.goto(dashboard.url("/dashboard/jobs"))
    assert await job_ids_shown(page) == ids_where(seeded)
    for job_id in ids_where(seeded):
        link = page.locator(f'tr[data-job-id="{job_id}"] a[href="/dashboard/jobs/{job_id}"]')
        await expect(link).to_have_count(1)
    await shoot(page, screenshots, "jobs")

    await filter_jobs(page, status="failed")
    assert await job_ids_shown(page) == ids_where(seeded, status="failed")
    await shoot(page, screenshots, "jobs-status-failed")

    await filter_jobs(page, task_type="test_boom")
    assert await job_ids_shown(page) == ids_where(seeded, task_type="test_boom")
    await shoot(page, screenshots, "jobs-task-type")

    await filter_jobs(page, status="pending", queue="reports")
    assert await job_ids_shown(page) == ids_where(seeded, status="pending", queue="reports")

    await filter_jobs(page, q="disk full")
    assert await job_ids_shown(page) == ids_where(
        seeded, task_type="report_export", status="failed"
    )

    # 60 more failed jobs in their own queue: 50 on the first page, newest first, and the
    # link to older ones keeps the filter.
    bulk = await db.pool.fetch(
        "INSERT INTO job_queue (queue, task_type, status, attempts, last_error)"
        " SELECT 'bulk', 'test_boom', 'failed', 1, 'boom ' || g FROM generate_series(1, 60) g"
        " RETURNING id"
    )
    newest_first = sorted((int(r["id"]) for r in bulk), reverse=True)
    await filter_jobs(page, status="failed", queue="bulk")
    assert await job_ids_shown(page) == set(newest_first[:50])
    shown = await page.locator("table#jobs tr[data-job-id]").evaluate_all(
        "rows => rows.map(row => Number(row.dataset.jobId))"
    )
    assert shown == newest_first[:50]
    await page.locator('a[href*="before="]').first.click()
    await page.wait_for_url(re.compile(r"before="))
    assert await job_ids_shown(page) == set(newest_first[50:])
    await expect(page.locator("form#job-filters select[name=status]")).to_have_value("failed")
    await expect(page.locator("form#job-filters input[name=queue]")).to_have_value("bulk")


async def test_open_job_shows_payload_escaped_and_attempt_history(
    page: Page, dashboard: Dashboard, db: store.Store, screenshots: Path
) -> None:
    # Fails once (ConnectionError, retried at once) then succeeds: two attempts to show.
    payload = {"customer": 42, "note": "<script>alert('payload')</script>"}
    job_id = await factories.make_job(db, task_type="test_fail_once", payload=payload)
    await login(page, dashboard)
    await page.goto(dashboard.url("/dashboard/jobs"))
    await page.click(f'table#jobs tr[data-job-id="{job_id}"] a[href="/dashboard/jobs/{job_id}"]')
    await page.wait_for_url(re.compile(rf"/dashboard/jobs/{job_id}$"))

    status = page.locator('[data-testid="job-status"]')
    await reload_until(page, lambda: expect(status).to_have_text("succeeded", timeout=500), 30)
    await expect(page.locator("h1")).to_contain_text(f"Job {job_id}")
    # Rendered as text: the page shows the markup instead of running it (the page fixture
    # fails the test on any dialog or console error).
    await expect(page.locator("pre#payload")).to_contain_text("<script>alert('payload')</script>")
    attempts = page.locator("table#attempts tr:has(td)")
    await expect(attempts).to_have_count(2)
    await expect(attempts.filter(has_text="transient")).to_have_count(1)
    # The handler's notes under a "notes" heading, not under "error".
    headings = await page.locator("table#attempts th").all_text_contents()
    succeeded = attempts.filter(has=page.locator(".badge-succeeded"))
    for heading, text in [("notes", "attempt 2"), ("error", "")]:
        cell = succeeded.locator("td").nth([h.strip().lower() for h in headings].index(heading))
        await expect(cell).to_have_text(text)
    for action in ("retry", "cancel", "run-now"):
        await expect(page.locator(f"form#{action}")).to_have_count(0)
    await shoot(page, screenshots, "job-detail")


async def test_retry_failed_job_then_it_succeeds(
    page: Page, dashboard: Dashboard, db: store.Store, screenshots: Path
) -> None:
    job_id = await factories.make_job(
        db,
        task_type="test_ok",
        status="failed",
        attempts=3,
        max_attempts=3,
        last_error="ConnectionError: upstream timed out (fixed since)",
    )
    await login(page, dashboard)
    await page.goto(dashboard.url(f"/dashboard/jobs/{job_id}"))
    status = page.locator('[data-testid="job-status"]')
    await expect(status).to_have_text("failed")
    await expect(page.locator("form#cancel")).to_have_count(0)
    await expect(page.locator("form#run-now")).to_have_count(0)
    await shoot(page, screenshots, "job-failed")

    await submit(page.locator("form#retry"))
    await expect(page.locator("div.flash")).to_be_visible()
    await expect(page.locator("form#retry")).to_have_count(0)
    await reload_until(page, lambda: expect(status).to_have_text("succeeded", timeout=500), 30)
    await shoot(page, screenshots, "job-retried")

    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"], row["max_attempts"]) == ("succeeded", 4, 4)
    assert [(r["attempt"], r["status"]) for r in await factories.runs(db, job_id)] == [
        (4, "succeeded")
    ]
    audit = await db.pool.fetch(
        "SELECT actor, action, target FROM job_admin_audit WHERE action LIKE '%retry%'"
    )
    assert [(a["actor"], str(job_id) in a["target"]) for a in audit] == [("admin", True)]


async def test_run_now_and_cancel_pending_jobs(
    page: Page, dashboard: Dashboard, db: store.Store, screenshots: Path
) -> None:
    later = datetime.now(UTC) + LATER
    run_id = await factories.make_job(db, task_type="test_ok", run_at=later)
    cancel_id = await factories.make_job(db, task_type="test_ok", run_at=later)
    await login(page, dashboard)

    await page.goto(dashboard.url(f"/dashboard/jobs/{run_id}"))
    status = page.locator('[data-testid="job-status"]')
    await expect(status).to_have_text("pending")
    await expect(page.locator("form#retry")).to_have_count(0)
    await shoot(page, screenshots, "job-pending")
    await submit(page.locator("form#run-now"))
    await expect(page.locator("div.flash")).to_be_visible()
    await reload_until(page, lambda: expect(status).to_have_text("succeeded", timeout=500), 30)

    await page.goto(dashboard.url(f"/dashboard/jobs/{cancel_id}"))
    await expect(status).to_have_text("pending")
    await submit(page.locator("form#cancel"))
    await expect(status).to_have_text("cancelled")
    assert (await factories.job(db, cancel_id))["status"] == "cancelled"
    assert (await factories.job(db, run_id))["status"] == "succeeded"


async def create_schedule(page: Page, **values: str) -> None:
    form = page.locator("form#schedule-create")
    for name, value in values.items():
        await form.locator(f"[name={name}]").fill(value)
    await submit(form)


async def test_create_pause_resume_and_retime_schedule(
    page: Page, dashboard: Dashboard, console: Console, db: store.Store, screenshots: Path
) -> None:
    name = "e2e-new-year"
    # Once a year at midnight on January 1st; the daemon's scheduler is off anyway.
    schedule = {
        "name": name,
        "cron": "0 0 1 1 *",
        "timezone": "Mars/Olympus_Mons",
        "task_type": "test_ok",
        "queue": "default",
        "payload": '{"source": "e2e"}',
    }
    console.allow_status(400)
    await login(page, dashboard)
    await page.goto(dashboard.url("/dashboard/schedules"))
    await create_schedule(page, **schedule)
    await expect(page.locator("body")).to_contain_text("unknown timezone 'Mars/Olympus_Mons'")
    assert await db.pool.fetchval("SELECT count(*) FROM job_schedules") == 0
    await shoot(page, screenshots, "schedule-create-refused")

    await page.goto(dashboard.url("/dashboard/schedules"))
    await create_schedule(page, **{**schedule, "timezone": "Europe/Paris"})
    await expect(page.locator("div.flash")).to_contain_text(name)
    await page.goto(dashboard.url("/dashboard/schedules"))
    row = page.locator(f'table#schedules tr[data-schedule="{name}"]')
    active = row.locator('[data-testid="schedule-active"]')
    await expect(active).to_have_text("active")
    assert await schedule_field(db, name, "timezone") == "Europe/Paris"
    await shoot(page, screenshots, "schedules")
    assert await gap_px(page.locator("table#schedules"), page.locator("div.panel")) >= 8

    await submit(row.locator("form.pause"))
    await expect(active).to_have_text("paused")
    assert await schedule_field(db, name, "active") is False
    await shoot(page, screenshots, "schedules-paused")

    await submit(row.locator("form.resume"))
    await expect(active).to_have_text("active")
    assert await schedule_field(db, name, "active") is True

    await page.locator(f'table#schedules a[href="/dashboard/schedules/{name}"]').click()
    await page.wait_for_url(re.compile(rf"/dashboard/schedules/{name}$"))
    retime = page.locator("form#retime")
    await retime.locator("[name=cron]").fill("61 * * * *")
    await submit(retime)
    await expect(page.locator("body")).to_contain_text("minute value 61 is out of range")
    assert await schedule_field(db, name, "cron") == "0 0 1 1 *"
    await shoot(page, screenshots, "schedule-retime-refused")

    await page.goto(dashboard.url(f"/dashboard/schedules/{name}"))
    await page.locator("form#retime [name=cron]").fill("30 6 * * 1")
    await submit(page.locator("form#retime"))
    await expect(page.locator("div.flash")).to_be_visible()
    assert await schedule_field(db, name, "cron") == "30 6 * * 1"
    # Created, paused, resumed and re-timed, but never ticked.
    await expect(page.locator('[data-testid="last-tick"]')).to_have_text("never")
    await shoot(page, screenshots, "schedule-detail")


async def schedule_field(db: store.Store, name: str, column: str) -> object:
    row = await db.pool.fetchrow(
        "SELECT cron, timezone, active FROM job_schedules WHERE name = $1", name
    )
    assert row is not None
    return row[column]


async def test_runs_page_lists_every_attempt_and_who_ran_it(
    page: Page, dashboard: Dashboard, db: store.Store, screenshots: Path
) -> None:
    flaky = await factories.make_job(db, task_type="test_fail_once")
    steady = await factories.make_job(db, task_type="test_ok")
    await db.pool.execute(
        "SELECT name FROM job_schedule_create($1, $2, $3)", "e2e-manual", "0 0 1 1 *", "test_ok"
    )
    await login(page, dashboard)
    # A manual run of a schedule, started from its page (the button is not in the DOM
    # contract: found by its label, as a user would).
    await page.goto(dashboard.url("/dashboard/schedules/e2e-manual"))
    await page.get_by_role("button", name="Run now").click()
    await expect(page.locator("div.flash")).to_be_visible()
    await page.goto(dashboard.url("/dashboard/schedules/e2e-manual"))
    # A UTC schedule's next run is shown once; a manual run is not a tick.
    next_run = page.locator("dl.fields dt:text-is('next run') + dd")
    await expect(next_run).to_have_text(re.compile(r"^\S+ \d\d:\d\d:\d\d UTC$"))
    await expect(page.locator('[data-testid="last-tick"]')).to_have_text("never")
    await shoot(page, screenshots, "schedule-utc")

    await page.goto(dashboard.url("/dashboard/runs"))
    rows = page.locator("table#runs tr[data-run-id]")
    await reload_until(page, lambda: expect(rows).to_have_count(4, timeout=500), 30)
    runs = await db.pool.fetch("SELECT id, job_id, run_type FROM job_runs ORDER BY id")
    manual = [r for r in runs if r["run_type"] == "manual"]
    assert {r["job_id"] for r in runs} - {flaky, steady} == {manual[0]["job_id"]}
    shown = await rows.evaluate_all("rows => rows.map(row => row.dataset.runId)")
    assert {int(v) for v in shown} == {r["id"] for r in runs}
    for run in runs:
        link = page.locator(
            f'tr[data-run-id="{run["id"]}"] a[href="/dashboard/jobs/{run["job_id"]}"]'
        )
        await expect(link).to_have_count(1)
    await expect(rows.filter(has_text="transient")).to_have_count(1)
    manual_row = page.locator(f'tr[data-run-id="{manual[0]["id"]}"]')
    await expect(manual_row).to_contain_text("e2e-manual")
    await expect(manual_row).to_contain_text(dashboard.user)
    # Durations rounded to 0 ms read "<1 ms".
    await expect(rows.locator("td.num").filter(has_text=re.compile(r"^0 ms$"))).to_have_count(0)
    await shoot(page, screenshots, "runs")
