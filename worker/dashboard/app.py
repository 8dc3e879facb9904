"""The dashboard as one HTTP handler mounted at /dashboard: the login gate, CSRF and Origin
checks, security headers on every response, and the routes of pages.py and actions.py."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from urllib.parse import urlencode, urlsplit

import asyncpg
import structlog

from worker import http, store
from worker.clock import Clock, SystemClock
from worker.config import Settings
from worker.dashboard import actions, auth, pages, render
from worker.dashboard.view import (
    BadInput,
    Flash,
    View,
    cookie,
    first,
    flash_cookie,
    read_flash,
    see_other,
    with_headers,
)

log = structlog.get_logger("worker.dashboard")

PREFIX = "/dashboard"
LOGIN = "/dashboard/login"
STYLESHEET = "/dashboard/static/dashboard.css"
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
)
_SAFE_NEXT = re.compile(r"/dashboard/[A-Za-z0-9/_.:@%?&=+-]{0,400}")
_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    *store.CONNECTION_ERRORS,
    asyncpg.PostgresError,
)
_HEALTH_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *_DATABASE_ERRORS)
Page = Callable[[View], Awaitable[http.Response]]


class Dashboard:
    """The /dashboard application. Only the login page and the stylesheet are served without
    a session; anything else redirects to the login page."""

    def __init__(
        self,
        settings: Settings,
        db: store.Store,
        *,
        clock: Clock | None = None,
        limiter: auth.LoginLimiter | None = None,
        statement_timeout_s: float = 10.0,
    ) -> None:
        if settings.dashboard_users is None:
            raise ValueError("WORKER_DASHBOARD_USERS is not set")
        self.settings = settings
        self.db = db
        self.clock = clock or SystemClock()
        self.auth = auth.Authenticator(settings.dashboard_users)
        self.limiter = limiter or auth.LoginLimiter()
        self.statement_timeout_s = statement_timeout_s
        self.session_s = round(settings.dashboard_session_hours * 3600)
        self.stylesheet = (
            resources.files("worker.dashboard").joinpath("static/dashboard.css").read_bytes()
        )
        self.router = http.Router()
        self._add_routes()

    def _add_routes(self) -> None:
        get, post = self.router.get, self.router.post
        get("/dashboard/", self._view(pages.overview))
        get("/dashboard/jobs", self._view(pages.jobs))
        get("/dashboard/jobs/{id:int}", self._view(pages.job))
        post("/dashboard/jobs/{id:int}/retry", self._view(actions.retry_job))
        post("/dashboard/jobs/{id:int}/cancel", self._view(actions.cancel_job))
        post("/dashboard/jobs/{id:int}/run-now", self._view(actions.run_job_now))
        get("/dashboard/schedules", self._view(pages.schedules))
        post("/dashboard/schedules", self._view(actions.create_schedule))
        get("/dashboard/schedules/{name}", self._view(pages.schedule))
        post("/dashboard/schedules/{name}/pause", self._view(actions.pause_schedule))
        post("/dashboard/schedules/{name}/resume", self._view(actions.resume_schedule))
        post("/dashboard/schedules/{name}/retime", self._view(actions.retime_schedule))
        post("/dashboard/schedules/{name}/run", self._view(actions.run_schedule_now))
        get("/dashboard/runs", self._view(pages.runs))
        post("/dashboard/queues/pause", self._view(actions.pause_queue))
        post("/dashboard/queues/{queue}/resume", self._view(actions.resume_queue))
        post("/dashboard/logout", self._view(self._logout))

    async def __call__(self, request: http.Request) -> http.Response:
        try:
            response = await self._dispatch(request)
        except _DATABASE_ERRORS as exc:
            log.warning("dashboard_database_error", path=request.path, error=str(exc)[:200])
            response = _error_page(503, "The database did not answer in time; try again.")
        except Exception:
            log.exception("dashboard_failed", path=request.path)
            response = _error_page(500, "Something went wrong; the worker's log says what.")
        return with_headers(response, *SECURITY_HEADERS)

    async def _dispatch(self, request: http.Request) -> http.Response:
        if request.path == PREFIX:
            return see_other("/dashboard/")
        if request.path == STYLESHEET and request.method == "GET":
            return http.Response(200, self.stylesheet, content_type="text/css; charset=utf-8")
        if request.path == LOGIN:
            return await self._login(request)
        session = self._session(request)
        if session is None:
            return see_other(_login_url(request))
        if request.method == "POST":
            refusal = self._check_post(request, session)
            if refusal is not None:
                return refusal
        response = await self.router(request)
        if response.status in (404, 405) and response.content_type.startswith("text/plain"):
            return _error_page(response.status, "There is no such page.", response.headers)
        return response

    def _session(self, request: http.Request) -> auth.Session | None:
        return self.auth.verify(request.cookies.get(auth.SESSION_COOKIE), self.clock.now())

    def _view(self, page: Page) -> http.Handler:
        async def handle(request: http.Request) -> http.Response:
            session = self._session(request)
            assert session is not None  # _dispatch let only requests with a session through
            view = View(self, request, session)
            try:
                return await page(view)
            except BadInput as exc:
                return view.page(
                    "error.html",
                    status=400,
                    flash=Flash("error", str(exc)),
                    title="Bad request",
                    message="Nothing was changed.",
                )

        return handle

    # -- CSRF and Origin ----------------------------------------------------------------------

    def _check_post(self, request: http.Request, session: auth.Session) -> http.Response | None:
        """403 unless the POST comes from our own pages: same Origin (when the browser says)
        and the session's CSRF token in the form."""
        if not _same_origin(request):
            log.warning("dashboard_cross_origin_post", path=request.path, user=session.user)
            return _error_page(403, "Refused: this form was not sent from the dashboard.")
        token = first(request.form(), "csrf_token")
        if not token or not self.auth.check_csrf(session, token):
            log.warning("dashboard_csrf_refused", path=request.path, user=session.user)
            return _error_page(403, "Refused: the form's security token is missing or stale.")
        return None

    # -- login and logout -----------------------------------------------------------------------

    async def _login(self, request: http.Request) -> http.Response:
        if request.method == "GET":
            if self._session(request) is not None:
                return see_other("/dashboard/")
            next_page = _safe_next(request.arg("next"))
            return _login_page(200, next_page, read_flash(request), clear_flash=True)
        if request.method != "POST":
            return _error_page(405, "Use the login form.", (("Allow", "GET, POST"),))
        if not _same_origin(request):
            return _error_page(403, "Refused: this form was not sent from the dashboard.")
        form = request.form()
        user, password = first(form, "user"), (form.get("password") or [""])[0]
        next_page = _safe_next(first(form, "next"))
        address = request.remote_addr or "unknown"
        now_s = self.clock.monotonic()
        if self.limiter.blocked(address, now_s):
            log.warning("dashboard_login_limited", remote_addr=address)
            message = "Too many failed logins from your address: try again in a minute."
            return _login_page(429, next_page, Flash("error", message))
        actor = store.Actor(name=user[:64] or "(empty)", remote_addr=request.remote_addr or None)
        if not self.auth.check_password(user, password):
            self.limiter.failed(address, now_s)
            log.warning("dashboard_login_failed", user=actor.name, remote_addr=address)
            await self.db.dashboard_audit(actor, "login_failed", "dashboard")
            return _login_page(401, next_page, Flash("error", "Wrong user name or password."))
        expires_at = self.clock.now().timestamp() + self.session_s
        value = self.auth.issue(user, expires_at)
        await self.db.dashboard_audit(actor, "login", "dashboard")
        log.info("dashboard_login", user=user, remote_addr=address)
        session_cookie = cookie(auth.SESSION_COOKIE, value, self.settings, max_age_s=self.session_s)
        return see_other(next_page, session_cookie)

    async def _logout(self, view: View) -> http.Response:
        await self.db.dashboard_audit(view.actor, "logout", "dashboard")
        log.info("dashboard_logout", user=view.session.user)
        return see_other(
            LOGIN,
            cookie(auth.SESSION_COOKIE, "", self.settings, max_age_s=0),
            flash_cookie(Flash("ok", "Logged out."), self.settings),
        )


