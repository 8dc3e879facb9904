"""The dashboard over real HTTP against a real database: auth, CSRF, every page and action,
audit rows, escaping, headers, and the plans of its queries."""

from __future__ import annotations

import contextlib
import html.parser
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr

from tests.support import factories, web
from tests.support.clock import FakeClock
from worker import config, errors, scheduler, store
from worker.admin.store import AdminStore, Q
from worker.web.dashboard import app as dashboard
from worker.web.dashboard import auth

USERS = "alice:correct-horse-1,bob:battery-staple-2"
SECURITY_HEADERS = dict(dashboard.SECURITY_HEADERS)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Site:
    """A running dashboard and a client; `login()` makes the client a logged-in browser."""

    def __init__(self, client: httpx.AsyncClient, clock: FakeClock, db: store.Store) -> None:
        self.client = client
        self.clock = clock
        self.db = db

    async def login(self, user: str = "alice", password: str = "correct-horse-1") -> str:
        response = await self.client.post(
            "/dashboard/login", data={"user": user, "password": password}
        )
        assert response.status_code == 303, response.text
        return await self.csrf()

    async def csrf(self) -> str:
        page = await self.client.get("/dashboard/")
        assert page.status_code == 200, page.text
        match = _CSRF.search(page.text)
        assert match is not None
        return match.group(1)

    async def post(self, path: str, token: str | None, **fields: str) -> httpx.Response:
        data = dict(fields)
        if token is not None:
            data["csrf_token"] = token
        return await self.client.post(path, data=data)

    async def audit(self) -> list[dict[str, Any]]:
        rows = await self.db.pool.fetch("SELECT * FROM job_admin_audit ORDER BY id")
        return [dict(row) for row in rows]


@contextlib.asynccontextmanager
async def running_site(
    db: store.Store, make_settings: Any, **overrides: Any
) -> AsyncIterator[Site]:
    settings = make_settings(dashboard_users=USERS, **overrides)
    clock = FakeClock(datetime.now(UTC))
    async with web.running(web.services(settings, db, clock=clock)) as client:
        yield Site(client, clock, db)


@pytest.fixture
async def site(db: store.Store, make_settings: Any) -> AsyncIterator[Site]:
    async with running_site(db, make_settings) as running:
        yield running


def location(response: httpx.Response) -> str:
    assert response.status_code == 303, (response.status_code, response.text[:300])
    return response.headers["location"]


# -- settings ----------------------------------------------------------------------------------


def test_dashboard_users_setting_is_checked_without_echoing_passwords() -> None:
    users = config.dashboard_users(SecretStr("alice:correct-horse-1, bob:pa:ss:word-with-colons"))
    assert users == {"alice": "correct-horse-1", "bob": "pa:ss:word-with-colons"}
    for value, message in [
        ("alice", "entry 1 is not name:password"),
        ("alice:short-pw", "the password of 'alice' is shorter than 12 characters"),
        ("al ice:correct-horse-1", "entry 1: a user name is 1-64 of"),
        ("a:correct-horse-1,a:correct-horse-2", "user 'a' is listed twice"),
    ]:
        with pytest.raises(errors.ConfigError) as caught:
            config.load(dashboard_users=value, handler_modules=[])
        line = str(caught.value)
        assert line.startswith("WORKER_DASHBOARD_USERS: ") and message in line
        assert "short-pw" not in line and "horse" not in line
    assert config.load(dashboard_users="", handler_modules=[]).dashboard_users is None


# -- the login gate ----------------------------------------------------------------------------


async def test_without_a_session_only_the_login_page_and_css_are_served(
    site: Site, db: store.Store
) -> None:
    job_id = await factories.make_job(db, payload={"secret": "payload-marker"}, status="failed")
    for path in [
        "/dashboard/",
        "/dashboard/jobs?status=failed",
        f"/dashboard/jobs/{job_id}",
        "/dashboard/schedules",
        "/dashboard/schedules/x",
        "/dashboard/runs",
        "/dashboard/no-such-page",
    ]:
        response = await site.client.get(path)
        assert location(response).startswith("/dashboard/login"), path
        assert "payload-marker" not in response.text and response.content == b""
    assert location(await site.client.get("/dashboard/jobs?status=failed")) == (
        "/dashboard/login?next=%2Fdashboard%2Fjobs%3Fstatus%3Dfailed"
    )
    for path in [f"/dashboard/jobs/{job_id}/retry", "/dashboard/queues/pause", "/dashboard/logout"]:
        assert location(await site.post(path, "x")) == "/dashboard/login"
    assert (await factories.job(db, job_id))["status"] == "failed"
    assert location(await site.client.get("/dashboard")) == "/dashboard/"
    login = await site.client.get("/dashboard/login")
    assert login.status_code == 200 and 'form id="login"' in login.text
    assert "<nav>" not in login.text
    css = await site.client.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert await site.audit() == []


