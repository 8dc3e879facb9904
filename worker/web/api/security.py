"""Who calls the HTTP API, and what they may do.

Credentials come as `Authorization: Bearer <credential>`:
- a named token of WORKER_API_TOKENS (kept only as its SHA-256; compared in constant time
  against every configured token, whichever matches);
- with WORKER_API_JWT_SECRET set, a Supabase access token: HS256, signed with the project's
  JWT secret, unexpired. Its `sub` is the user of the manual runs it starts, its scopes come
  from the claim WORKER_API_JWT_SCOPES_CLAIM names (default `app_metadata.job_scopes`), and a
  `role` of `service_role` (the project's service key) has every scope.

Scopes: `read` (GET), `enqueue` (enqueue, manual runs), `admin` (everything, including the
two others). A missing or wrong credential is 401; one without the scope, 403. Failed
authentication is limited per client address (429 with Retry-After): guessing tokens costs a
minute per ten tries. No credential or part of one is ever logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import jwt
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from worker import config
from worker.admin.store import Actor
from worker.clock import Clock, SystemClock
from worker.config import Settings
from worker.web import ratelimit

log = structlog.get_logger("worker.web.api")

PROBLEM_TYPE = "application/problem+json"
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_MAX_CREDENTIAL_CHARS = 8192


def problem(
    status: int,
    detail: str,
    *,
    errors: Sequence[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
) -> JSONResponse:
    """An RFC 9457 problem details response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _REASONS.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    if errors:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_TYPE)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    """The token's name, or `jwt:<sub>`: the actor of audit rows."""
    scopes: frozenset[str]
    user_id: UUID | None
    """A signed-in app user (a JWT's sub): recorded as requested_by of their manual runs."""
    remote_addr: str | None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    @property
    def actor(self) -> Actor:
        return Actor(self.name, self.remote_addr, self.user_id)


class AuthFailure(Exception):
    """Refused: `status` 401 (no or wrong credential), 403 (scope) or 429 (too many)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}

    def response(self, instance: str | None = None) -> JSONResponse:
        return problem(self.status, self.detail, headers=self.headers, instance=instance)


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="pg-job-worker"'}


class Authenticator:
    def __init__(
        self,
        tokens: dict[str, config.ApiToken],
        *,
        jwt_secret: str | None,
        scopes_claim: str,
        audience: str,
        limiter: ratelimit.FailureLimiter | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.tokens = list(tokens.values())
        self.jwt_secret = jwt_secret
        self.scopes_claim = scopes_claim.split(".")
        self.audience = audience
        self.limiter = limiter or ratelimit.FailureLimiter()
        self.clock = clock or SystemClock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        secret = settings.api_jwt_secret
        return cls(
            config.api_tokens(settings.api_tokens),
            jwt_secret=secret.get_secret_value() if secret is not None else None,
            scopes_claim=settings.api_jwt_scopes_claim,
            audience=settings.api_jwt_audience,
            limiter=ratelimit.FailureLimiter(max_failures=settings.auth_failures_per_minute),
        )

    def authenticate(self, authorization: str | None, remote_addr: str | None) -> Principal:
        """The caller, or AuthFailure (401/429)."""
        address = remote_addr or "unknown"
        now_s = self.clock.monotonic()
        if self.limiter.blocked(address, now_s):
            retry_s = max(1, math.ceil(self.limiter.retry_after_s(address, now_s)))
            log.warning("api_auth_limited", remote_addr=address)
            raise AuthFailure(
                429,
                "Too many failed authentications from your address; try again later.",
                {"Retry-After": str(retry_s)},
            )
        principal = self._principal(authorization, remote_addr)
        if principal is None:
            self.limiter.failed(address, now_s)
            log.warning("api_auth_failed", remote_addr=address)
            raise AuthFailure(401, "A valid bearer token is required.", _CHALLENGE)
        return principal

    def _principal(self, authorization: str | None, remote_addr: str | None) -> Principal | None:
        scheme, _, credential = (authorization or "").partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential or len(credential) > _MAX_CREDENTIAL_CHARS:
            return None
        digest = hashlib.sha256(credential.encode("utf-8", "replace")).digest()
        found: config.ApiToken | None = None
        for token in self.tokens:  # every one, so the time taken does not say which matched
            if hmac.compare_digest(digest, token.sha256):
                found = token
        if found is not None:
            return Principal(found.name, found.scopes, None, remote_addr)
        if self.jwt_secret is not None and credential.count(".") == 2:
            return self._from_jwt(credential, remote_addr)
        return None

    def _from_jwt(self, credential: str, remote_addr: str | None) -> Principal | None:
        assert self.jwt_secret is not None
        try:
            claims = jwt.decode(
                credential,
                self.jwt_secret,
                algorithms=["HS256"],
                options={"require": ["exp"], "verify_aud": False},
            )
        except jwt.PyJWTError:
            return None
        if claims.get("role") == "service_role":
            return Principal("jwt:service_role", frozenset(config.SCOPES), None, remote_addr)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.audience not in audiences:
            return None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            return None
        try:
            user_id: UUID | None = UUID(subject)
        except ValueError:
            user_id = None
        return Principal(f"jwt:{subject[:64]}", self._scopes(claims), user_id, remote_addr)

    def _scopes(self, claims: dict[str, Any]) -> frozenset[str]:
        value: Any = claims
        for part in self.scopes_claim:
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, list):
            return frozenset()
        return frozenset(s for s in value if isinstance(s, str) and s in config.SCOPES)


def client_address(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


def authorize(auth: Authenticator, request: Request, scope: str) -> Principal:
    """The caller if it holds `scope`; AuthFailure otherwise."""
    principal = auth.authenticate(request.headers.get("authorization"), client_address(request))
    if not principal.allows(scope):
        raise AuthFailure(403, f"This credential does not have the {scope!r} scope.")
    return principal


async def refusal(auth: Authenticator, request: Request, scope: str) -> JSONResponse | None:
    """For routes outside the API router (/metrics): the refusal to send, or None."""
    try:
        authorize(auth, request, scope)
    except AuthFailure as exc:
        return exc.response(request.url.path)
    return None
