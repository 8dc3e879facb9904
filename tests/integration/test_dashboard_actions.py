"""The dashboard's newer pages and actions over real HTTP against a real database: bulk
actions by filter, the enqueue form, schedule edits and deletion, job deletion, the workers
and playbook pages. Each action: refused without a session or CSRF token, validated, guarded
by state, audited."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import argon2
import bcrypt
import jwt
import pydantic
import pytest
from pydantic import SecretStr

from tests.integration.test_dashboard_routes import _CSRF, Site, location, running_site
from tests.support import factories, web
from tests.support.clock import FakeClock
from worker import config, errors, presence, store
from worker.admin.store import AdminStore
from worker.registry import Handler, JobContext, JobResult, Registry
from worker.web.dashboard import auth as dashboard_auth
from worker.web.dashboard import pages

# -- a registry with a payload model worth a form ----------------------------------------------


class Report(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    customer_id: int
    title: str = "monthly"
    ratio: float = pydantic.Field(default=1.0, ge=0, le=1)
    dry_run: bool = False
    tags: list[str] = []
    mode: str | None = None


async def report(ctx: JobContext, payload: Report) -> JobResult:
    return JobResult()


def registry() -> Registry:
    reg = Registry()
    reg.add(Handler("report", report, Report, max_attempts=4))
    return reg


@pytest.fixture
async def site(db: store.Store, make_settings: Any) -> AsyncIterator[Site]:
    async with running_site(db, make_settings) as running:
        yield running


@pytest.fixture
async def served(db: store.Store, make_settings: Any) -> AsyncIterator[Site]:
    """A dashboard whose worker serves the `report` handler."""
    settings = make_settings(dashboard_users="alice:correct-horse-1")
    clock = FakeClock(datetime.now(UTC))
    async with web.running(web.services(settings, db, registry(), clock=clock)) as client:
        yield Site(client, clock, db)


async def many(db: store.Store, count: int, **fields: Any) -> list[int]:
    """`count` jobs in one statement (status, queue, task_type, last_error)."""
    rows = await db.pool.fetch(
        "INSERT INTO job_queue (task_type, queue, status, attempts, max_attempts, last_error,"
        " dedupe_key)"
        " SELECT $2, $3, $4, 1, 1, $5, $6 || g FROM generate_series(1, $1) g RETURNING id",
        count,
        fields.get("task_type", "sync"),
        fields.get("queue", "default"),
        fields.get("status", "failed"),
        fields.get("last_error"),
        fields.get("dedupe"),
    )
    return [int(r["id"]) for r in rows]


async def statuses(db: store.Store) -> dict[str, int]:
    rows = await db.pool.fetch("SELECT status, count(*) AS n FROM job_queue GROUP BY 1")
    return {r["status"]: int(r["n"]) for r in rows}


def hidden(page: str, form_id: str) -> dict[str, str]:
    """The hidden fields of a form of `page`."""
    found = re.search(rf'<form id="{form_id}".*?</form>', page, re.S)
    assert found is not None, form_id
    return dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', found.group(0)))


# -- auth and CSRF on every new action ---------------------------------------------------------


NEW_POSTS = [
    "/dashboard/jobs/bulk",
    "/dashboard/jobs/1/delete",
    "/dashboard/enqueue",
    "/dashboard/schedules/nightly/edit",
    "/dashboard/schedules/nightly/delete",
]


async def test_new_pages_need_a_session_and_new_actions_a_csrf_token(
    site: Site, db: store.Store
) -> None:
    failed = await many(db, 3)
    await db.pool.execute("SELECT job_schedule_create('nightly', '0 3 * * *', 'sync')")
    for path in ["/dashboard/enqueue", "/dashboard/workers", "/dashboard/playbook"]:
        assert location(await site.client.get(path)).startswith("/dashboard/login"), path
    for path in NEW_POSTS:
        assert location(await site.post(path, "x", action="retry")) == "/dashboard/login", path
    token = await site.login()
    for path in NEW_POSTS:
        for bad in (None, token[:-2] + "xx"):
            refused = await site.post(
                path, bad, action="retry", confirm="yes", expected="3", max_id="999999"
            )
            assert refused.status_code == 403, path
    for path in ["/dashboard/enqueue", "/dashboard/workers", "/dashboard/playbook"]:
        assert (await site.client.get(path)).status_code == 200, path
    assert await statuses(db) == {"failed": 3}
    assert (await factories.job(db, failed[0]))["status"] == "failed"
    # The setup's own job_schedule_create call is audited in SQL; the refused posts wrote none.
    assert [e["action"] for e in await site.audit()] == ["schedule_create", "login"]


# -- bulk actions --------------------------------------------------------------------------------


async def test_bulk_retry_counts_asks_then_retries_in_batches_and_audits_each(
    site: Site, db: store.Store
) -> None:
    target = await many(db, 2_300, queue="mail", last_error="SMTP 451 try later")
    other_error = await many(db, 5, queue="mail", last_error="bad address")
    other_queue = await many(db, 7, queue="sms", last_error="SMTP 451 try later")
    succeeded = await many(db, 4, queue="mail", status="succeeded", last_error="SMTP 451")
    token = await site.login()
    listing = (await site.client.get("/dashboard/jobs?status=failed&queue=mail&q=smtp")).text
    fields = hidden(listing.replace('class="bulk"', 'id="bulk-retry-form"', 1), "bulk-retry-form")
    assert fields == {
        "csrf_token": token,
        "action": "retry",
        "status": "failed",
        "queue": "mail",
        "q": "smtp",
    }
    preview = await site.post("/dashboard/jobs/bulk", token, **{**fields, "csrf_token": token})
    assert preview.status_code == 200
    assert 'data-testid="bulk-total">2300<' in preview.text
    assert await statuses(db) == {"failed": 2_312, "succeeded": 4}  # nothing changed yet
    confirm = hidden(preview.text, "bulk-confirm")
    assert (confirm["expected"], confirm["max_id"], confirm["confirm"]) == (
        "2300",
        str(max(target)),
        "yes",
    )
    # Jobs failing after the count, even matching, are not part of it.
    late = await many(db, 3, queue="mail", last_error="SMTP 451 again")
    done = await site.post("/dashboard/jobs/bulk", token, **confirm)
    assert location(done) == "/dashboard/jobs?status=failed&queue=mail&q=smtp"
    flash = (await site.client.get(location(done))).text
    assert "2300 of the 2300 jobs counted retried in 3 batches" in flash
    rows = await db.pool.fetch("SELECT id, status, run_at, max_attempts FROM job_queue")
    by_id = {r["id"]: r for r in rows}
    assert {by_id[i]["status"] for i in target} == {"pending"}
    assert {by_id[i]["max_attempts"] for i in target} == {2}
    for untouched, status in [
        (other_error, "failed"),
        (other_queue, "failed"),
        (late, "failed"),
        (succeeded, "succeeded"),
    ]:
        assert {by_id[i]["status"] for i in untouched} == {status}
    batches = [e for e in await site.audit() if e["action"] == "jobs_bulk_retry"]
    assert [e["detail"]["jobs"] for e in batches] == [1000, 1000, 300]
    assert len({e["target"] for e in batches}) == 1 and batches[0]["target"].startswith("bulk:")
    assert batches[0]["detail"]["filter"] == {"status": "failed", "queue": "mail", "q": "smtp"}
    assert all(e["actor"] == "alice" for e in batches)


async def test_bulk_actions_are_guarded_by_state_and_never_exceed_the_count_seen(
    site: Site, db: store.Store
) -> None:
    await many(db, 4, queue="q")
    await many(db, 2, queue="q", status="cancelled")
    await many(db, 3, queue="q", status="pending")
    running = await factories.make_job(
        db, queue="q", status="running", attempts=1, locked_by="w1", started_at=datetime.now(UTC)
    )
    token = await site.login()
    # Retry with no status filter: failed and cancelled only.
    preview = (await site.post("/dashboard/jobs/bulk", token, action="retry", queue="q")).text
    assert 'data-testid="bulk-count-failed">4<' in preview
    assert 'data-testid="bulk-count-cancelled">2<' in preview
    # The operator saw 5: only 5 change, though 6 match.
    confirm = {**hidden(preview, "bulk-confirm"), "expected": "5"}
    assert location(await site.post("/dashboard/jobs/bulk", token, **confirm))
    assert await statuses(db) == {"pending": 8, "cancelled": 1, "running": 1}
    # Cancel: pending and running, a running attempt closed in job_runs.
    cancel = (await site.post("/dashboard/jobs/bulk", token, action="cancel", queue="q")).text
    assert 'data-testid="bulk-total">9<' in cancel
    assert location(
        await site.post("/dashboard/jobs/bulk", token, **hidden(cancel, "bulk-confirm"))
    )
    assert await statuses(db) == {"cancelled": 10}
    [closed] = await factories.runs(db, running)
    assert (closed["status"], closed["error"]) == ("cancelled", "cancelled by alice")
    # A status filter the action does not apply to: nothing to confirm.
    nothing = await site.post("/dashboard/jobs/bulk", token, action="retry", status="succeeded")
    assert nothing.status_code == 200 and 'id="bulk-confirm"' not in nothing.text
    # Delete the cancelled ones: gone from job_queue, their runs stay.
    delete = (await site.post("/dashboard/jobs/bulk", token, action="delete", queue="q")).text
    assert location(
        await site.post("/dashboard/jobs/bulk", token, **hidden(delete, "bulk-confirm"))
    )
    assert await statuses(db) == {}
    assert len(await factories.runs(db, running)) == 1
    actions = [e["action"] for e in await site.audit()]
    assert actions == [
        "login",
        "jobs_bulk_retry",
        "jobs_bulk_retry",
        "jobs_bulk_cancel",
        "jobs_bulk_cancel",
        "jobs_bulk_delete",
    ]


async def test_bulk_retry_leaves_a_job_whose_dedupe_key_a_live_job_holds(
    site: Site, db: store.Store
) -> None:
    [old] = await many(db, 1, dedupe="key-")
    live = await factories.make_job(db, task_type="sync", dedupe_key="key-1")
    others = await many(db, 2, dedupe="other-")
    token = await site.login()
    preview = (await site.post("/dashboard/jobs/bulk", token, action="retry")).text
    done = await site.post("/dashboard/jobs/bulk", token, **hidden(preview, "bulk-confirm"))
    page = (await site.client.get(location(done))).text
    assert "2 of the 3 jobs counted retried" in page and "changed state meanwhile" in page
    assert (await factories.job(db, old))["status"] == "failed"
    assert {(await factories.job(db, i))["status"] for i in [live, *others]} == {"pending"}


@pytest.mark.parametrize(
    "fields",
    [
        {"action": "explode"},
        {"action": "retry", "status": "bogus"},
        {"action": "retry", "queue": "not a queue"},
        {"action": "retry", "confirm": "yes", "expected": "-1", "max_id": "5"},
        {"action": "retry", "confirm": "yes", "expected": "3", "max_id": "x"},
        {"action": "retry", "confirm": "yes", "expected": "3"},
    ],
)
async def test_bulk_input_is_validated(site: Site, db: store.Store, fields: dict[str, str]) -> None:
    await many(db, 3)
    token = await site.login()
    refused = await site.post("/dashboard/jobs/bulk", token, **fields)
    assert refused.status_code == 400 and 'class="flash flash-error"' in refused.text
    assert await statuses(db) == {"failed": 3}
    assert [e["action"] for e in await site.audit()] == ["login"]


# -- one job's delete ---------------------------------------------------------------------------


async def test_delete_a_failed_job_and_refuse_a_live_one(site: Site, db: store.Store) -> None:
    [failed] = await many(db, 1)
    pending = await factories.make_job(db)
    token = await site.login()
    page = (await site.client.get(f"/dashboard/jobs/{failed}")).text
    assert f'action="/dashboard/jobs/{failed}/delete"' in page
    assert 'id="delete"' not in (await site.client.get(f"/dashboard/jobs/{pending}")).text
    assert location(await site.post(f"/dashboard/jobs/{failed}/delete", token)) == "/dashboard/jobs"
    assert await db.pool.fetchval("SELECT count(*) FROM job_queue WHERE id = $1", failed) == 0
    refused = await site.post(f"/dashboard/jobs/{pending}/delete", token)
    assert refused.status_code == 409 and "cannot be deleted" in refused.text
    assert (await site.post("/dashboard/jobs/99999/delete", token)).status_code == 404
    assert [(e["action"], e["target"]) for e in await site.audit()][1:] == [
        ("job_delete", f"job:{failed}")
    ]


# -- the enqueue form ------------------------------------------------------------------------------


async def test_enqueue_form_is_built_from_the_handlers_model(served: Site) -> None:
    await served.login()
    empty = (await served.client.get("/dashboard/enqueue")).text
    assert '<option value="report">report</option>' in empty and 'id="enqueue"' not in empty
    form = (await served.client.get("/dashboard/enqueue?task_type=report")).text
    for name, kind in [
        ("customer_id", "whole number"),
        ("title", "text"),
        ("ratio", "number"),
        ("dry_run", "true / false"),
        ("tags", "JSON"),
        ("mode", "text"),
    ]:
        field = re.search(rf'data-field="{name}">(.*?)</label>', form, re.S)
        assert field is not None and kind in field.group(1), name
    required = re.search(r'data-field="customer_id">(.*?)</label>', form, re.S)
    assert required is not None and "required" in required.group(1)
    assert 'name="p.tags" rows="3" data-json' in form
    assert 'placeholder="4 (the handler\'s)"' in form
    assert (await served.client.get("/dashboard/enqueue?task_type=nope")).status_code == 400


async def test_enqueue_refuses_bad_fields_beside_them_and_enqueues_a_good_job(
    served: Site, db: store.Store
) -> None:
    token = await served.login()
    bad = await served.post(
        "/dashboard/enqueue",
        token,
        task_type="report",
        **{"p.customer_id": "twelve", "p.ratio": "2", "p.tags": "[oops"},
        priority="5000",
        run_at="tomorrow",
    )
    assert bad.status_code == 400
    for key, message in [
        ("p.customer_id", "must be a whole number"),
        ("p.tags", "not valid JSON"),
        ("priority", "must be a whole number from -1000 to 1000"),
        ("run_at", "must be a date and time"),
    ]:
        assert re.search(rf'data-testid="error-{re.escape(key)}">[^<]*{message}', bad.text), key
    assert 'value="twelve"' in bad.text  # what was typed is kept
    # The model's own checks, beside the field they concern.
    model = await served.post(
        "/dashboard/enqueue", token, task_type="report", **{"p.ratio": "2", "p.title": "x"}
    )
    assert model.status_code == 400
    assert re.search(r'data-testid="error-p.customer_id">Field required', model.text)
    assert re.search(
        r'data-testid="error-p.ratio">Input should be less than or equal to 1', model.text
    )
    raw = await served.post("/dashboard/enqueue", token, task_type="report", payload_json='{"x": 1')
    assert raw.status_code == 400 and re.search(r'data-testid="error-payload_json">', raw.text)
    extra = await served.post(
        "/dashboard/enqueue", token, task_type="report", payload_json='{"customer_id": 1, "x": 2}'
    )
    assert extra.status_code == 400 and "Extra inputs are not permitted" in extra.text
    assert await db.pool.fetchval("SELECT count(*) FROM job_queue") == 0
    unknown = await served.post("/dashboard/enqueue", token, task_type="nope")
    assert unknown.status_code == 400

    good = await served.post(
        "/dashboard/enqueue",
        token,
        task_type="report",
        **{"p.customer_id": "42", "p.dry_run": "true", "p.tags": '["a", "b"]', "p.title": ""},
        queue="reports",
        priority="-5",
        run_at="2030-01-02T03:04:05",
        max_attempts="2",
    )
    job_id = int(location(good).rsplit("/", 1)[1])
    job = await factories.job(db, job_id)
    assert job["payload"] == {"customer_id": 42, "dry_run": True, "tags": ["a", "b"]}
    assert (job["queue"], job["priority"], job["max_attempts"], job["run_type"]) == (
        "reports",
        -5,
        2,
        "manual",
    )
    assert job["run_at"] == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    raw_ok = await served.post(
        "/dashboard/enqueue", token, task_type="report", payload_json='{"customerId": 1}'
    )
    assert raw_ok.status_code == 400  # the model forbids the camelCase spelling here
    raw_ok = await served.post(
        "/dashboard/enqueue", token, task_type="report", payload_json='{"customer_id": 1}'
    )
    second = await factories.job(db, int(location(raw_ok).rsplit("/", 1)[1]))
    assert second["payload"] == {"customer_id": 1} and second["queue"] == "default"
    entries = [e for e in await served.audit() if e["action"] == "job_enqueue"]
    assert [(e["actor"], e["target"]) for e in entries] == [
        ("alice", f"job:{job_id}"),
        ("alice", f"job:{second['id']}"),
    ]


# -- schedules ---------------------------------------------------------------------------------


async def test_schedule_cards_words_next_runs_edit_and_delete(site: Site, db: store.Store) -> None:
    await db.pool.execute(
        "SELECT job_schedule_create('nightly', '15 3 * * *', 'sync', timezone => 'Asia/Tokyo')"
    )
    await db.pool.execute("SELECT job_schedule_create('often', '*/30 * * * *', 'sync')")
    await db.pool.execute("SELECT job_schedule_toggle('often', false)")
    failed = await factories.make_job(
        db, task_type="sync", schedule_name="nightly", run_type="cron", status="failed"
    )
    token = await site.login()
    listing = (await site.client.get("/dashboard/schedules")).text
    for card, value in [("total", 2), ("active", 1), ("paused", 1), ("failing", 1)]:
        assert re.search(rf'data-testid="schedules-{card}">.*?>{value}</span>', listing, re.S)
    assert "at 03:15 Asia/Tokyo every day" in listing and "every 30 minutes" in listing
    detail = (await site.client.get("/dashboard/schedules/nightly")).text
    runs = re.findall(r"<li>(\S+ 03:15:00 JST) <span", detail)
    assert len(runs) == 5 and len(set(runs)) == 5
    assert f"/dashboard/jobs/{failed}" in detail

    edit = "/dashboard/schedules/nightly/edit"
    fields = {"missed": "all", "queue": "night", "priority": "3", "max_attempts": "2"}
    for change, message in [
        ({"payload": "{oops"}, "not valid JSON"),
        ({"payload": "[1]"}, "must be a JSON object"),
        ({"missed": "sometimes"}, "missed"),
        ({"priority": "high"}, "must be a whole number"),
        ({"queue": "no spaces"}, "queue"),
    ]:
        refused = await site.post(edit, token, **{**fields, "payload": "{}", **change})
        assert refused.status_code == 400 and message in refused.text, change
    row = await db.pool.fetchrow("SELECT * FROM job_schedules WHERE name = 'nightly'")
    assert (row["missed"], row["queue"], row["payload"]) == ("latest", "default", {})
    changed = await site.post(edit, token, **fields, payload='{"full": true}')
    assert location(changed) == "/dashboard/schedules/nightly"
    row = await db.pool.fetchrow("SELECT * FROM job_schedules WHERE name = 'nightly'")
    assert (row["missed"], row["queue"], row["priority"], row["max_attempts"]) == (
        "all",
        "night",
        3,
        2,
    )
    assert row["payload"] == {"full": True}

    wrong = await site.post("/dashboard/schedules/nightly/delete", token, confirm="nighty")
    assert wrong.status_code == 400 and "type the schedule" in wrong.text
    gone = await site.post("/dashboard/schedules/nightly/delete", token, confirm="nightly")
    assert location(gone) == "/dashboard/schedules"
    assert [r["name"] for r in await factories.schedules(db)] == ["often"]
    assert (await factories.job(db, failed))["schedule_name"] == "nightly"  # jobs stay
    missing = await site.post("/dashboard/schedules/nope/delete", token, confirm="nope")
    assert missing.status_code == 404
    audit = [(e["action"], e["target"]) for e in await site.audit()]
    actions = audit[audit.index(("login", "dashboard")) + 1 :]  # the setup's are audited too
    assert actions == [
        ("schedule_update", "schedule:nightly"),
        ("schedule_delete", "schedule:nightly"),
    ]


async def test_a_served_schedules_payload_is_checked_by_its_model(
    served: Site, db: store.Store
) -> None:
    await db.pool.execute("SELECT job_schedule_create('monthly', '0 6 1 * *', 'report')")
    token = await served.login()
    fields = {"missed": "latest", "queue": "default", "priority": "0"}
    refused = await served.post(
        "/dashboard/schedules/monthly/edit", token, **fields, payload='{"title": "x"}'
    )
    assert refused.status_code == 400 and "customer_id" in refused.text
    ok = await served.post(
        "/dashboard/schedules/monthly/edit", token, **fields, payload='{"customer_id": 7}'
    )
    assert location(ok) == "/dashboard/schedules/monthly"


# -- workers and playbook ------------------------------------------------------------------------


async def test_workers_page_shows_live_and_stale_workers(
    site: Site, db: store.Store, make_settings: Any
) -> None:
    live = presence.Presence(db, make_settings(worker_id="w-live", concurrency=16), None)
    await live.join()
    job_id = await factories.make_job(
        db, task_type="sync", status="running", locked_by="w-live", attempts=1
    )
    await live.beat()
    await db.pool.execute(
        "INSERT INTO job_workers (id, host, pid, version, heartbeat_s, queues, concurrency,"
        " last_seen_at) VALUES ('w-gone', 'old-host', 7, '0.0.9', 5, '{mail}', 4, $1)",
        datetime.now(UTC) - timedelta(minutes=3),
    )
    await site.login()
    page = (await site.client.get("/dashboard/workers")).text
    table = re.search(r'<table id="workers">(.*?)</table>', page, re.S)
    stale = re.search(r'<table id="stale-workers">(.*?)</table>', page, re.S)
    assert table is not None and stale is not None
    assert 'data-worker="w-live"' in table.group(1) and "w-gone" not in table.group(1)
    assert f'<a href="/dashboard/jobs/{job_id}">{job_id}</a>' in table.group(1)
    assert 'data-testid="in-flight">1<' in table.group(1)
    assert 'data-worker="w-gone"' in stale.group(1) and "old-host" in stale.group(1)
    assert re.search(r'data-testid="workers-live">.*?>1</span>', page, re.S)
    assert re.search(r'data-testid="workers-slots">.*?>16</span>', page, re.S)
    await live.leave()
    assert 'data-worker="w-live"' not in (await site.client.get("/dashboard/workers")).text


async def test_playbook_links_to_the_actions(site: Site) -> None:
    await site.login()
    page = (await site.client.get("/dashboard/playbook")).text
    for section in ("jobs-failing", "queue-backed-up", "provider-down", "schema-change"):
        assert f'id="{section}"' in page
    for link in (
        "/dashboard/jobs?status=failed",
        "/dashboard/runs?status=failed",
        "/dashboard/workers",
        "/dashboard/enqueue",
        "/dashboard/#pause-queue",
    ):
        assert f'href="{link}"' in page, link


# -- sign-in: hashed passwords, app accounts ------------------------------------------------------

ARGON2_USER = ("carol", "carol-long-password-1")
BCRYPT_USER = ("dave", "dave-long-password-22")


def hashed_users() -> str:
    argon = argon2.PasswordHasher(time_cost=1, memory_cost=1024).hash(ARGON2_USER[1])
    crypt = bcrypt.hashpw(BCRYPT_USER[1].encode(), bcrypt.gensalt(4)).decode()
    return f"{ARGON2_USER[0]}:{argon}, {BCRYPT_USER[0]}:{crypt},erin:plain-password-12"


def test_hashed_passwords_are_read_whole_and_bad_hashes_refused() -> None:
    users = config.dashboard_users(SecretStr(hashed_users()))
    assert list(users) == ["carol", "dave", "erin"]
    assert users["carol"].startswith("$argon2id$v=19$m=1024,t=1,p=")
    assert users["erin"] == "plain-password-12"
    for broken in ["x:$argon2id$v=19$m=1024", "x:$2b$04$tooshort"]:
        with pytest.raises(errors.ConfigError, match="is not an argon2 or bcrypt hash"):
            config.load(dashboard_users=broken, handler_modules=[])


async def test_hashed_and_plain_passwords_log_in(db: store.Store, make_settings: Any) -> None:
    settings = make_settings(dashboard_users=hashed_users())
    clock = FakeClock(datetime.now(UTC))
    async with web.running(web.services(settings, db, clock=clock)) as client:
        site = Site(client, clock, db)
        for user, password in [ARGON2_USER, BCRYPT_USER, ("erin", "plain-password-12")]:
            assert await site.login(user, password)
            site.client.cookies.clear()
        for user, password in [
            ("carol", BCRYPT_USER[1]),
            ("dave", ARGON2_USER[1]),
            ("mallory", ARGON2_USER[1]),
            ("carol", ""),
            ("dave", "d" * 100),  # past bcrypt's 72 bytes: refused, not an error
        ]:
            refused = await site.client.post(
                "/dashboard/login", data={"user": user, "password": password}
            )
            assert refused.status_code == 401, user
    auth_ = dashboard_auth.Authenticator(
        SecretStr(hashed_users()),
        AdminStore(db.pool),
        session_s=60,
        clock=FakeClock(datetime.now(UTC)),
    )
    assert auth_.check_password(*ARGON2_USER) and not auth_.check_password("carol", "nope")


JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters"
APP_USER = "5b0c3c1e-8c1d-4a5e-9d61-3f1b2a7c9e10"


def access_token(scopes: list[str], *, exp_s: float = 600, **claims: Any) -> str:
    body = {
        "sub": APP_USER,
        "aud": "authenticated",
        "exp": int(datetime.now(UTC).timestamp() + exp_s),
        "app_metadata": {"job_scopes": scopes},
        **claims,
    }
    return jwt.encode(body, JWT_SECRET, algorithm="HS256")


async def test_an_app_admin_signs_in_with_an_access_token(
    db: store.Store, make_settings: Any
) -> None:
    settings = make_settings(dashboard_users="alice:correct-horse-1", api_jwt_secret=JWT_SECRET)
    clock = FakeClock(datetime.now(UTC))
    async with web.running(web.services(settings, db, registry(), clock=clock)) as client:
        site = Site(client, clock, db)
        login = await client.get("/dashboard/login")
        assert 'form id="login-token"' in login.text
        for token, status in [
            (access_token(["read", "enqueue"]), 403),
            (access_token(["admin"], exp_s=-5), 401),
            (access_token(["admin"], aud="elsewhere"), 401),
            ("not-a-token", 401),
        ]:
            refused = await client.post("/dashboard/login/token", data={"access_token": token})
            assert refused.status_code == status and "set-cookie" not in refused.headers
        signed_in = await client.post(
            "/dashboard/login/token",
            data={"access_token": access_token(["admin"], exp_s=300), "next": "/dashboard/jobs"},
        )
        assert location(signed_in) == "/dashboard/jobs"
        max_age = re.search(r"Max-Age=(\d+)", signed_in.headers["set-cookie"])
        assert max_age is not None and 250 < int(max_age.group(1)) <= 300  # the token's life
        page = (await client.get("/dashboard/jobs")).text
        assert f"jwt:{APP_USER}" in page
        token = _CSRF.search(page)
        assert token is not None
        made = await site.post(
            "/dashboard/enqueue", token.group(1), task_type="report", **{"p.customer_id": "9"}
        )
        job = await factories.job(db, int(location(made).rsplit("/", 1)[1]))
        assert (job["run_type"], str(job["requested_by"])) == ("manual", APP_USER)
        clock.advance(301)  # the token has expired: so has the session
        assert location(await client.get("/dashboard/jobs")).startswith("/dashboard/login")
        entries = [(e["actor"], e["action"]) for e in await site.audit()]
        assert entries == [
            (f"jwt:{APP_USER}", "login_refused"),  # signed, but without the admin scope
            ("jwt:(refused)", "login_failed"),
            ("jwt:(refused)", "login_failed"),
            ("jwt:(refused)", "login_failed"),
            (f"jwt:{APP_USER}", "login"),
            (f"jwt:{APP_USER}", "job_enqueue"),
        ]


async def test_without_the_jwt_option_there_is_no_token_sign_in(site: Site) -> None:
    assert 'form id="login-token"' not in (await site.client.get("/dashboard/login")).text
    response = await site.client.post("/dashboard/login/token", data={"access_token": "x.y.z"})
    assert response.status_code == 404


async def test_a_filter_no_index_serves_looks_at_a_window_of_ids_and_links_older(
    site: Site, db: store.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "JOBS_WINDOW_IDS", 100)
    old = await many(db, 3, queue="rare", status="succeeded")
    newer = await many(db, 250, queue="common", status="succeeded")
    await site.login()
    first = (await site.client.get("/dashboard/jobs?queue=rare")).text
    assert 'data-job-id="' not in first and "Nothing matches among job ids" in first
    link = re.search(r'<a href="([^"]+)" id="search-older">', first)
    assert link is not None
    assert link.group(1).replace("&amp;", "&") == (
        f"/dashboard/jobs?queue=rare&before={max(newer) + 1 - 100}"
    )
    second = (await site.client.get(link.group(1).replace("&amp;", "&"))).text
    assert 'data-job-id="' not in second
    third_link = re.search(r'<a href="([^"]+)" id="search-older">', second)
    assert third_link is not None
    third = (await site.client.get(third_link.group(1).replace("&amp;", "&"))).text
    shown = [int(i) for i in re.findall(r'data-job-id="(\d+)"', third)]
    assert shown == sorted(old, reverse=True)
    assert 'id="search-older"' not in third  # the window reached the oldest job
    # A filter a partial index serves reads the whole table at once.
    failed = (await site.client.get("/dashboard/jobs?status=failed&queue=rare")).text
    assert 'id="search-older"' not in failed