async def test_login_sets_a_strict_session_cookie_and_is_audited(site: Site) -> None:
    response = await site.client.post(
        "/dashboard/login",
        data={"user": "alice", "password": "correct-horse-1", "next": "/dashboard/runs"},
    )
    assert location(response) == "/dashboard/runs"
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.startswith("worker_session=")
    flags = {part.strip().lower() for part in set_cookie.split(";")[1:]}
    flags = {flag for flag in flags if not flag.startswith("expires=")}
    assert flags == {"path=/dashboard", "max-age=43200", "httponly", "samesite=strict"}
    assert (await site.client.get("/dashboard/runs")).status_code == 200
    [entry] = await site.audit()
    assert (entry["actor"], entry["action"], entry["target"]) == ("alice", "login", "dashboard")
    assert entry["remote_addr"] == "127.0.0.1"
    # Logged in, the login page sends you on; a `next` elsewhere is ignored.
    assert location(await site.client.get("/dashboard/login")) == "/dashboard/"
    for unsafe in ["https://evil.example/", "//evil.example/x", "/dashboard/../x", "/elsewhere"]:
        again = await site.client.post(
            "/dashboard/login",
            data={"user": "alice", "password": "correct-horse-1", "next": unsafe},
        )
        assert location(again) == "/dashboard/", unsafe


async def test_the_secure_flag_is_set_when_configured(db: store.Store, make_settings: Any) -> None:
    async with running_site(db, make_settings, dashboard_secure_cookie=True) as site:
        response = await site.client.post(
            "/dashboard/login", data={"user": "bob", "password": "battery-staple-2"}
        )
        assert "; Secure" in response.headers["set-cookie"]


async def test_a_wrong_password_or_user_is_401_generic_and_audited(site: Site) -> None:
    with structlog.testing.capture_logs() as logs:
        wrong_password = await site.client.post(
            "/dashboard/login", data={"user": "alice", "password": "battery-staple-2"}
        )
        wrong_user = await site.client.post(
            "/dashboard/login", data={"user": "mallory", "password": "correct-horse-1"}
        )
    for response in (wrong_password, wrong_user):
        assert response.status_code == 401
        assert "Wrong user name or password." in response.text
        assert "set-cookie" not in response.headers
    assert [(e["actor"], e["action"]) for e in await site.audit()] == [
        ("alice", "login_failed"),
        ("mallory", "login_failed"),
    ]
    assert "staple" not in json.dumps(await site.audit(), default=str)
    assert "horse" not in repr(logs) and "staple" not in repr(logs)
    assert [entry["event"] for entry in logs] == ["dashboard_login_failed"] * 2


async def test_failed_logins_are_rate_limited_per_address(site: Site) -> None:
    for _ in range(10):
        bad = await site.client.post("/dashboard/login", data={"user": "a", "password": "b"})
        assert bad.status_code == 401
    limited = await site.client.post(
        "/dashboard/login", data={"user": "alice", "password": "correct-horse-1"}
    )
    assert limited.status_code == 429 and "set-cookie" not in limited.headers
    site.clock.advance(61)
    await site.login()


async def test_expired_tampered_and_foreign_sessions_are_refused(site: Site) -> None:
    await site.login()
    assert (await site.client.get("/dashboard/jobs")).status_code == 200
    value = site.client.cookies["worker_session"]
    body, _, signature = value.partition(".")
    other_key = auth.Authenticator(
        SecretStr("alice:correct-horse-9"),
        AdminStore(site.db.pool),
        session_s=3600,
        clock=site.clock,
    )
    forged = await other_key.issue("alice", None)
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    other_user = body.replace(body[:4], "AAAA")
    site.client.cookies.clear()

    async def get_with(cookie: str) -> httpx.Response:
        return await site.client.get(
            "/dashboard/jobs", headers={"Cookie": f"worker_session={cookie}"}
        )

    for cookie in [f"{body}.{flipped}", f"{other_user}.{signature}", forged, "garbage", ""]:
        assert location(await get_with(cookie)).startswith("/dashboard/login"), cookie
    assert (await get_with(value)).status_code == 200
    site.clock.advance(timedelta(hours=12, seconds=1))
    assert location(await get_with(value)).startswith("/dashboard/login")


async def test_logout_clears_the_session_and_is_audited(site: Site) -> None:
    token = await site.login()
    assert (await site.client.get("/dashboard/logout")).status_code == 405
    response = await site.post("/dashboard/logout", token)
    assert location(response) == "/dashboard/login"
    cleared = [c for c in response.headers.get_list("set-cookie") if "worker_session=" in c]
    assert len(cleared) == 1 and "Max-Age=0" in cleared[0]
    assert [e["action"] for e in await site.audit()] == ["login", "logout"]
    assert location(await site.client.get("/dashboard/")) == "/dashboard/login"
    assert "Logged out." in (await site.client.get("/dashboard/login")).text


