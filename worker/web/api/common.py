"""What every API route shares: its route class (each failure becomes an RFC 9457 problem,
`application/problem+json`, naming the field at fault, with no secret and no echo of the
refused value), the scope dependency, the services of the application, and the problem
responses each route documents."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import Depends
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from worker import errors, redact, store, values
from worker.web.api import security
from worker.web.api.models import Problem
from worker.web.services import Services

log = structlog.get_logger("worker.web.api")

STATE_KEY = "pg_job_worker_services"
_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="a WORKER_API_TOKENS token, or a Supabase access token",
    description="`Authorization: Bearer <token>`; scopes read, enqueue, admin.",
)
_PROBLEM_CONTENT = {security.PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": _PROBLEM_CONTENT, "model": Problem}
    for status, text in (
        (400, "The request is malformed (its JSON cannot be read)."),
        (401, "No valid credential."),
        (403, "The credential lacks the scope."),
        (413, "The body is too large."),
        (422, "A field is refused; `errors` names each one."),
        (429, "Too many failed authentications from this address."),
        (503, "The database cannot be reached or refused the statement."),
    )
}


def responses(
    *extra: int, ok: dict[int | str, dict[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The problem responses every route may give, plus `extra` ones (404, 409) and the
    route's other success responses (`ok`)."""
    texts = {404: "No such job, schedule or queue.", 409: "Not in a state this applies to."}
    found = {**(ok or {}), **PROBLEMS}
    for status in extra:
        found[status] = {
            "description": texts[status],
            "content": _PROBLEM_CONTENT,
            "model": Problem,
        }
    return found


def services(request: Request) -> Services:
    found: Services = getattr(request.app.state, STATE_KEY)
    return found


def scope(name: str) -> Any:
    """A dependency: the caller, who must hold scope `name` (401/403/429 otherwise)."""

    def authorized(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> security.Principal:
        return security.authorize(services(request).auth, request, name)

    return Depends(authorized)


class ProblemRoute(APIRoute):
    """A route whose every failure becomes a problem response."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # every failure answers a problem, never a traceback
                return to_problem(exc, request.url.path)

        return route


def to_problem(exc: Exception, path: str) -> Response:
    if isinstance(exc, security.AuthFailure):
        return exc.response(path)
    if isinstance(exc, RequestValidationError):
        return _validation(exc, path)
    if isinstance(exc, HTTPException):
        return security.problem(exc.status_code, str(exc.detail), instance=path)
    known = _known(exc)
    if known is not None:
        status, detail, fields = known
        return security.problem(status, detail, errors=fields, instance=path)
    if isinstance(exc, (*store.CONNECTION_ERRORS, asyncpg.PostgresError)):
        log.warning("api_database_error", path=path, error=redact.describe(exc))
        return security.problem(503, "The database did not answer or refused the statement.")
    log.exception("api_failed", path=path)
    return security.problem(500, "Something went wrong; the worker's log says what.")


def _known(exc: Exception) -> tuple[int, str, list[dict[str, str]]] | None:
    """The worker's own refusals: (status, detail, field problems)."""
    if isinstance(exc, errors.NotFound):
        return 404, str(exc), []
    if isinstance(exc, errors.Conflict):
        return 409, str(exc), []
    if isinstance(exc, errors.InvalidInput):
        fields = [{"pointer": f"#{where}", "detail": what} for where, what in exc.problems]
        return 422, str(exc), fields
    if isinstance(exc, errors.UnknownTask):
        return 422, str(exc), [{"pointer": "#/task_type", "detail": str(exc)}]
    if isinstance(exc, errors.ScheduleError):
        return 422, str(exc), []
    if isinstance(exc, errors.PermissionDenied):
        log.error("api_permission_denied", error=str(exc))
        return 503, "The worker's database role may not do this; see the worker's log.", []
    return None


def _validation(exc: RequestValidationError, path: str) -> Response:
    fields: list[dict[str, str]] = []
    malformed = False
    for error in exc.errors():
        # Field names come from the request: cut, as every echoed value is.
        loc = [values.cut(str(part)) for part in error.get("loc", ())]
        if error.get("type") == "json_invalid":
            malformed = True
            continue
        where, rest = (loc[0], loc[1:]) if loc else ("body", [])
        detail = str(error.get("msg", "invalid"))
        if where == "body":
            fields.append({"pointer": "#" + "".join(f"/{p}" for p in rest), "detail": detail})
        else:
            fields.append({"parameter": ".".join(rest) or where, "detail": detail})
    if malformed:
        return security.problem(400, "The request body is not valid JSON.", instance=path)
    return security.problem(422, "The request has refused fields.", errors=fields, instance=path)