def _same_origin(request: http.Request) -> bool:
    """A browser's Origin (when sent) must name this host; a fetch marked cross-site is
    refused too."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def _safe_next(target: str) -> str:
    """Where to go after logging in: a dashboard path, never another site or the login."""
    if _SAFE_NEXT.fullmatch(target) and not target.startswith(LOGIN) and ".." not in target:
        return target
    return "/dashboard/"


def _login_url(request: http.Request) -> str:
    if request.method != "GET" or request.path == "/dashboard/":
        return LOGIN
    target = request.path
    if request.query:
        target += "?" + urlencode(request.query, doseq=True)
    return f"{LOGIN}?{urlencode({'next': _safe_next(target)})}"


def _login_page(
    status: int, next_page: str, flash: Flash | None, *, clear_flash: bool = False
) -> http.Response:
    response = render.html("login.html", status, next=next_page, flash=flash)
    if clear_flash and flash is not None:
        return with_headers(response, ("Set-Cookie", "worker_flash=; Path=/dashboard; Max-Age=0"))
    return response


def _error_page(
    status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> http.Response:
    """A page for a request without a session behind it (or failing before one was read)."""
    titles = {403: "Forbidden", 404: "Not found", 405: "Method not allowed", 503: "Unavailable"}
    response = render.html(
        "bare_error.html", status, title=titles.get(status, "Error"), message=message
    )
    return with_headers(response, *headers)


def health(db: store.Store, *, timeout_s: float = 2.0) -> http.Handler:
    """/health of the dashboard-only process: 200 when the database answers quickly."""

    async def handle(request: http.Request) -> http.Response:
        try:
            async with asyncio.timeout(timeout_s):
                _, version = await db.server_version()
        except _HEALTH_ERRORS as exc:
            body = {"status": "unhealthy", "database": {"ok": False, "error": str(exc)[:200]}}
            return http.Response(503, json.dumps(body).encode() + b"\n", "application/json")
        body = {"status": "ok", "database": {"ok": True, "server_version": version}}
        return http.Response(200, json.dumps(body).encode() + b"\n", "application/json")

    return handle
