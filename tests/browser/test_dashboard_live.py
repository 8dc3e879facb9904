"""The dashboard's newer pages in a real headless Chromium against real worker daemons: a
bulk retry by filter, the enqueue form with a bad and a good payload, the workers page
while two workers run, and pages that update themselves when a job finishes. Screenshots
of each page go to artifacts/screenshots/."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.async_api import Page, expect

from tests.browser.test_dashboard import login, shoot, submit
from tests.support import factories
from tests.support.proc import worker_env
from worker import store

if TYPE_CHECKING:
    from tests.browser.conftest import Console, Dashboard

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

LATER = timedelta(days=1)


@pytest.fixture(autouse=True)
async def leave_before_the_daemon_stops(page: Page, dashboard: Dashboard) -> AsyncIterator[None]:
    """A page refreshing itself would ask a daemon that is stopping (a refused connection is
    a console error): it leaves first."""
    yield
    await page.goto("about:blank")


async def set_refresh(page: Page, seconds: str) -> None:
    """The header's refresh choice (dashboard.js keeps it in localStorage)."""
    control = page.locator("#live-control")
    await expect(control).to_be_visible()
    await control.locator("select").select_option(seconds)


async def test_bulk_retry_by_filter(
    page: Page, dashboard: Dashboard, db: store.Store, screenshots: Path
) -> None:
    rows = await db.pool.fetch(
        "INSERT INTO job_queue (task_type, queue, status, attempts, max_attempts, last_error)"
        " SELECT 'test_ok', 'default', 'failed', 3, 3, 'HTTP 503 from upstream (' || g || ')'"
        " FROM generate_series(1, 30) g RETURNING id"
    )
    targets = {int(r["id"]) for r in rows}
    other = await factories.make_job(
        db, task_type="test_ok", status="failed", attempts=1, last_error="bad input"
    )
    await login(page, dashboard)
    await page.goto(dashboard.url("/dashboard/jobs?status=failed&q=503"))
    await expect(page.locator("table#jobs tr[data-job-id]")).to_have_count(30)
    await shoot(page, screenshots, "jobs-bulk-bar")
    await page.locator("#bulk-retry").click()
    await page.wait_for_url(re.compile(r"/dashboard/jobs/bulk$"))
    await expect(page.locator('[data-testid="bulk-total"]')).to_have_text("30")
    await expect(page.locator("h1")).to_have_text("Retry 30 jobs?")
    await shoot(page, screenshots, "bulk-confirm")
    assert await db.pool.fetchval("SELECT count(*) FROM job_queue WHERE status = 'failed'") == 31

    await submit(page.locator("form#bulk-confirm"))
    await page.wait_for_url(re.compile(r"/dashboard/jobs\?status=failed&q=503$"))
    await expect(page.locator("div.flash")).to_contain_text("30 of the 30 jobs counted retried")
    await expect(page.locator("table#jobs tr[data-job-id]")).to_have_count(0)
    # The daemon runs them: the list of them (live) turns green by itself.
    await page.goto(dashboard.url("/dashboard/jobs?task_type=test_ok"))
    await set_refresh(page, "2")
    done_rows = page.locator("table#jobs tr[data-job-id]:has(.badge-succeeded)")
    await expect(done_rows).to_have_count(30, timeout=30_000)
    await shoot(page, screenshots, "bulk-done")
    done = await db.pool.fetch("SELECT id, status FROM job_queue WHERE id = ANY($1)", [*targets])
    assert {r["status"] for r in done} == {"succeeded"}
    assert (await factories.job(db, other))["status"] == "failed"
    batches = await db.pool.fetch(
        "SELECT actor, detail FROM job_admin_audit WHERE action = 'jobs_bulk_retry'"
    )
    assert [(b["actor"], b["detail"]["jobs"]) for b in batches] == [("admin", 30)]


