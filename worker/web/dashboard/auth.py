"""Dashboard logins: the password check, sessions, and CSRF tokens.

A user's password in WORKER_DASHBOARD_USERS is given in clear or as an argon2 or bcrypt
hash. With WORKER_API_JWT_SECRET set, an app admin may also sign in with an access token
of the app's own account (see Dashboard.login_token): such a session's user is
`jwt:<sub>`, and it ends no later than the token.

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
from datetime import datetime, timedelta
from uuid import UUID

import argon2
import bcrypt
import itsdangerous
from pydantic import SecretStr

from worker import config
from worker.admin.store import AdminStore
from worker.clock import Clock

SESSION_COOKIE = "worker_session"
_KEY_LABEL = b"pg-job-worker dashboard session key v2"
_MAX_COOKIE_CHARS = 512


JWT_USER_PREFIX = "jwt:"


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    session_id: str
    """The random id the cookie carries; the CSRF token is derived from it."""
    user_id: UUID | None = None
    """An app user signed in with their access token (its sub): the requested_by of the
    manual runs they start."""

    @property
    def id_sha256(self) -> bytes:
        return hashlib.sha256(self.session_id.encode()).digest()


class Authenticator:
    """Checks passwords; issues, verifies and revokes sessions; makes CSRF tokens."""

    def __init__(
        self,
        users: SecretStr,
        admin: AdminStore,
        *,
        session_s: int,
        clock: Clock,
        app_accounts: bool = False,
    ) -> None:
        self._users = config.dashboard_users(users)
        self.app_accounts = app_accounts
        """Whether app admins may sign in with their access tokens (WORKER_API_JWT_SECRET)."""
        hashed = [pw for pw in self._users.values() if _is_hash(pw)]
        # Verified when the name matches no hashed user, so that a wrong name costs what a
        # wrong password does: a hash of the same kind as the configured ones.
        self._dummy_hash = _dummy_like(hashed[0]) if hashed else None
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
        a wrong password, nor which user came close. With hashed passwords configured,
        exactly one hash is verified per call (the named user's, or a dummy of the same
        kind), whatever the name. Slow by design (argon2, bcrypt): call it in a thread."""
        name_digest = hashlib.sha256(name.encode("utf-8", "replace")).digest()
        password_digest = hashlib.sha256(password.encode("utf-8", "replace")).digest()
        found = False
        hashed: str | None = None
        for user, secret in self._users.items():
            name_ok = hmac.compare_digest(name_digest, hashlib.sha256(user.encode()).digest())
            if _is_hash(secret):
                hashed = secret if name_ok else hashed
                continue
            password_ok = hmac.compare_digest(
                password_digest, hashlib.sha256(secret.encode()).digest()
            )
            found |= name_ok & password_ok
        if self._dummy_hash is not None:
            verified = _verify(hashed or self._dummy_hash, password)
            found |= hashed is not None and verified
        return found

    async def issue(
        self,
        user: str,
        remote_addr: str | None,
        *,
        user_id: UUID | None = None,
        not_after: datetime | None = None,
    ) -> str:
        """A new session for `user`: its row, and the cookie value that names it. It ends
        after the session length, or at `not_after` if sooner (an access token's expiry)."""
        session = Session(user, secrets.token_urlsafe(32), user_id)
        expires_at = self.clock.now() + timedelta(seconds=self.session_s)
        if not_after is not None:
            expires_at = min(expires_at, not_after)
        await self.admin.create_session(session.id_sha256, user, expires_at, remote_addr)
        fields: dict[str, object] = {
            "sid": session.session_id,
            "u": user,
            "exp": round(expires_at.timestamp()),
        }
        if user_id is not None:
            fields["uid"] = str(user_id)
        return self._sessions.dumps(fields)

    async def verify(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, or None."""
        if not cookie or len(cookie) > _MAX_COOKIE_CHARS:
            return None
        try:
            fields = self._sessions.loads(cookie)
            user_id = UUID(str(fields["uid"])) if "uid" in fields else None
            session = Session(str(fields["u"]), str(fields["sid"]), user_id)
            expires_at = float(fields["exp"])
        except (itsdangerous.BadData, KeyError, TypeError, ValueError):
            return None
        if expires_at <= self.clock.now().timestamp() or not self._known(session.user):
            return None
        if await self.admin.session_user(session.id_sha256) != session.user:
            return None
        return session

    def _known(self, user: str) -> bool:
        """A configured user, or (while app accounts may sign in) an app account."""
        if user.startswith(JWT_USER_PREFIX):
            return self.app_accounts
        return user in self._users

    async def revoke(self, session: Session) -> None:
        await self.admin.revoke_session(session.id_sha256)

    def csrf_token(self, session: Session) -> str:
        """The token every form of this session carries: a signature of the session id."""
        return self._csrf.get_signature(session.session_id.encode()).decode("ascii")

    def check_csrf(self, session: Session, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.csrf_token(session).encode())


def _is_hash(secret: str) -> bool:
    return secret.startswith(config.PASSWORD_HASH_PREFIXES)


_ARGON2 = argon2.PasswordHasher()


def _verify(hashed: str, password: str) -> bool:
    """Whether `password` matches an argon2 or bcrypt hash (each library compares in
    constant time)."""
    try:
        if hashed.startswith("$argon2"):
            return _ARGON2.verify(hashed, password)
        return bcrypt.checkpw(password.encode("utf-8", "replace"), hashed.encode("ascii"))
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False
    except ValueError:  # bcrypt: an invalid hash, or a password over its 72 bytes
        return False


def _dummy_like(hashed: str) -> str:
    """A hash of a random password, of the same kind and cost as `hashed`."""
    dummy = secrets.token_urlsafe(16)
    if hashed.startswith("$argon2"):
        params = argon2.extract_parameters(hashed)
        return argon2.PasswordHasher.from_parameters(params).hash(dummy)
    rounds = int(hashed.split("$")[2])
    return bcrypt.hashpw(dummy.encode(), bcrypt.gensalt(rounds)).decode("ascii")
