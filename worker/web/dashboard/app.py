"""The dashboard as a Starlette application mounted at /dashboard: the login gate, CSRF and
Origin checks, security headers on every response, and the routes of pages.py and
actions.py."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit

import anyio.to_thread
import asyncpg
import jwt
import structlog
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker import redact, store
from worker.admin.store import Actor
from worker.web import ratelimit
from worker.web.api import security
from worker.web.dashboard import actions, auth, pages, render
from worker.web.dashboard.view import (
    BadInput,
    Flash,
    Values,
    View,
    clear_cookie,
    first,
    read_flash,
    see_other,
    set_cookie,
    set_flash,
)
from worker.web.services import Services

log = structlog.get_logger("worker.dashboard")

PREFIX = "/dashboard"
LOGIN = "/dashboard/login"
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; connect-src 'self'; style-src 'self'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
)
_SAFE_NEXT = re.compile(r"/dashboard/[A-Za-z0-9/_.:@%?&=+-]{0,400}")
_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    *store.CONNECTION_ERRORS,
    asyncpg.PostgresError,
)
_MAX_FIELDS = 200
MAX_BODY_BYTES = 64 * 1024
Page = Callable[[View], Awaitable[Response]]


class _JobId(Convertor[int]):
    """A job id in a path: what fits a bigint (a longer number is no job, 404)."""

    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("jobid", _JobId())


class Dashboard:
    """The dashboard's state (view.App): only the login page and the stylesheet are served
    without a session; anything else redirects to the login page."""

    def __init__(self, services: Services, *, limiter: ratelimit.FailureLimiter | None) -> None:
        settings = services.settings
        if settings.dashboard_users is None:
            raise ValueError("WORKER_DASHBOARD_USERS is not set")
        self.settings = settings
        self.admin = services.admin
        self.registry = services.registry
        self.clock = services.clock
        self.session_s = round(settings.dashboard_session_hours * 3600)
        self.api_auth = services.auth
        self.auth = auth.Authenticator(
            settings.dashboard_users,
            self.admin,
            session_s=self.session_s,
            clock=self.clock,
            app_accounts=settings.api_jwt_secret is not None,
        )
        self.limiter = limiter or ratelimit.FailureLimiter(
            max_failures=settings.auth_failures_per_minute
        )

    def view(self, page: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await self._gated(page, request)
            except _DATABASE_ERRORS as exc:
                log.warning(
                    "dashboard_database_error", path=request.url.path, error=redact.describe(exc)
                )
                return error_page(503, "The database did not answer in time; try again.")
            except Exception:  # a broken page answers 500 and says so in the log
                log.exception("dashboard_failed", path=request.url.path)
                return error_page(500, "Something went wrong; the worker's log says what.")

        return endpoint

    async def _gated(self, page: Page, request: Request) -> Response:
        session = await self.auth.verify(request.cookies.get(auth.SESSION_COOKIE))
        if session is None:
            return see_other(_login_url(request))
        form: Values = {}
        if request.method == "POST":
            form = await _form(request)
            refusal = self._check_post(request, session, form)
            if refusal is not None:
                return refusal
        view = View(self, request, session, _values(request.query_params.multi_items()), form)
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

    # -- CSRF and Origin ----------------------------------------------------------------------

    def _check_post(self, request: Request, session: auth.Session, form: Values) -> Response | None:
        """403 unless the POST comes from our own pages: same Origin (when the browser says)
        and the session's CSRF token in the form."""
        if not _same_origin(request.headers):
            log.warning("dashboard_cross_origin_post", path=request.url.path, user=session.user)
            return error_page(403, "Refused: this form was not sent from the dashboard.")
        token = first(form, "csrf_token")
        if not token or not self.auth.check_csrf(session, token):
            log.warning("dashboard_csrf_refused", path=request.url.path, user=session.user)
            return error_page(403, "Refused: the form's security token is missing or stale.")
        return None

    # -- login and logout -----------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        try:
            return await self._login(request)
        except _DATABASE_ERRORS as exc:
            log.warning("dashboard_database_error", path=LOGIN, error=redact.describe(exc))
            return error_page(503, "The database did not answer in time; try again.")

    async def _login(self, request: Request) -> Response:
        if request.method == "GET":
            if await self.auth.verify(request.cookies.get(auth.SESSION_COOKIE)) is not None:
                return see_other("/dashboard/")
            next_page = _safe_next(request.query_params.get("next", ""))
            return self._login_page(200, next_page, read_flash(request), clear_flash=True)
        if not _same_origin(request.headers):
            return error_page(403, "Refused: this form was not sent from the dashboard.")
        form = await _form(request)
        user, password = first(form, "user"), (form.get("password") or [""])[0]
        next_page = _safe_next(first(form, "next"))
        remote = request.client.host if request.client else None
        address = remote or "unknown"
        now_s = self.clock.monotonic()
        if self.limiter.blocked(address, now_s):
            log.warning("dashboard_login_limited", remote_addr=address)
            message = "Too many failed logins from your address: try again in a minute."
            return self._login_page(429, next_page, Flash("error", message))
        actor = Actor(name=user[:64] or "(empty)", remote_addr=remote)
        # In a thread: a hashed password takes tens of milliseconds to verify, on purpose.
        if not await anyio.to_thread.run_sync(self.auth.check_password, user, password):
            self.limiter.failed(address, now_s)
            log.warning("dashboard_login_failed", user=actor.name, remote_addr=address)
            await self.admin.audit(actor, "login_failed", "dashboard")
            message = "Wrong user name or password."
            return self._login_page(401, next_page, Flash("error", message))
        value = await self.auth.issue(user, remote)
        await self.admin.audit(actor, "login", "dashboard")
        log.info("dashboard_login", user=user, remote_addr=address)
        response = see_other(next_page)
        set_cookie(response, auth.SESSION_COOKIE, value, self.settings, max_age_s=self.session_s)
        return response

    async def login_token(self, request: Request) -> Response:
        try:
            return await self._login_token(request)
        except _DATABASE_ERRORS as exc:
            log.warning("dashboard_database_error", path=LOGIN, error=redact.describe(exc))
            return error_page(503, "The database did not answer in time; try again.")

    async def _login_token(self, request: Request) -> Response:
        """Sign in with the app's own account: an access token the app's Supabase client
        holds (`session.access_token`), checked by the API's rules (HS256 with the
        project's JWT secret, unexpired, the audience), with the `admin` scope or the
        service role. No password of the app reaches the worker; the session ends when
        the token expires, if that is sooner than the session length."""
        if not self.auth.app_accounts:
            return error_page(404, "There is no such page.")
        if not _same_origin(request.headers):
            return error_page(403, "Refused: this form was not sent from the dashboard.")
        form = await _form(request)
        token = (form.get("access_token") or [""])[0].strip()
        next_page = _safe_next(first(form, "next"))
        remote = request.client.host if request.client else None
        try:
            principal = self.api_auth.authenticate(f"Bearer {token}", remote)
        except security.AuthFailure as exc:
            actor = Actor(name="jwt:(refused)", remote_addr=remote)
            await self.admin.audit(actor, "login_failed", "dashboard")
            message = "That access token is not valid here (expired, or not this project's)."
            if exc.status == 429:
                message = "Too many failed logins from your address: try again in a minute."
            return self._login_page(exc.status, next_page, Flash("error", message))
        if not principal.allows("admin"):
            await self.admin.audit(principal.actor, "login_refused", "dashboard")
            message = (
                "This account may not administer the worker: it needs the admin scope "
                f"({self.settings.api_jwt_scopes_claim}) or the service role."
            )
            return self._login_page(403, next_page, Flash("error", message))
        not_after = _token_expiry(token)
        value = await self.auth.issue(
            principal.name, remote, user_id=principal.user_id, not_after=not_after
        )
        await self.admin.audit(principal.actor, "login", "dashboard", {"with": "access_token"})
        log.info("dashboard_login", user=principal.name, remote_addr=remote, method="jwt")
        response = see_other(next_page)
        max_age_s = self.session_s
        if not_after is not None:
            max_age_s = max(1, min(max_age_s, int((not_after - self.clock.now()).total_seconds())))
        set_cookie(response, auth.SESSION_COOKIE, value, self.settings, max_age_s=max_age_s)
        return response

    def _login_page(
        self, status: int, next_page: str, flash: Flash | None, *, clear_flash: bool = False
    ) -> Response:
        response = render.html(
            "login.html",
            status,
            next=next_page,
            flash=flash,
            app_accounts=self.auth.app_accounts,
        )
        if clear_flash and flash is not None:
            clear_cookie(response, "worker_flash")
        return response

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """No such page (404, 405) or a refused body (413): without a session, even a page
        that does not exist sends a visitor to the login page, so the routes stay private."""
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            session = await self.auth.verify(request.cookies.get(auth.SESSION_COOKIE))
            if session is None:
                return see_other(_login_url(request))
        if exc.status_code in (404, 405):
            return error_page(exc.status_code, "There is no such page.", headers)
        return error_page(exc.status_code, str(exc.detail), headers)

    async def logout(self, view: View) -> Response:
        await self.auth.revoke(view.session)
        await self.admin.audit(view.actor, "logout", "dashboard")
        log.info("dashboard_logout", user=view.session.user)
        response = see_other(LOGIN)
        clear_cookie(response, auth.SESSION_COOKIE)
        set_flash(response, Flash("ok", "Logged out."), self.settings)
        return response


