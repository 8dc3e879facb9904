"""What a dashboard page or action works with: the request, its session, rendering and
redirects with a flash message, and checked reading of user input."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from worker import http, store
from worker.clock import Clock
from worker.config import Settings
from worker.dashboard import auth, render

FLASH_COOKIE = "worker_flash"
PAGE_SIZE = 50
JOB_STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
RUN_STATUSES = ("succeeded", "retry", "failed", "cancelled", "rescued")
RUN_TYPES = ("queue", "cron", "manual")
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_TASK_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_MAX_TEXT_CHARS = 200


class App(Protocol):
    """The parts of the Dashboard a view uses."""

    settings: Settings
    db: store.Store
    clock: Clock
    auth: auth.Authenticator
    statement_timeout_s: float


class BadInput(Exception):
    """A query or form value is refused: 400 with this message."""


@dataclass(frozen=True, slots=True)
class Flash:
    kind: str  # "ok" or "error"
    text: str


@dataclass(frozen=True, slots=True)
class View:
    app: App
    request: http.Request
    session: auth.Session

    @property
    def actor(self) -> store.Actor:
        return store.Actor(name=self.session.user, remote_addr=self.request.remote_addr or None)

    def reads(self) -> contextlib.AbstractAsyncContextManager[store.Reads]:
        """The page's read-only transaction (store.Store.admin_reads)."""
        return self.app.db.admin_reads(statement_timeout_s=self.app.statement_timeout_s)

    def page(
        self, template: str, *, status: int = 200, flash: Flash | None = None, **context: Any
    ) -> http.Response:
        """A full page; a flash message passed here or left by the previous redirect."""
        left = read_flash(self.request)
        response = render.html(
            template,
            status,
            user=self.session.user,
            path=self.request.path,
            csrf_token=self.app.auth.csrf_token(self.session),
            flash=flash or left,
            **context,
        )
        if left is None:
            return response
        return with_headers(response, ("Set-Cookie", flash_cookie(None, self.app.settings)))

    def redirect(self, location: str, message: str, *, kind: str = "ok") -> http.Response:
        """303 to `location`, which shows `message` once."""
        return see_other(location, flash_cookie(Flash(kind, message), self.app.settings))

    def form(self) -> dict[str, list[str]]:
        return self.request.form()


# -- responses -------------------------------------------------------------------------------


def see_other(location: str, *cookies: str) -> http.Response:
    headers = (("Location", location), *(("Set-Cookie", cookie) for cookie in cookies))
    return http.Response(303, b"", headers=headers)


def with_headers(response: http.Response, *headers: tuple[str, str]) -> http.Response:
    return http.Response(
        response.status, response.body, response.content_type, (*response.headers, *headers)
    )


def cookie(name: str, value: str, settings: Settings, *, max_age_s: int) -> str:
    """A dashboard cookie: never readable by scripts, never sent cross-site, only under
    /dashboard; Secure when WORKER_DASHBOARD_SECURE_COOKIE says the site is HTTPS."""
    secure = "; Secure" if settings.dashboard_secure_cookie else ""
    return (
        f"{name}={value}; Path=/dashboard; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}"
    )


def flash_cookie(flash: Flash | None, settings: Settings) -> str:
    if flash is None:
        return cookie(FLASH_COOKIE, "", settings, max_age_s=0)
    data = json.dumps({"k": flash.kind, "t": flash.text[:300]}).encode()
    value = base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
    return cookie(FLASH_COOKIE, value, settings, max_age_s=60)


def read_flash(request: http.Request) -> Flash | None:
    value = request.cookies.get(FLASH_COOKIE)
    if not value:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        kind, text = str(data["k"]), str(data["t"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return Flash("error" if kind == "error" else "ok", text[:300])


# -- input ----------------------------------------------------------------------------------


def first(values: Mapping[str, list[str]], name: str) -> str:
    found = values.get(name)
    return found[0].strip() if found else ""


def choice(values: Mapping[str, list[str]], name: str, allowed: tuple[str, ...]) -> str | None:
    """An optional value from a closed set ("" = any)."""
    value = first(values, name)
    if not value:
        return None
    if value not in allowed:
        raise BadInput(f"{name} must be one of {', '.join(allowed)} (got {value!r:.80})")
    return value


def name(values: Mapping[str, list[str]], field: str, *, required: bool = False) -> str | None:
    """A queue name (1-64 of A-Z a-z 0-9 _ . : -), optional unless `required`."""
    return _matching(values, field, _NAME, "1-64 of A-Z a-z 0-9 _ . : -", required)


def task_type(values: Mapping[str, list[str]], field: str) -> str | None:
    return _matching(values, field, _TASK_TYPE, "1-128 of A-Z a-z 0-9 _ . : -", False)


def _matching(
    values: Mapping[str, list[str]], field: str, pattern: re.Pattern[str], rule: str, req: bool
) -> str | None:
    value = first(values, field)
    if not value:
        if req:
            raise BadInput(f"{field} is required")
        return None
    if not pattern.fullmatch(value):
        raise BadInput(f"{field} must be {rule} (got {value!r:.80})")
    return value


def text(values: Mapping[str, list[str]], field: str, *, max_chars: int = _MAX_TEXT_CHARS) -> str:
    value = first(values, field)
    if len(value) > max_chars or any(ord(c) < 32 for c in value):
        raise BadInput(f"{field} must be at most {max_chars} printable characters")
    return value


def before(values: Mapping[str, list[str]]) -> int | None:
    """The keyset cursor: list ids below this one."""
    value = first(values, "before")
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise BadInput("before must be a job or run id")
    return int(value)


def json_object(values: Mapping[str, list[str]], field: str) -> dict[str, Any]:
    raw = first(values, field) or "{}"
    if len(raw) > 16_384:
        raise BadInput(f"{field} is longer than 16 KiB")
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BadInput(f"{field} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadInput(f"{field} must be a JSON object")
    return value
