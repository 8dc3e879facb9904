"""Dashboard logins: the password check, sessions, and CSRF tokens.

A login creates a session row (job_dashboard_sessions, keyed by the SHA-256 of a random
id) and sets a cookie carrying the id and the expiry, signed with itsdangerous under a
key derived from WORKER_DASHBOARD_USERS. A request's session is valid when the signature
checks out, the expiry has not passed, the row is neither revoked nor expired, and its
user is still configured: logging out revokes the row (a copied cookie dies with it), and
changing any password (or the user list) changes the key, which ends every session at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

import itsdangerous
from pydantic import SecretStr

from worker import config
from worker.admin.store import AdminStore
from worker.clock import Clock

SESSION_COOKIE = "worker_session"
_KEY_LABEL = b"pg-job-worker dashboard session key v2"
_MAX_COOKIE_CHARS = 512


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    session_id: str
    """The random id the cookie carries; the CSRF token is derived from it."""

    @property
    def id_sha256(self) -> bytes:
        return hashlib.sha256(self.session_id.encode()).digest()


class Authenticator:
    """Checks passwords; issues, verifies and revokes sessions; makes CSRF tokens."""

    def __init__(
        self, users: SecretStr, admin: AdminStore, *, session_s: int, clock: Clock
    ) -> None:
        self._users = config.dashboard_users(users)
        canonical = ",".join(f"{name}:{pw}" for name, pw in sorted(self._users.items()))
        key = hmac.new(_KEY_LABEL, canonical.encode(), hashlib.sha256).digest()
        self._sessions = itsdangerous.URLSafeSerializer(key, salt="dashboard-session")
        self._csrf = itsdangerous.Signer(key, salt="dashboard-csrf")
        self.admin = admin
        self.session_s = session_s
        self.clock = clock

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

    async def issue(self, user: str, remote_addr: str | None) -> str:
        """A new session for `user`: its row, and the cookie value that names it."""
        session = Session(user, secrets.token_urlsafe(32))
        expires_at = self.clock.now() + timedelta(seconds=self.session_s)
        await self.admin.create_session(session.id_sha256, user, expires_at, remote_addr)
        fields = {"sid": session.session_id, "u": user, "exp": round(expires_at.timestamp())}
        return self._sessions.dumps(fields)

    async def verify(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, or None."""
        if not cookie or len(cookie) > _MAX_COOKIE_CHARS:
            return None
        try:
            fields = self._sessions.loads(cookie)
            session = Session(str(fields["u"]), str(fields["sid"]))
            expires_at = float(fields["exp"])
        except (itsdangerous.BadData, KeyError, TypeError, ValueError):
            return None
        if expires_at <= self.clock.now().timestamp() or session.user not in self._users:
            return None
        if await self.admin.session_user(session.id_sha256) != session.user:
            return None
        return session

    async def revoke(self, session: Session) -> None:
        await self.admin.revoke_session(session.id_sha256)

    def csrf_token(self, session: Session) -> str:
        """The token every form of this session carries: a signature of the session id."""
        return self._csrf.get_signature(session.session_id.encode()).decode("ascii")

    def check_csrf(self, session: Session, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.csrf_token(session).encode())