def create(services: Services, *, limiter: ratelimit.FailureLimiter | None = None) -> Starlette:
    """The /dashboard application (mount it at PREFIX)."""
    d = Dashboard(services, limiter=limiter)
    get, post = ["GET"], ["POST"]
    routes = [
        Route("/", d.view(pages.overview), methods=get),
        Route("/login", d.login, methods=["GET", "POST"]),
        Route("/login/token", d.login_token, methods=["POST"]),
        Route("/logout", d.view(d.logout), methods=post),
        Route("/jobs", d.view(pages.jobs), methods=get),
        Route("/jobs/bulk", d.view(actions.bulk_jobs), methods=post),
        Route("/jobs/{id:jobid}", d.view(pages.job), methods=get),
        Route("/jobs/{id:jobid}/delete", d.view(actions.delete_job), methods=post),
        Route("/jobs/{id:jobid}/retry", d.view(actions.retry_job), methods=post),
        Route("/jobs/{id:jobid}/cancel", d.view(actions.cancel_job), methods=post),
        Route("/jobs/{id:jobid}/run-now", d.view(actions.run_job_now), methods=post),
        Route("/schedules", d.view(pages.schedules), methods=get),
        Route("/schedules", d.view(actions.create_schedule), methods=post),
        Route("/schedules/{name}", d.view(pages.schedule), methods=get),
        Route("/schedules/{name}/pause", d.view(actions.pause_schedule), methods=post),
        Route("/schedules/{name}/resume", d.view(actions.resume_schedule), methods=post),
        Route("/schedules/{name}/retime", d.view(actions.retime_schedule), methods=post),
        Route("/schedules/{name}/run", d.view(actions.run_schedule_now), methods=post),
        Route("/schedules/{name}/edit", d.view(actions.edit_schedule), methods=post),
        Route("/schedules/{name}/delete", d.view(actions.delete_schedule), methods=post),
        Route("/enqueue", d.view(pages.enqueue), methods=get),
        Route("/enqueue", d.view(actions.enqueue_job), methods=post),
        Route("/workers", d.view(pages.workers), methods=get),
        Route("/playbook", d.view(pages.playbook), methods=get),
        Route("/runs", d.view(pages.runs), methods=get),
        Route("/queues/pause", d.view(actions.pause_queue), methods=post),
        Route("/queues/{queue}/resume", d.view(actions.resume_queue), methods=post),
        Mount("/static", StaticFiles(packages=[("worker.web.dashboard", "static")])),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            # Forms are small: a body past this is refused (413) before it is read.
            Middleware(RequestBodyLimitMiddleware, max_body_size=MAX_BODY_BYTES),
        ],
        exception_handlers={HTTPException: d.http_error},
    )


