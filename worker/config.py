"""Settings, read once from the environment and validated at start.

Every setting is an environment variable `WORKER_<NAME>` except the two that platforms name
themselves: `DATABASE_URL` and `SENTRY_DSN`. A bad value stops the worker with one line
naming the variable (`load()` raises `errors.ConfigError`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker import errors, names

_MODULE_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
_MAX_SHOWN_CHARS = 100  # of a bad value, in the error line


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Settings(BaseSettings):
    """The worker's configuration. Field names map to `WORKER_<FIELD>` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="WORKER_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        # The docstring under each field is its description in the generated reference
        # (docs/gen_reference.py reads it from this file; pydantic's use_attribute_docstrings
        # would read and tokenize the module at every start, ~0.1 s).
    )

    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "WORKER_DATABASE_URL")
    )
    """PostgreSQL URL. Unset: an embedded PostgreSQL under `embedded_dir` (zero-config)."""
    sentry_dsn: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SENTRY_DSN", "WORKER_SENTRY_DSN")
    )
    """Sentry DSN: jobs that fail for good (and retries from WORKER_SENTRY_REPEAT_FAILURES
    on) are reported there, secrets scrubbed. Unset: nothing is sent."""

    queues: Annotated[list[str], NoDecode] = ["default"]
    """Queues this worker claims from, comma-separated."""
    concurrency: int = Field(default=20, ge=1, le=10_000)
    """Jobs run at once by this process."""
    claim_batch: int = Field(default=100, ge=1, le=10_000)
    """Most jobs taken by one claim statement (also bounded by free slots)."""
    pool_size: int = Field(default=10, ge=2, le=1000)
    """Database connections in the worker's pool (claims, writes and handlers share it)."""
    connect_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """How long to keep retrying the first connection before giving up at start."""
    poll_interval_s: float = Field(default=2.0, gt=0, le=3600)
    """Safety-net poll when no NOTIFY arrives."""
    lease_s: float = Field(default=60.0, ge=1, le=86_400)
    """How long a claimed job is ours before another worker may rescue it."""
    shutdown_grace_s: float = Field(default=30.0, ge=0, le=3600)
    """After SIGTERM, how long running jobs may finish before they are cancelled and put
    back to pending without spending an attempt."""
    retry_base_s: float = Field(default=2.0, ge=0, le=86_400)
    """Retry backoff: the delay after the first failed attempt, doubled for each further one
    (±10 % jitter)."""
    retry_cap_s: float = Field(default=3600.0, ge=0, le=30 * 86_400)
    """Retry backoff: the longest delay between two attempts."""
    pooler_mode: bool = False
    """DATABASE_URL goes through a transaction-mode pooler (Supavisor port 6543, PgBouncer):
    no LISTEN (a pooler cannot hold one; pickup falls back to polling) and no prepared
    statement cache (a pooler may hand each transaction a different server connection)."""
    rescue_interval_s: float = Field(default=15.0, gt=0, le=3600)
    """How often this worker looks for jobs whose lease expired."""
    prune_interval_s: float = Field(default=600.0, gt=0, le=86_400)
    """How often this worker deletes finished jobs and job_runs rows past their retention."""
    # Upper bounds on retention: beyond ~100 years `now - days` leaves datetime's range
    # and every prune would fail.
    retain_succeeded_days: float = Field(default=14.0, gt=0, le=36_500)
    """Succeeded and cancelled jobs are deleted this long after they finished."""
    retain_failed_days: float | None = Field(default=None, gt=0, le=36_500)
    """Failed jobs are kept for inspection unless this is set."""
    retain_runs_days: float = Field(default=30.0, gt=0, le=36_500)
    """job_runs rows are deleted this long after they started."""
    prune_batch: int = Field(default=1000, ge=1, le=100_000)
    """Rows one pruning statement deletes (each batch is its own short transaction)."""
    scheduler: bool = True
    """Run the built-in cron scheduler (job_schedules -> job_queue); every replica may, each
    tick is enqueued once. Off: no scheduler and no schedule-file sync in this process."""
    schedules_file: Annotated[list[Path], NoDecode] = []
    """Schedule files (comma-separated) synced into job_schedules at start, with the
    WORKER_APPS' own (an admin's pause is kept). Unset: none. A relative path is looked up
    in the working directory, then beside the package."""
    scheduler_interval_s: float = Field(default=10.0, gt=0, le=3600)
    """Longest wait between scheduler passes (it wakes sooner when a tick is due)."""
    scheduler_grace_s: float = Field(default=300.0, ge=0, le=86_400)
    """Under the `skip` missed-tick policy, a tick seen at most this late still runs."""
    scheduler_backfill_max: int = Field(default=100, ge=1, le=10_000)
    """Most missed ticks the `all` policy enqueues for one schedule (the newest ones)."""
    scheduler_max_skew_s: float = Field(default=30.0, gt=0, le=3600)
    """This host's clock may differ from the database's by this much; beyond it, this
    worker stops scheduling (and logs scheduler_clock_skew) until the clocks agree."""
    default_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    """Handler timeout when the handler does not declare one."""
    sync_threads: int = Field(default=40, ge=1, le=1000)
    """Threads for sync handlers (plain `def`): at most this many run at once in this
    process (each also takes one of the `concurrency` slots)."""
    tracing: Literal["auto", "on", "off"] = "auto"
    """OpenTelemetry spans, one per attempt, continuing the enqueuer's trace: `auto` traces
    when the `otel` extra is installed and a tracer provider is set by the time the worker
    starts (the handler modules may set one); `on` requires the extra; `off` never."""
    apps: Annotated[list[str], NoDecode] = []
    """Bundled apps this worker serves, comma-separated (health, challenges, trading, tts,
    game_platform, ops) or `all`: their handlers are loaded and their schedules synced.
    Unset: none, and the worker runs only the engine."""
    handler_modules: Annotated[list[str], NoDecode] = []
    """Python modules imported at start (your own handlers); importing them registers
    their handlers."""
    worker_id: str = Field(default_factory=_default_worker_id, min_length=1, max_length=200)
    """This process's name in job_queue.locked_by and job_runs.worker_id (default:
    `<hostname>:<pid>`)."""
    log_format: Literal["auto", "json", "console"] = "auto"
    """`auto`: readable console lines in a terminal, JSON lines otherwise."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """The lowest level of log lines written to stderr."""
    http_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of the worker's HTTP server: /health, /metrics, the JSON API (/api/v1) and the
    dashboard. Unset: no HTTP server (the Dockerfile sets 8080)."""
    http_host: str = "127.0.0.1"
    """Address the endpoint listens on (the Dockerfile sets 0.0.0.0 for platform checks)."""
    http_forwarded_allow_ips: str = Field(default="127.0.0.1", min_length=1, max_length=1000)
    """Proxies whose X-Forwarded-For is trusted for the client's address (comma-separated
    addresses or networks, `*` for any): the address the API's and the dashboard's failed
    login limits count against."""
    dashboard_users: SecretStr | None = None
    """Dashboard logins, `name:password` pairs, comma-separated (names: 1-64 of A-Z a-z 0-9
    _ . @ -; passwords: at least 12 characters, no comma, or an argon2 or bcrypt hash such
    as `$argon2id$v=19$m=65536,t=3,p=4$...`). Unset: no dashboard. With
    WORKER_HTTP_PORT also set, the dashboard is served under /dashboard/."""
    dashboard_secure_cookie: bool = False
    """Mark the session cookie Secure: set it when the dashboard is reached over HTTPS (a
    TLS-terminating proxy in front of the worker), never serve it over plain HTTP beyond
    localhost."""
    dashboard_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    """How long a dashboard login lasts."""
    api_tokens: SecretStr | None = None
    """Bearer tokens of the HTTP API (/api/v1), JSON: `{"ci": {"token": "...", "scopes":
    ["enqueue"]}}`; a token may be given as `"token_sha256"` (hex) instead of in clear.
    Scopes: read, enqueue, admin (admin includes the other two). Tokens: 24+ characters."""
    api_jwt_secret: SecretStr | None = None
    """The Supabase project's JWT secret: signed (HS256), unexpired access tokens are
    accepted by the HTTP API, their `sub` is the user of manual runs, and their scopes come
    from WORKER_API_JWT_SCOPES_CLAIM. A token whose `role` is `service_role` has every
    scope. Unset: no JWT is accepted."""
    api_jwt_scopes_claim: str = Field(
        default="app_metadata.job_scopes",
        pattern=r"^[A-Za-z0-9_]{1,64}(\.[A-Za-z0-9_]{1,64}){0,4}$",
    )
    """Dotted path of the claim listing a user's scopes in an access token."""
    api_jwt_audience: str = Field(default="authenticated", min_length=1, max_length=200)
    """The `aud` a user's access token must carry (Supabase: authenticated)."""
    auth_failures_per_minute: int = Field(default=10, ge=1, le=1_000_000)
    """Failed authentications (API tokens, dashboard logins) a client address may make in a
    minute; beyond it, 429 until the minute has passed."""
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    """Largest request body the HTTP server reads (larger: 413)."""
    metrics_public: bool = False
    """Serve /metrics without credentials (for a scraper on a private network that cannot
    send a token, such as Fly's). Off: /metrics needs a token with the read scope."""
    health_stale_s: float | None = Field(default=None, gt=0, le=86_400)
    """/health fails when a loop is silent this long. Unset: max(3 × poll interval, 30 s)."""
    sentry_environment: str | None = None
    """Sentry's `environment` (production, staging, ...)."""
    sentry_repeat_failures: int = Field(default=3, ge=1, le=1000)
    """Report a retry to Sentry as a warning from this attempt number on."""
    embedded_dir: Path = Path(".worker")
    """Where the embedded PostgreSQL keeps its data when DATABASE_URL is unset."""
    auto_migrate: bool = False
    """Apply pending migrations at start (always on for the embedded database)."""

    @field_validator("queues", "handler_modules", "apps", "schedules_file", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        # WORKER_SCHEDULES_FILE= (empty) means no file, not the current directory.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, Path):
            return [value]
        return value

    @field_validator("apps")
    @classmethod
    def _check_apps(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", a)]
        if bad:
            raise ValueError(f"invalid app name(s) {bad}: lower-case names such as health")
        return list(dict.fromkeys(value))

    @field_validator("queues")
    @classmethod
    def _check_queues(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one queue is required")
        bad = [q for q in value if not names.is_queue(q)]
        if bad:
            raise ValueError(f"invalid queue name(s) {bad}: use {names.QUEUE_RULE}")
        return list(dict.fromkeys(value))

    @field_validator("dashboard_users")
    @classmethod
    def _check_dashboard_users(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        dashboard_users(value)  # raises ValueError naming the problem, never a password
        return value

    @field_validator("api_tokens")
    @classmethod
    def _check_api_tokens(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        api_tokens(value)  # raises ValueError naming the token at fault, never its value
        return value

    @field_validator("api_jwt_secret")
    @classmethod
    def _check_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if len(value.get_secret_value()) < MIN_JWT_SECRET_CHARS:
            raise ValueError(f"shorter than {MIN_JWT_SECRET_CHARS} characters")
        return value

    @field_validator("handler_modules")
    @classmethod
    def _check_handler_modules(cls, value: list[str]) -> list[str]:
        # importlib raises TypeError, not ImportError, for a relative name such as "..x".
        bad = [m for m in value if not re.fullmatch(_MODULE_PATTERN, m)]
        if bad:
            raise ValueError(f"invalid module name(s) {bad}: use dotted Python names")
        return value

    @field_validator("sentry_dsn")
    @classmethod
    def _check_sentry_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        import sentry_sdk.utils  # noqa: PLC0415 - ~0.14 s to import, only with a DSN

        try:
            sentry_sdk.utils.Dsn(value.get_secret_value())
        except sentry_sdk.utils.BadDsn:
            # Not the parser's message: it may quote part of the DSN.
            raise ValueError("not a Sentry DSN (https://<key>@<host>/<project id>)") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        scheme = value.get_secret_value().split("://", 1)[0]
        if scheme not in ("postgres", "postgresql"):
            raise ValueError("must start with postgresql:// or postgres://")
        return value


_SECRET_FIELDS = {"database_url", "sentry_dsn", "dashboard_users", "api_tokens", "api_jwt_secret"}
_ALIASES = {
    alias: name
    for name in _SECRET_FIELDS
    for alias in ("DATABASE_URL", "WORKER_DATABASE_URL", "SENTRY_DSN", "WORKER_SENTRY_DSN")
    if alias.removeprefix("WORKER_").lower() == name
}


_DASHBOARD_USER = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_DASHBOARD_PASSWORD_CHARS = 12
PASSWORD_HASH_PREFIXES = ("$argon2", "$2a$", "$2b$", "$2y$")
"""A dashboard password starting so is a hash (checked by worker/web/dashboard/auth.py)."""
_PASSWORD_HASH = re.compile(
    r"\$argon2(id|i|d)\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+"
    r"|\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}"
)


def _dashboard_entries(text: str) -> list[str]:
    """The entries of WORKER_DASHBOARD_USERS: split on commas, except the two inside an
    argon2 hash's parameters (`m=65536,t=3,p=4`)."""
    entries: list[str] = []
    for piece in text.split(","):
        if entries and "$argon2" in entries[-1] and re.match(r"[tp]=\d", piece):
            entries[-1] += "," + piece
        else:
            entries.append(piece)
    return entries


def dashboard_users(value: SecretStr | None) -> dict[str, str]:
    """{name: password} of WORKER_DASHBOARD_USERS (empty when unset); ValueError on a bad
    value, whose message names the user at fault and never shows a password."""
    if value is None:
        return {}
    users: dict[str, str] = {}
    for position, entry in enumerate(_dashboard_entries(value.get_secret_value()), start=1):
        name, sep, password = entry.strip().partition(":")
        if not sep:
            raise ValueError(f"entry {position} is not name:password")
        if not _DASHBOARD_USER.fullmatch(name):
            raise ValueError(f"entry {position}: a user name is 1-64 of A-Z a-z 0-9 _ . @ -")
        if password.startswith(PASSWORD_HASH_PREFIXES):
            if not _PASSWORD_HASH.fullmatch(password):
                raise ValueError(
                    f"the password hash of {name!r} is not an argon2 or bcrypt hash "
                    "($argon2id$v=19$m=...,t=...,p=...$salt$hash or $2b$12$...)"
                )
        elif len(password) < MIN_DASHBOARD_PASSWORD_CHARS:
            raise ValueError(
                f"the password of {name!r} is shorter than {MIN_DASHBOARD_PASSWORD_CHARS} "
                "characters"
            )
        if name in users:
            raise ValueError(f"user {name!r} is listed twice")
        users[name] = password
    return users


SCOPES = ("read", "enqueue", "admin")
MIN_API_TOKEN_CHARS = 24
MIN_JWT_SECRET_CHARS = 32
_TOKEN_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One entry of WORKER_API_TOKENS: the token is kept only as its SHA-256 digest."""

    name: str
    sha256: bytes
    scopes: frozenset[str]


def api_tokens(value: SecretStr | None) -> dict[str, ApiToken]:
    """The tokens of WORKER_API_TOKENS by name (empty when unset); ValueError on a bad
    value, naming the entry at fault and never showing a token."""
    if value is None:
        return {}
    try:
        data = json.loads(value.get_secret_value())
    except ValueError:
        raise ValueError("not valid JSON (an object of named tokens)") from None
    if not isinstance(data, dict):
        raise ValueError('must be a JSON object: {"name": {"token": "...", "scopes": [...]}}')
    tokens: dict[str, ApiToken] = {}
    for name, entry in data.items():
        if not _TOKEN_NAME.fullmatch(name):
            raise ValueError(f"token names are 1-64 of A-Z a-z 0-9 _ . @ - (got {_shown(name)})")
        tokens[name] = _api_token(name, entry)
    return tokens


def _api_token(name: str, entry: Any) -> ApiToken:
    if not isinstance(entry, dict) or set(entry) - {"token", "token_sha256", "scopes"}:
        raise ValueError(f"token {name!r}: use keys token (or token_sha256) and scopes")
    scopes = entry.get("scopes")
    if (
        not isinstance(scopes, list)
        or not scopes
        or not all(isinstance(s, str) and s in SCOPES for s in scopes)
    ):
        raise ValueError(f"token {name!r}: scopes must be a non-empty list of {', '.join(SCOPES)}")
    token, digest = entry.get("token"), entry.get("token_sha256")
    if (token is None) == (digest is None):
        raise ValueError(f"token {name!r}: give exactly one of token and token_sha256")
    if token is not None:
        if not isinstance(token, str) or len(token) < MIN_API_TOKEN_CHARS:
            raise ValueError(f"token {name!r} is shorter than {MIN_API_TOKEN_CHARS} characters")
        sha256 = hashlib.sha256(token.encode()).digest()
    else:
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest.lower()):
            raise ValueError(f"token {name!r}: token_sha256 must be 64 hex digits")
        sha256 = bytes.fromhex(digest)
    return ApiToken(name, sha256, frozenset(scopes))


def api_token_values(value: SecretStr | None) -> list[str]:
    """The clear-text tokens of WORKER_API_TOKENS (for the scrubber)."""
    if value is None:
        return []
    try:
        data = json.loads(value.get_secret_value())
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    return [
        entry["token"]
        for entry in data.values()
        if isinstance(entry, dict) and isinstance(entry.get("token"), str)
    ]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN_CHARS else text[: _MAX_SHOWN_CHARS - 3] + "..."


def _variable(field: str) -> str:
    if field == "database_url":
        return "DATABASE_URL"
    if field == "sentry_dsn":
        return "SENTRY_DSN"
    return f"WORKER_{field.upper()}"


def load(**overrides: Any) -> Settings:
    """Read settings from the environment (overrides win); raise ConfigError on a bad value."""
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        field = _ALIASES.get(field, field)
        message = first["msg"].removeprefix("Value error, ")
        shown = "" if field in _SECRET_FIELDS else f" (got {_shown(first.get('input'))})"
        raise errors.ConfigError(f"{_variable(field)}: {message}{shown}") from None