async def test_security_headers_are_on_every_dashboard_response(site: Site) -> None:
    responses = [
        await site.client.get("/dashboard/login"),
        await site.client.get("/dashboard/"),
        await site.client.get("/dashboard/static/dashboard.css"),
        await site.client.post("/dashboard/login", data={"user": "x", "password": "y"}),
    ]
    token = await site.login()
    responses += [
        await site.client.get("/dashboard/"),
        await site.client.get("/dashboard/jobs/12345"),
        await site.client.get("/dashboard/nowhere"),
        await site.post("/dashboard/queues/pause", None, queue="q"),
        await site.post("/dashboard/queues/pause", token, queue="bad name"),
    ]
    assert [r.status_code for r in responses] == [200, 303, 200, 401, 200, 404, 404, 403, 400]
    for response in responses:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
    # One script, our own file: no inline script or style for the CSP to allow.
    scripts = re.findall(r"<script[^>]*>.*?</script>", responses[4].text, re.S)
    assert scripts == ['<script src="/dashboard/static/dashboard.js" defer></script>']
    assert " style=" not in responses[4].text and " on" + "click=" not in responses[4].text
    script = await site.client.get("/dashboard/static/dashboard.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


# -- CSRF and Origin ------------------------------------------------------------------------------


async def test_posts_without_the_right_csrf_token_or_from_elsewhere_change_nothing(
    db: store.Store, make_settings: Any
) -> None:
    job_id = await factories.make_job(db, status="failed", attempts=3, max_attempts=3)
    async with running_site(db, make_settings) as bob_site:
        bob_token = await bob_site.login("bob", "battery-staple-2")
    async with running_site(db, make_settings) as site:
        token = await site.login()
        path = f"/dashboard/jobs/{job_id}/retry"
        for refused in [
            await site.post(path, None),
            await site.post(path, ""),
            await site.post(path, token[:-2] + "xx"),
            await site.post(path, bob_token),
            await site.client.post(path, content=json.dumps({"csrf_token": token})),
            await site.client.post(
                path, data={"csrf_token": token}, headers={"Origin": "https://evil.example"}
            ),
            await site.client.post(path, data={"csrf_token": token}, headers={"Origin": "null"}),
            await site.client.post(
                path, data={"csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"}
            ),
        ]:
            assert refused.status_code == 403
        assert (await factories.job(db, job_id))["status"] == "failed"
        assert [e["action"] for e in await site.audit()] == ["login", "login"]
        host = site.client.base_url.netloc.decode()
        same_origin = await site.client.post(
            path, data={"csrf_token": token}, headers={"Origin": f"http://{host}"}
        )
        assert location(same_origin) == f"/dashboard/jobs/{job_id}"
        cross_login = await site.client.post(
            "/dashboard/login",
            data={"user": "alice", "password": "correct-horse-1"},
            headers={"Origin": "https://evil.example"},
        )
        assert cross_login.status_code == 403


class _Forms(html.parser.HTMLParser):
    """The forms of a page (method, id, csrf_token values inside) and every URL it links."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.urls: list[str] = []
        self._open: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        self.urls += [found[name] for name in ("href", "action", "src") if name in found]
        if tag == "form":
            self._open = {
                "id": found.get("id") or found.get("class", ""),
                "method": found.get("method", "get").lower(),
                "tokens": [],
            }
            self.forms.append(self._open)
        elif tag == "input" and found.get("name") == "csrf_token" and self._open is not None:
            self._open["tokens"].append((found.get("type"), found.get("value")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


async def test_only_post_forms_carry_the_csrf_token(site: Site, db: store.Store) -> None:
    """A token in a GET form would travel in the URL, into history and access logs. Every
    POST form carries it; no GET form and no link does."""
    await db.pool.execute(
        "INSERT INTO job_queue (task_type, queue, status, attempts, last_error)"
        " SELECT 'sync', 'bulk', 'failed', 1, 'boom' FROM generate_series(1, 51)"
    )
    pending = await factories.make_job(db, queue="bulk")
    failed = await factories.make_job(db, status="failed", queue="bulk")
    await _insert_run(db, failed, status="failed")
    await AdminStore(db.pool).pause_queue(factories.ACTOR, "reports", "window")
    token = await site.login()
    assert location(await site.post("/dashboard/schedules", token, **SCHEDULE))
    assert location(await site.post("/dashboard/schedules", token, **{**SCHEDULE, "name": "b"}))
    assert location(await site.post("/dashboard/schedules/b/pause", token))
    get_forms: set[str] = set()
    for path in [
        "/dashboard/",
        "/dashboard/jobs",
        "/dashboard/jobs?status=failed&queue=bulk",
        # An old bookmark with a token in it: the page's own links do not carry it on.
        f"/dashboard/jobs?status=failed&csrf_token={token}",
        f"/dashboard/jobs/{pending}",
        f"/dashboard/jobs/{failed}",
        "/dashboard/schedules",
        "/dashboard/schedules/nightly",
        "/dashboard/schedules/b",
        "/dashboard/runs",
        "/dashboard/runs?status=failed",
        "/dashboard/jobs?status=bogus",
    ]:
        response = await site.client.get(path)
        assert response.status_code in (200, 400), path
        page = _Forms()
        page.feed(response.text)
        posts = [form for form in page.forms if form["method"] == "post"]
        assert posts and all(form["method"] in ("get", "post") for form in page.forms), path
        for form in posts:
            assert form["tokens"] == [("hidden", token)], (path, form)
        for form in page.forms:
            if form["method"] == "get":
                assert form["tokens"] == [], (path, form)
                get_forms.add(form["id"])
        assert response.text.count(token) == len(posts), path
        assert not [url for url in page.urls if "csrf" in url or token in url], path
    assert get_forms == {"job-filters", "run-filters"}
    listing = (await site.client.get(f"/dashboard/jobs?status=failed&csrf_token={token}")).text
    assert re.search(r'href="/dashboard/jobs\?status=failed&amp;before=\d+"', listing)


async def test_an_oversize_body_is_413(site: Site) -> None:
    token = await site.login()
    response = await site.post("/dashboard/queues/pause", token, queue="q", reason="x" * 70_000)
    assert response.status_code == 413
    assert await factories.paused_queues(site.db) == []


# -- pages -------------------------------------------------------------------------------------


async def test_overview_counts_breakdowns_charts_and_paused_queues(
    site: Site, db: store.Store
) -> None:
    for status, count in [("pending", 3), ("running", 2), ("succeeded", 4), ("failed", 1)]:
        for _ in range(count):
            await factories.make_job(db, status=status, queue="mail", task_type="send_mail")
    await factories.make_job(db, status="pending", run_at=datetime.now(UTC) - timedelta(hours=2))
    await AdminStore(db.pool).pause_queue(factories.ACTOR, "reports", "maintenance window")
    job_id = await factories.make_job(db, status="succeeded")
    await _insert_run(db, job_id, status="succeeded")
    await _insert_run(db, job_id, status="failed", attempt=2)
    await site.login()
    page = (await site.client.get("/dashboard/")).text
    assert "<h1>Overview</h1>" in page
    for status, count in [
        ("pending", 4),
        ("running", 2),
        ("succeeded", 5),
        ("failed", 1),
        ("cancelled", 0),
    ]:
        card = re.search(rf'data-testid="count-{status}">(.*?)</div>', page, re.S)
        assert card is not None and f">{count}</span>" in card.group(1), status
    assert "≈" not in page
    assert re.search(r'<a href="/dashboard/jobs\?queue=mail">mail</a></td><td class="num">3<', page)
    assert "send_mail" in page
    assert re.search(r"oldest due pending</span>\s*<span class=\"card-value\">(1\.\d|2\.0) h", page)
    assert page.count('<svg class="chart"') == 2 and "1 succeeded" in page
    assert 'class="bar-failed"' in page
    assert 'id="paused-queues"' in page and "maintenance window" in page
    assert 'action="/dashboard/queues/reports/resume"' in page
    assert 'form id="pause-queue"' in page


async def test_empty_charts_say_so(site: Site, db: store.Store) -> None:
    job_id = await factories.make_job(db, status="succeeded")
    await _insert_run(db, job_id, status="succeeded")
    await db.pool.execute("UPDATE job_runs SET started_at = now() - interval '3 hours'")
    await site.login()
    page = (await site.client.get("/dashboard/")).text
    # Nothing in the last hour: its chart is a sentence; the day's chart has the run.
    assert page.count("no finished attempts in this period") == 1
    assert page.count('<svg class="chart"') == 1 and "1 succeeded" in page
    await db.pool.execute("DELETE FROM job_runs")
    empty = (await site.client.get("/dashboard/")).text
    assert empty.count("no finished attempts in this period") == 2
    assert "<svg" not in empty and "succeeded ·" not in empty


async def test_jobs_list_filters_and_pages(site: Site, db: store.Store) -> None:
    ids = [await factories.make_job(db, queue="bulk") for _ in range(55)]
    failed = await factories.make_job(
        db, status="failed", task_type="sync", last_error="Timeout talking to provider"
    )
    await site.login()
    first = (await site.client.get("/dashboard/jobs")).text
    rows = re.findall(r'<tr data-job-id="(\d+)">', first)
    assert [int(r) for r in rows] == [failed, *reversed(ids)][:50]
    assert f'<a href="/dashboard/jobs/{failed}">' in first
    next_link = re.search(r'<a href="(/dashboard/jobs\?before=\d+)">older', first)
    assert next_link is not None
    second = (await site.client.get(next_link.group(1))).text
    assert [int(r) for r in re.findall(r'data-job-id="(\d+)"', second)] == ids[:6][::-1]
    for query, expected in [
        ("status=failed", [failed]),
        ("task_type=sync", [failed]),
        ("q=timeout+TALKING", [failed]),
        ("q=%25", []),  # text, not a LIKE pattern
        ("queue=bulk&status=failed", []),
        ("status=&queue=&task_type=&q=", [failed, *reversed(ids)][:50]),
    ]:
        page = (await site.client.get(f"/dashboard/jobs?{query}")).text
        assert [int(r) for r in re.findall(r'data-job-id="(\d+)"', page)] == expected, query
    assert 'form id="job-filters"' in first and 'select name="status"' in first


async def test_bad_filters_and_ids_are_refused(site: Site) -> None:
    await site.login()
    for path in [
        "/dashboard/jobs?status=bogus",
        "/dashboard/jobs?queue=not%20a%20queue",
        "/dashboard/jobs?task_type=%3Cx%3E",
        "/dashboard/jobs?before=abc",
        "/dashboard/jobs?before=-1",
        "/dashboard/jobs?q=" + "x" * 201,
        "/dashboard/runs?status=pending",
        "/dashboard/runs?run_type=other",
    ]:
        response = await site.client.get(path)
        assert response.status_code == 400, path
        assert 'class="flash flash-error"' in response.text
    for path in ["/dashboard/jobs/abc", "/dashboard/jobs/1.5", "/dashboard/jobs/999999"]:
        assert (await site.client.get(path)).status_code == 404, path
    assert (await site.client.get("/dashboard/schedules/nope")).status_code == 404


async def test_job_detail_shows_everything_escaped(site: Site, db: store.Store) -> None:
    evil = "<script>alert(1)</script>"
    job_id = await factories.make_job(
        db,
        status="failed",
        payload={"note": evil, "n": 1},
        last_error=f"Traceback\n  {evil}\nValueError: bad",
        attempts=2,
        max_attempts=2,
    )
    await _insert_run(db, job_id, status="retry", attempt=1, error=f"first {evil}")
    second = await _insert_run(db, job_id, status="failed", attempt=2, error=f"second {evil}")
    await db.pool.execute(
        "UPDATE job_runs SET notes = $2, duration_ms = 0 WHERE id = $1", second, "did it\nhalf"
    )
    await site.login()
    page = (await site.client.get(f"/dashboard/jobs/{job_id}")).text
    assert f"Job {job_id}" in page
    assert '<span class="badge badge-failed" data-testid="job-status">failed</span>' in page
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    payload = re.search(r'<pre id="payload">(.*?)</pre>', page, re.S)
    assert payload is not None and '"n": 1' in payload.group(1).replace("&#34;", '"')
    assert len(re.findall(r'<tr data-run-id="\d+">', page)) == 2
    # Handler notes in their own column; the error in full in the error column.
    assert "<th>notes</th><th>error</th>" in page
    row = re.search(rf'<tr data-run-id="{second}">(.*?)</tr>', page, re.S)
    assert row is not None
    assert re.search(
        r'<td class="notes">did it\nhalf</td>\s*<td class="error"><pre class="error-text">'
        r"second &lt;script&gt;alert\(1\)&lt;/script&gt;</pre></td>",
        row.group(1),
    )
    assert '<td class="num">&lt;1 ms</td>' in row.group(1)
    assert '<td class="num">12 ms</td>' in page
    assert 'form id="retry"' in page
    assert 'form id="cancel"' not in page and 'form id="run-now"' not in page
    for path in ["/dashboard/jobs", "/dashboard/runs"]:
        listing = (await site.client.get(path)).text
        assert "<script>" not in listing and "&lt;script&gt;" in listing


async def test_runs_list_filters_and_shows_who_ran_manual_runs(site: Site, db: store.Store) -> None:
    queued = await factories.make_job(db, status="succeeded")
    run_ok = await _insert_run(db, queued, status="succeeded")
    run_failed = await _insert_run(db, queued, status="failed", attempt=2)
    uuid_user = "11111111-2222-3333-4444-555555555555"
    manual = await factories.make_job(db, status="succeeded", run_type="manual")
    run_manual = await _insert_run(
        db, manual, status="succeeded", run_type="manual", user=uuid_user
    )
    await site.login()
    page = (await site.client.get("/dashboard/runs")).text
    assert [int(r) for r in re.findall(r'<tr data-run-id="(\d+)">', page)] == [
        run_manual,
        run_failed,
        run_ok,
    ]
    assert uuid_user in page
    failed_only = (await site.client.get("/dashboard/runs?status=failed")).text
    assert re.findall(r'data-run-id="(\d+)"', failed_only) == [str(run_failed)]
    manual_only = (await site.client.get("/dashboard/runs?run_type=manual")).text
    assert re.findall(r'data-run-id="(\d+)"', manual_only) == [str(run_manual)]


# -- job actions -------------------------------------------------------------------------------


async def test_retry_gives_a_failed_job_one_more_attempt(site: Site, db: store.Store) -> None:
    job_id = await factories.make_job(
        db, status="failed", attempts=3, max_attempts=3, last_error="boom", dedupe_key="k1"
    )
    token = await site.login()
    response = await site.post(f"/dashboard/jobs/{job_id}/retry", token)
    assert location(response) == f"/dashboard/jobs/{job_id}"
    job = await factories.job(db, job_id)
    assert (job["status"], job["attempts"], job["max_attempts"]) == ("pending", 3, 4)
    assert job["last_error"] == "boom" and job["finished_at"] is None
    assert job["run_at"] <= await db.database_now()
    entry = (await site.audit())[-1]
    assert (entry["actor"], entry["action"], entry["target"]) == (
        "alice",
        "job_retry",
        f"job:{job_id}",
    )
    assert entry["detail"]["previous_status"] == "failed"
    page = await site.client.get(f"/dashboard/jobs/{job_id}")
    assert "is pending again" in page.text and 'class="flash flash-ok"' in page.text
    assert 'form id="cancel"' in page.text and 'form id="run-now"' in page.text
    # Pending now: a second retry is refused and changes nothing.
    again = await site.post(f"/dashboard/jobs/{job_id}/retry", token)
    assert again.status_code == 409 and "is pending and cannot be retried" in again.text
    assert (await factories.job(db, job_id))["max_attempts"] == 4
    assert len(await site.audit()) == 2


async def test_retry_of_a_job_whose_dedupe_key_is_live_again_is_a_conflict(
    site: Site, db: store.Store
) -> None:
    job_id = await factories.make_job(db, status="cancelled", dedupe_key="k")
    await factories.make_job(db, status="pending", dedupe_key="k")
    token = await site.login()
    response = await site.post(f"/dashboard/jobs/{job_id}/retry", token)
    assert response.status_code == 409
    assert (await factories.job(db, job_id))["status"] == "cancelled"


async def test_cancel_a_running_job_discards_its_late_finish(site: Site, db: store.Store) -> None:
    started = datetime.now(UTC) - timedelta(seconds=5)
    job_id = await factories.make_job(
        db,
        status="running",
        attempts=1,
        locked_by="w1",
        started_at=started,
        lease_expires_at=datetime.now(UTC) + timedelta(minutes=1),
    )
    token = await site.login()
    response = await site.post(f"/dashboard/jobs/{job_id}/cancel", token)
    assert location(response) == f"/dashboard/jobs/{job_id}"
    job = await factories.job(db, job_id)
    assert (job["status"], job["locked_by"], job["lease_expires_at"]) == ("cancelled", None, None)
    [run] = await factories.runs(db, job_id)
    assert (run["status"], run["attempt"], run["worker_id"]) == ("cancelled", 1, "w1")
    assert run["error"] == "cancelled by alice"
    # The worker finishes its attempt later: the engine's status guard discards it.
    late = store.Finish(
        job_id=job_id,
        attempt=1,
        job_status="succeeded",
        retry_delay_s=0,
        error=None,
        result={"ok": True},
        run_status="succeeded",
        reason="ok",
        rows_affected=None,
        notes=None,
        started_at=started,
        duration_ms=5000,
        spend_attempt=True,
    )
    assert await db.finish([late], worker_id="w1") == set()
    assert (await factories.job(db, job_id))["status"] == "cancelled"
    assert len(await factories.runs(db, job_id)) == 1
    assert (await db.extend_leases([(job_id, 1)], worker_id="w1", lease_s=60)) == set()
    entry = (await site.audit())[-1]
    assert (entry["action"], entry["target"]) == ("job_cancel", f"job:{job_id}")
    page = (await site.client.get(f"/dashboard/jobs/{job_id}")).text
    assert "its worker stops the handler" in page and 'form id="retry"' in page


async def test_cancel_a_pending_job_and_refuse_a_finished_one(site: Site, db: store.Store) -> None:
    pending = await factories.make_job(db)
    done = await factories.make_job(db, status="succeeded")
    token = await site.login()
    assert location(await site.post(f"/dashboard/jobs/{pending}/cancel", token))
    assert (await factories.job(db, pending))["status"] == "cancelled"
    assert await factories.runs(db, pending) == []
    refused = await site.post(f"/dashboard/jobs/{done}/cancel", token)
    assert refused.status_code == 409 and "Nothing changed" in refused.text
    assert (await factories.job(db, done))["status"] == "succeeded"
    assert (await site.post("/dashboard/jobs/99999/cancel", token)).status_code == 404
    assert (await site.post("/dashboard/jobs/abc/cancel", token)).status_code == 404
    assert [e["action"] for e in await site.audit()] == ["login", "job_cancel"]


async def test_run_now_makes_a_pending_job_due(site: Site, db: store.Store) -> None:
    later = datetime.now(UTC) + timedelta(days=1)
    job_id = await factories.make_job(db, run_at=later)
    running = await factories.make_job(db, status="running", attempts=1)
    token = await site.login()
    assert location(await site.post(f"/dashboard/jobs/{job_id}/run-now", token))
    assert (await factories.job(db, job_id))["run_at"] <= await db.database_now()
    refused = await site.post(f"/dashboard/jobs/{running}/run-now", token)
    assert refused.status_code == 409
    assert [e["action"] for e in await site.audit()] == ["login", "job_run_now"]


# -- queues ------------------------------------------------------------------------------------


async def test_pause_and_resume_a_queue(site: Site, db: store.Store) -> None:
    token = await site.login()
    paused = await site.post("/dashboard/queues/pause", token, queue="mail", reason="outage")
    assert location(paused) == "/dashboard/"
    [row] = await factories.paused_queues(db)
    assert (row["queue"], row["reason"]) == ("mail", "outage")
    again = await site.post("/dashboard/queues/pause", token, queue="mail")
    assert location(again) == "/dashboard/"
    assert "already paused" in (await site.client.get("/dashboard/")).text
    assert (await site.post("/dashboard/queues/pause", token, queue="")).status_code == 400
    assert (await site.post("/dashboard/queues/pause", token, queue="a b")).status_code == 400
    assert location(await site.post("/dashboard/queues/mail/resume", token)) == "/dashboard/"
    assert await factories.paused_queues(db) == []
    assert location(await site.post("/dashboard/queues/mail/resume", token))
    actions = [(e["action"], e["target"]) for e in await site.audit()]
    assert actions == [
        ("login", "dashboard"),
        ("queue_pause", "queue:mail"),
        ("queue_resume", "queue:mail"),
    ]


# -- schedules ---------------------------------------------------------------------------------


SCHEDULE = {
    "name": "nightly",
    "cron": "0 6 * * *",
    "timezone": "Europe/London",
    "task_type": "call_endpoint",
    "payload": '{"endpoint": "report"}',
    "queue": "default",
}
TOKYO = {"cron": "0 9 * * *", "timezone": "Asia/Tokyo"}


async def test_create_a_schedule_and_refuse_bad_ones(site: Site, db: store.Store) -> None:
    token = await site.login()
    for change, message in [
        ({"cron": "61 * * * *"}, "invalid cron expression"),
        ({"cron": ""}, "cron"),
        ({"timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"payload": "{not json"}, "payload is not valid JSON"),
        ({"payload": "[1, 2]"}, "payload must be a JSON object"),
        ({"name": "has space"}, "invalid schedule name"),
        ({"task_type": ""}, "task type"),
    ]:
        response = await site.post("/dashboard/schedules", token, **{**SCHEDULE, **change})
        assert response.status_code == 400, change
        assert "Schedule not created" in response.text and message in response.text, change
        assert 'form id="schedule-create"' in response.text
    assert await factories.schedules(db) == []
    created = await site.post("/dashboard/schedules", token, **SCHEDULE)
    assert location(created) == "/dashboard/schedules/nightly"
    [row] = await factories.schedules(db)
    assert (row["cron"], row["timezone"], row["payload"]) == (
        "0 6 * * *",
        "Europe/London",
        {"endpoint": "report"},
    )
    duplicate = await site.post("/dashboard/schedules", token, **SCHEDULE)
    assert duplicate.status_code == 400 and "already exists" in duplicate.text
    entry = (await site.audit())[-1]
    assert (entry["action"], entry["target"]) == ("schedule_create", "schedule:nightly")
    listing = (await site.client.get("/dashboard/schedules")).text
    assert '<tr data-schedule="nightly">' in listing
    assert 'data-testid="schedule-active">active</span>' in listing
    assert re.search(r"\d\d:00:00 (GMT|BST)", listing)  # next run in its own timezone
    assert 'action="/dashboard/schedules/nightly/pause"' in listing
    # Next run in the schedule's timezone and, when that reads differently, in UTC.
    tokyo = {**SCHEDULE, "name": "jp", **TOKYO}
    assert location(await site.post("/dashboard/schedules", token, **tokyo))
    row = _schedule_row((await site.client.get("/dashboard/schedules")).text, "jp")
    assert re.search(r"\d\d:00:00 JST<div class=\"muted\">\S+ \d\d:00:00 UTC</div>", row)


async def test_pause_resume_retime_and_run_a_schedule(site: Site, db: store.Store) -> None:
    token = await site.login()
    assert location(await site.post("/dashboard/schedules", token, **SCHEDULE))
    paused = await site.post("/dashboard/schedules/nightly/pause", token)
    assert location(paused) == "/dashboard/schedules"
    listing = (await site.client.get("/dashboard/schedules")).text
    assert 'data-testid="schedule-active">paused</span>' in listing
    assert 'class="resume" method="post" action="/dashboard/schedules/nightly/resume"' in listing
    assert location(await site.post("/dashboard/schedules/nightly/pause", token))
    assert location(await site.post("/dashboard/schedules/nightly/resume", token))
    [row] = await factories.schedules(db)
    assert row["active"] is True
    assert (await site.post("/dashboard/schedules/nope/pause", token)).status_code == 404

    bad = await site.post(
        "/dashboard/schedules/nightly/retime", token, cron="* * *", timezone="UTC"
    )
    assert bad.status_code == 400 and "expected 5 fields" in bad.text
    assert 'form id="retime"' in bad.text
    bad_zone = await site.post(
        "/dashboard/schedules/nightly/retime", token, cron="*/5 * * * *", timezone="Nowhere"
    )
    assert bad_zone.status_code == 400
    assert (await factories.schedules(db))[0]["cron"] == "0 6 * * *"
    retimed = await site.post(
        "/dashboard/schedules/nightly/retime", token, cron="*/5 * * * *", timezone="UTC"
    )
    assert location(retimed) == "/dashboard/schedules/nightly"
    [row] = await factories.schedules(db)
    assert (row["cron"], row["timezone"]) == ("*/5 * * * *", "UTC")
    # In UTC the next run is shown once; created, paused, resumed, re-timed: never ticked.
    listed = _schedule_row((await site.client.get("/dashboard/schedules")).text, "nightly")
    assert len(re.findall(r"\d\d:\d\d:00 UTC", listed)) == 1
    detail = (await site.client.get("/dashboard/schedules/nightly")).text
    assert len(re.findall(r"UTC", _field(detail, "next run"))) == 1
    assert _field(detail, "last tick") == '<span class="muted">never</span>'

    ran = await site.post("/dashboard/schedules/nightly/run", token)
    job_id = int(location(ran).rsplit("/", 1)[1])
    job = await factories.job(db, job_id)
    assert (job["run_type"], job["schedule_name"], job["task_type"]) == (
        "manual",
        "nightly",
        "call_endpoint",
    )
    await _insert_run(db, job_id, status="succeeded", run_type="manual", schedule="nightly")
    runs = (await site.client.get("/dashboard/runs?run_type=manual")).text
    assert re.search(r"<td>alice</td>", runs)
    detail = (await site.client.get("/dashboard/schedules/nightly")).text
    assert f'data-job-id="{job_id}"' in detail and "schedule_run_now" not in detail
    assert _field(detail, "last tick") == '<span class="muted">never</span>'  # manual run
    # A tick the scheduler enqueued, whose run_at a retry has moved since: the tick shown
    # is the one in its dedupe key.
    tick = datetime(2026, 1, 5, 10, 5, tzinfo=UTC)
    cron_job = await factories.make_job(
        db,
        task_type="call_endpoint",
        run_type="cron",
        schedule_name="nightly",
        dedupe_key=scheduler.dedupe_key("nightly", tick),
        run_at=tick + timedelta(days=3),
    )
    await factories.make_job(
        db, task_type="call_endpoint", run_type="manual", schedule_name="nightly"
    )
    ticked = (await site.client.get("/dashboard/schedules/nightly")).text
    assert _field(ticked, "last tick") == (
        f'2026-01-05 10:05:00 UTC <a href="/dashboard/jobs/{cron_job}">job {cron_job}</a>'
    )
    assert [e["action"] for e in await site.audit()] == [
        "login",
        "schedule_create",
        "schedule_pause",
        "schedule_resume",
        "schedule_retime",
        "schedule_run_now",
    ]
    assert (await site.audit())[-1]["target"] == f"job:{job_id}"


# -- plans -------------------------------------------------------------------------------------


async def test_every_list_and_overview_query_reads_an_index(db: store.Store) -> None:
    """On a table of many finished jobs, no page query scans job_queue or job_runs whole
    (the one exception, the exact succeeded count, runs only on small tables). The schedule
    list and history are SQL functions of schema/0002 (their plans are opaque here); they
    read job_queue_schedule_idx and job_runs_schedule_idx."""
    await db.pool.execute(
        """
        INSERT INTO job_queue (task_type, queue, status, attempts, last_error, schedule_name,
                               created_at, finished_at)
        SELECT 't' || (i % 7), 'q' || (i % 3),
               CASE WHEN i % 1000 = 0 THEN 'failed' WHEN i % 997 = 0 THEN 'cancelled'
                    WHEN i > 59900 THEN 'pending' ELSE 'succeeded' END,
               1, CASE WHEN i % 1000 = 0 THEN 'boom ' || i END,
               CASE WHEN i % 500 = 0 THEN 's1' END,
               now() - make_interval(secs => 60000 - i), now()
          FROM generate_series(1, 60000) AS i
        """
    )
    await db.pool.execute(
        """
        INSERT INTO job_runs (job_id, job_key, queue, run_type, status, attempt, started_at,
                              finished_at, duration_ms)
        SELECT i, 't', 'q', CASE WHEN i % 700 = 0 THEN 'manual' ELSE 'queue' END,
               CASE WHEN i % 1000 = 0 THEN 'failed' ELSE 'succeeded' END, 1,
               now() - make_interval(secs => (60000 - i) * 20), now(), 5
          FROM generate_series(1, 60000) AS i
        """
    )
    await db.pool.execute("ANALYZE job_queue; ANALYZE job_runs")
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    cases: list[tuple[str, tuple[Any, ...]]] = [
        ("overview_counts", ()),
        ("live_breakdown", ()),
        ("throughput", (hour_ago, "minute")),
        ("jobs", (None, None, None, None, None, 51)),
        ("jobs", ("failed", None, None, None, None, 51)),
        ("jobs", ("cancelled", "q1", None, None, 50000, 51)),
        ("jobs", ("pending", None, None, None, None, 51)),
        ("jobs", (None, None, None, "boom 5", None, 51)),
        ("runs", (None, None, None, None, None, 51)),
        ("runs", ("failed", None, None, None, None, 51)),
        ("runs", (None, "manual", None, None, 40000, 51)),
        ("job_runs", (5, 200)),
        ("schedule_jobs", ("s1", None, 51)),
        ("schedule_last_tick", ("s1",)),
        ("audit_entries", ("job:1", 50)),
        ("recent_audit", (10,)),
        ("job", (5,)),
        ("jobs_window", (None, "nobody", None, None, None, 51, 40000)),
        ("jobs_window", (None, None, "t3", "boom", 50000, 51, 40000)),
        ("bulk_count", ("failed", "q1", None, None, None)),
        ("bulk_count", ("cancelled", None, "t1", None, 50000)),
        ("bulk_count", ("pending", "q1", None, None, None)),
        ("job_id_range", ()),
    ]
    async with db.pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(Q["read_settings"], "10s")
        for name, args in cases:
            plan = json.dumps(await conn.fetchval("EXPLAIN (FORMAT JSON) " + Q[name], *args))
            scanned = re.findall(r'"Node Type": "Seq Scan", [^}]*?"Relation Name": "(\w+)"', plan)
            assert not {"job_queue", "job_runs"} & set(scanned), (name, args, plan)
            assert "job_queue" in plan or "job_runs" in plan or "job_admin_audit" in plan


def _schedule_row(listing: str, name: str) -> str:
    row = re.search(rf'<tr data-schedule="{name}">(.*?)</tr>', listing, re.S)
    assert row is not None, name
    return row.group(1)


def _field(page: str, label: str) -> str:
    """The value of `label` in a page's field list (<dt>label</dt><dd>value</dd>)."""
    found = re.search(rf"<dt>{label}</dt><dd[^>]*>(.*?)</dd>", page, re.S)
    assert found is not None, label
    return found.group(1)


# -- helpers -----------------------------------------------------------------------------------


async def _insert_run(
    db: store.Store,
    job_id: int,
    *,
    status: str,
    attempt: int = 1,
    error: str | None = None,
    run_type: str = "queue",
    user: str | None = None,
    schedule: str | None = None,
) -> int:
    run_id = await db.pool.fetchval(
        """
        INSERT INTO job_runs (job_id, job_key, queue, run_type, status, attempt, error, user_id,
                              schedule_name, started_at, finished_at, duration_ms)
        VALUES ($1, 'noop', 'default', $2, $3, $4, $5, $6::uuid, $7, now(), now(), 12)
        RETURNING id
        """,
        job_id,
        run_type,
        status,
        attempt,
        error,
        user,
        schedule,
    )
    return int(run_id)