class SecurityHeaders:
    """A strict Content-Security-Policy and friends on every dashboard response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


async def _form(request: Request) -> Values:
    try:
        form = await request.form(max_files=0, max_fields=_MAX_FIELDS)
    except HTTPException:
        raise
    except Exception as exc:  # a malformed body: the form is empty, the checks refuse it
        log.warning("dashboard_bad_form", path=request.url.path, error=redact.describe(exc))
        return {}
    return _values((key, value) for key, value in form.multi_items() if isinstance(value, str))


def _values(items: object) -> Values:
    found: dict[str, list[str]] = {}
    for key, value in items:  # type: ignore[attr-defined]
        found.setdefault(str(key), []).append(str(value))
    return found


def _same_origin(headers: Headers) -> bool:
    """A browser's Origin (when sent) must name this host; a fetch marked cross-site is
    refused too."""
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host", "")
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


def _login_url(request: Request) -> str:
    path = request.url.path
    if request.method != "GET" or path == "/dashboard/":
        return LOGIN
    target = path
    if request.url.query:
        target += "?" + urlencode(request.query_params.multi_items())
    return f"{LOGIN}?{urlencode({'next': _safe_next(target)})}"


def _token_expiry(token: str) -> datetime | None:
    """The `exp` of an access token the API's authenticator has just verified."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        return datetime.fromtimestamp(float(claims["exp"]), tz=UTC)
    except (jwt.PyJWTError, KeyError, TypeError, ValueError, OverflowError):
        return None


def error_page(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A page for a request without a session behind it (or failing before one was read)."""
    titles = {403: "Forbidden", 404: "Not found", 405: "Method not allowed", 503: "Unavailable"}
    response = render.html(
        "bare_error.html", status, title=titles.get(status, "Error"), message=message
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
