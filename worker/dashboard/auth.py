"""Dashboard logins: password check, signed session cookies, CSRF tokens, a login limiter.

Sessions are stateless: the cookie holds the user name and an expiry, signed with HMAC-SHA256
under a key derived from WORKER_DASHBOARD_USERS. Every replica with the same setting accepts
the others' sessions, and changing any password (or the user list) logs everyone out.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime

from pydantic import SecretStr

from worker import config

SESSION_COOKIE = "worker_session"
_KEY_LABEL = b"pg-job-worker dashboard session key v1"


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    expires_at: float  # unix seconds
    cookie: str  # the signed value, which the CSRF token is derived from


class Authenticator:
    """Checks passwords and issues and verifies session cookies and CSRF tokens."""

    def __init__(self, users: SecretStr) -> None:
        self._users = config.dashboard_users(users)
        canonical = ",".join(f"{name}:{pw}" for name, pw in sorted(self._users.items()))
        self._key = hmac.new(_KEY_LABEL, canonical.encode(), hashlib.sha256).digest()

    def check_password(self, name: str, password: str) -> bool:
        """True when `name` and `password` match a user. Compares digests of both with
        compare_digest against every user, so the time taken does not tell a wrong name from
        a wrong password, nor which user came close."""
        name_digest = hashlib.sha256(name.encode("utf-8", "replace")).digest()
        password_digest = hashlib.sha256(password.encode("utf-8", "replace")).digest()
        found = False
        for user, secret in self._users.items():
            name_ok = hmac.compare_digest(name_digest, hashlib.sha256(user.encode()).digest())
            password_ok = hmac.compare_digest(
                password_digest, hashlib.sha256(secret.encode()).digest()
            )
            found |= name_ok & password_ok
        return found

    def issue(self, user: str, expires_at: float) -> str:
        """A signed cookie value: base64url(JSON {u, exp}) "." base64url(HMAC)."""
        payload = json.dumps({"u": user, "exp": round(expires_at)}, separators=(",", ":"))
        body = _b64(payload.encode())
        return f"{body}.{_b64(self._sign(b'session:' + body.encode()))}"

    def verify(self, cookie: str | None, now: datetime) -> Session | None:
        """The session of a cookie that is well formed, signed by us, unexpired and names a
        current user; None otherwise."""
        if not cookie or len(cookie) > 512:
            return None
        body, _, signature = cookie.partition(".")
        expected = _b64(self._sign(b"session:" + body.encode()))
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return None
        try:
            fields = json.loads(_unb64(body))
            user, expires_at = str(fields["u"]), float(fields["exp"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if expires_at <= now.timestamp() or user not in self._users:
            return None
        return Session(user=user, expires_at=expires_at, cookie=cookie)

    def csrf_token(self, session: Session) -> str:
        """The token every form of this session carries: an HMAC of the session cookie."""
        return _b64(self._sign(b"csrf:" + session.cookie.encode()))

    def check_csrf(self, session: Session, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.csrf_token(session).encode())

    def _sign(self, message: bytes) -> bytes:
        return hmac.new(self._key, message, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LoginLimiter:
    """At most `max_failures` failed logins per remote address in a sliding `window_s`.
    Memory is bounded: at most `max_addresses` addresses are tracked (the oldest go)."""

    def __init__(
        self, *, max_failures: int = 10, window_s: float = 60.0, max_addresses: int = 10_000
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def blocked(self, address: str, now_s: float) -> bool:
        failures = self._failures.get(address)
        if failures is None:
            return False
        while failures and failures[0] <= now_s - self.window_s:
            failures.popleft()
        return len(failures) >= self.max_failures

    def failed(self, address: str, now_s: float) -> None:
        failures = self._failures.pop(address, None) or collections.deque()
        failures.append(now_s)
        while len(failures) > self.max_failures:
            failures.popleft()
        self._failures[address] = failures  # most recent last
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
