"""What a dashboard page or action works with: the request (its query and form already read),
its session, rendering and redirects with a flash message, and checked reading of input."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from worker import names
from worker import values as values_
from worker.admin.store import Actor, AdminStore, Reads
from worker.clock import Clock
from worker.config import Settings
from worker.registry import Registry
from worker.web.dashboard import auth, render

FLASH_COOKIE = "worker_flash"
COOKIE_PATH = "/dashboard"
PAGE_SIZE = 50
JOB_STATUSES = ("waiting", "pending", "running", "succeeded", "failed", "cancelled")
RUN_STATUSES = ("succeeded", "retry", "failed", "cancelled", "rescued")
RUN_TYPES = ("queue", "cron", "manual")
_MAX_TEXT_CHARS = 200

Values = Mapping[str, list[str]]


class App(Protocol):
    """The parts of the Dashboard a view uses."""

    settings: Settings
    admin: AdminStore
    registry: Registry
    clock: Clock
    auth: auth.Authenticator


class BadInput(Exception):
    """A query or form value is refused: 400 with this message."""


@dataclass(frozen=True, slots=True)
class Flash:
    kind: str  # "ok" or "error"
    text: str


@dataclass(frozen=True, slots=True)
class View:
    app: App
    request: Request
    session: auth.Session
    query: Values
    form: Values

    @property
    def actor(self) -> Actor:
        client = self.request.client
        return Actor(
            name=self.session.user,
            remote_addr=client.host if client else None,
            user_id=self.session.user_id,
        )

    @property
    def path(self) -> str:
        return self.request.url.path

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def int_param(self, name: str) -> int:
        value = self.request.path_params[name]
        assert isinstance(value, int)
        return value

    def reads(self) -> contextlib.AbstractAsyncContextManager[Reads]:
        """The page's read-only transaction (AdminStore.reads)."""
        return self.app.admin.reads()

    def page(
        self, template: str, *, status: int = 200, flash: Flash | None = None, **context: Any
    ) -> Response:
        """A full page; a flash message passed here or left by the previous redirect."""
        left = read_flash(self.request)
        response = render.html(
            template,
            status,
            user=self.session.user,
            path=self.path,
            csrf_token=self.app.auth.csrf_token(self.session),
            flash=flash or left,
            # Only a page read with GET may refresh itself (dashboard.js fetches its URL).
            refresh=self.request.method == "GET",
            **context,
        )
        if left is not None:
            clear_cookie(response, FLASH_COOKIE)
        return response

    def redirect(self, location: str, message: str, *, kind: str = "ok") -> Response:
        """303 to `location`, which shows `message` once."""
        response = see_other(location)
        set_flash(response, Flash(kind, message), self.app.settings)
        return response


# -- responses -------------------------------------------------------------------------------


def see_other(location: str) -> Response:
    return RedirectResponse(location, status_code=303)


def set_cookie(
    response: Response, name: str, value: str, settings: Settings, max_age_s: int
) -> None:
    """A dashboard cookie: never readable by scripts, never sent cross-site, only under
    /dashboard; Secure when WORKER_DASHBOARD_SECURE_COOKIE says the site is HTTPS."""
    response.set_cookie(
        name,
        value,
        max_age=max_age_s,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=settings.dashboard_secure_cookie,
    )


def clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict")


def set_flash(response: Response, flash: Flash, settings: Settings) -> None:
    data = json.dumps({"k": flash.kind, "t": flash.text[:300]}).encode()
    value = base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
    set_cookie(response, FLASH_COOKIE, value, settings, max_age_s=60)


def read_flash(request: Request) -> Flash | None:
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


def first(values: Values, name: str) -> str:
    found = values.get(name)
    return found[0].strip() if found else ""


def choice(values: Values, name: str, allowed: tuple[str, ...]) -> str | None:
    """An optional value from a closed set ("" = any)."""
    value = first(values, name)
    if not value:
        return None
    if value not in allowed:
        raise BadInput(f"{name} must be one of {', '.join(allowed)} (got {value!r:.80})")
    return value


def name(values: Values, field: str, *, required: bool = False) -> str | None:
    """A queue name, optional unless `required`."""
    value = first(values, field)
    if not value:
        if required:
            raise BadInput(f"{field} is required")
        return None
    if not names.is_queue(value):
        raise BadInput(f"{field} must be {names.QUEUE_RULE} (got {value!r:.80})")
    return value


def task_type(values: Values, field: str) -> str | None:
    value = first(values, field)
    if not value:
        return None
    if not names.is_task_type(value):
        raise BadInput(f"{field} must be {names.TASK_TYPE_RULE} (got {value!r:.80})")
    return value


def text(values: Values, field: str, *, max_chars: int = _MAX_TEXT_CHARS) -> str:
    value = first(values, field)
    if len(value) > max_chars or any(ord(c) < 32 for c in value):
        raise BadInput(f"{field} must be at most {max_chars} printable characters")
    return value


def before(values: Values) -> int | None:
    """The keyset cursor: list ids below this one."""
    value = first(values, "before")
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise BadInput("before must be a job or run id")
    return int(value)


def json_object(values: Values, field: str) -> dict[str, Any]:
    raw = first(values, field) or "{}"
    if len(raw) > 16_384:
        raise BadInput(f"{field} is longer than 16 KiB")
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BadInput(f"{field} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadInput(f"{field} must be a JSON object")
    problem = values_.jsonb_problem(value)
    if problem is not None:
        raise BadInput(f"{field}: {problem}")
    return value