async def test_enqueue_form_refuses_a_bad_payload_and_runs_a_good_one(
    page: Page, dashboard: Dashboard, console: Console, db: store.Store, screenshots: Path
) -> None:
    await login(page, dashboard)
    await page.goto(dashboard.url("/dashboard/enqueue"))
    await shoot(page, screenshots, "enqueue-pick")
    # Picking the task type shows its form (dashboard.js sends the GET form on change).
    await page.locator("form#enqueue-pick select[name=task_type]").select_option("test_sleep")
    await page.wait_for_url(re.compile(r"task_type=test_sleep"))
    form = page.locator("form#enqueue")
    seconds = form.locator('[data-field="seconds"]')
    await expect(seconds).to_contain_text("number")
    await shoot(page, screenshots, "enqueue-form")

    # Bad JSON in the raw box: caught before submission, beside the field; nothing sent.
    await form.locator("textarea[name=payload_json]").fill('{"seconds": ')
    await submit(form)
    await expect(form.locator(".field-error[data-client]")).to_contain_text("not valid JSON")
    assert "/dashboard/enqueue?task_type=test_sleep" in page.url
    await shoot(page, screenshots, "enqueue-json-refused")
    assert await db.pool.fetchval("SELECT count(*) FROM job_queue") == 0

    # A value the field cannot hold and one the model refuses: the server says so beside them.
    console.allow_status(400)
    await form.locator("textarea[name=payload_json]").fill("")
    await seconds.locator("input").fill("soon")
    await form.locator("input[name=max_attempts]").fill("0")
    await submit(form)
    await expect(page.locator('[data-testid="error-p.seconds"]')).to_have_text("must be a number")
    await expect(page.locator('[data-testid="error-max_attempts"]')).to_contain_text("1 to 1000")
    await expect(page.locator("form#enqueue input[name='p.seconds']")).to_have_value("soon")
    await shoot(page, screenshots, "enqueue-refused")
    assert await db.pool.fetchval("SELECT count(*) FROM job_queue") == 0

    await page.locator("form#enqueue input[name='p.seconds']").fill("0.2")
    await page.locator("form#enqueue input[name=max_attempts]").fill("2")
    await page.locator("form#enqueue input[name=queue]").fill("default")
    await submit(page.locator("form#enqueue"))
    await page.wait_for_url(re.compile(r"/dashboard/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    await expect(page.locator("div.flash")).to_contain_text("a manual run of test_sleep by admin")
    # The job page refreshes itself until the job has run.
    await set_refresh(page, "2")
    status = page.locator('[data-testid="job-status"]')
    await expect(status).to_have_text("succeeded", timeout=30_000)
    await shoot(page, screenshots, "enqueue-ran")
    job = await factories.job(db, job_id)
    assert (job["payload"], job["run_type"], job["max_attempts"]) == ({"seconds": 0.2}, "manual", 2)


def start_second_worker(dsn: str, log: Path) -> subprocess.Popen[bytes]:
    env = worker_env(
        dsn,
        WORKER_HANDLER_MODULES="handlers.bundled,tests.support.handlers",
        WORKER_POLL_INTERVAL_S="0.2",
        WORKER_WORKER_ID="second-worker",
        WORKER_QUEUES="default,reports",
        WORKER_CONCURRENCY="3",
    )
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=sink
        )


@pytest.fixture
async def second_worker(db_dsn: str, tmp_path: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    log = tmp_path / "second.log"
    proc = start_second_worker(db_dsn, log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        print(f"--- second worker log ---\n{log.read_text(errors='replace')}")


async def test_workers_page_while_two_workers_run(
    page: Page,
    dashboard: Dashboard,
    db: store.Store,
    second_worker: subprocess.Popen[bytes],
    screenshots: Path,
) -> None:
    # Long enough to be seen running by a heartbeat (every 5 s), short enough for shutdown.
    sleeping = [
        await factories.make_job(db, task_type="test_sleep", payload={"seconds": 12})
        for _ in range(2)
    ]
    await login(page, dashboard)
    await page.goto(dashboard.url("/dashboard/workers"))
    await set_refresh(page, "2")
    rows = page.locator("table#workers tr[data-worker]")
    await expect(rows).to_have_count(2, timeout=30_000)
    second = page.locator('table#workers tr[data-worker="second-worker"]')
    await expect(second).to_contain_text("default, reports")
    # Both jobs show under the workers running them, linked, once a heartbeat has seen them.
    for job_id in sleeping:
        await expect(
            page.locator(f'table#workers a[href="/dashboard/jobs/{job_id}"]')
        ).to_have_count(1, timeout=30_000)
    await expect(page.locator('[data-testid="workers-live"] .card-value')).to_have_text("2")
    await shoot(page, screenshots, "workers")
    ids = {r["id"] for r in await db.pool.fetch("SELECT id FROM job_workers")}
    assert "second-worker" in ids and len(ids) == 2

    # A clean shutdown removes the worker's row; the page follows by itself.
    second_worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(second_worker.wait, 40) == 0
    await expect(second).to_have_count(0, timeout=30_000)
    await expect(rows).to_have_count(1)
    assert await db.pool.fetchval("SELECT count(*) FROM job_workers") == 1


async def test_pages_update_themselves_when_a_job_finishes(
    page: Page, dashboard: Dashboard, db: store.Store, screenshots: Path
) -> None:
    job_id = await factories.make_job(db, task_type="test_ok", run_at=datetime.now(UTC) + LATER)
    await login(page, dashboard)
    await page.goto(dashboard.url(f"/dashboard/jobs/{job_id}"))
    await set_refresh(page, "2")
    status = page.locator('[data-testid="job-status"]')
    await expect(status).to_have_text("pending")
    await expect(page.locator("#live-stamp")).to_contain_text(re.compile("live|updated"))
    await shoot(page, screenshots, "job-live-pending")
    # Made due behind the page's back: the worker runs it, the page shows it, no reload.
    await db.pool.execute("UPDATE job_queue SET run_at = now() WHERE id = $1", job_id)
    await expect(status).to_have_text("succeeded", timeout=30_000)
    await expect(page.locator("table#attempts tr:has(td)")).to_have_count(1)
    await shoot(page, screenshots, "job-live-succeeded")

    # The overview's counts too.
    await page.goto(dashboard.url("/dashboard/"))
    succeeded = page.locator('[data-testid="count-succeeded"] .card-value')
    await expect(succeeded).to_have_text("1")
    await factories.make_job(db, task_type="test_ok")
    await expect(succeeded).to_have_text("2", timeout=30_000)


async def test_schedule_pages_playbook_and_login_screens(
    page: Page, dashboard: Dashboard, db: store.Store, screenshots: Path
) -> None:
    for name, cron, tz in [
        ("nightly-report", "15 3 * * *", "Europe/Paris"),
        ("every-half-hour", "*/30 * * * *", "UTC"),
        ("weekday-digest", "0 8 * * 1-5", "America/New_York"),
    ]:
        await db.pool.execute(
            "SELECT name FROM job_schedule_create($1, $2, 'test_ok', timezone => $3)",
            name,
            cron,
            tz,
        )
    await db.pool.execute("SELECT name FROM job_schedule_toggle('weekday-digest', false)")
    await login(page, dashboard)
    await page.goto(dashboard.url("/dashboard/schedules"))
    row = page.locator('table#schedules tr[data-schedule="nightly-report"]')
    await expect(row).to_contain_text("at 03:15 Europe/Paris every day")
    await expect(page.locator('[data-testid="schedules-paused"] .card-value')).to_have_text("1")
    await shoot(page, screenshots, "schedules-cards")
    await page.goto(dashboard.url("/dashboard/schedules/nightly-report"))
    await expect(page.locator("ol#next-runs li")).to_have_count(5)
    await page.locator("form#schedule-edit select[name=missed]").select_option("skip")
    await page.locator("form#schedule-edit textarea[name=payload]").fill('{"note": "edited"}')
    await submit(page.locator("form#schedule-edit"))
    await expect(page.locator("div.flash")).to_contain_text("updated")
    row_db = await db.pool.fetchrow(
        "SELECT missed, payload FROM job_schedules WHERE name = $1", "nightly-report"
    )
    assert row_db is not None and (row_db["missed"], row_db["payload"]) == (
        "skip",
        {"note": "edited"},
    )
    await page.locator("details.danger-zone summary").click()
    await shoot(page, screenshots, "schedule-edit")
    await page.goto(dashboard.url("/dashboard/playbook"))
    await expect(page.locator("#provider-down")).to_be_visible()
    await shoot(page, screenshots, "playbook")
    await page.goto(dashboard.url("/dashboard/runs"))
    await shoot(page, screenshots, "runs-empty")
