"""Settings of the bundled handlers: API base URLs and secrets, allow-lists, ages.

Every field is an environment variable `HANDLERS_<FIELD>` (`HANDLERS_METRICS_VIEWS=a,b`;
`HANDLERS_ENDPOINTS` is JSON). They are read once, the first time a handler needs them
(`get()`); tests and the demo replace them with `use()`. Secrets are `SecretStr`: they are
never logged, echoed in errors or written to job rows.

Payloads never carry URLs, SQL or table names: a payload *names* an endpoint, a view or a
function, and the name must be in one of the allow-lists here.
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from pydantic import AnyHttpUrl, Field, SecretStr, StringConstraints, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker import errors, registry

SQL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$"
"""A relation or function name, optionally schema-qualified: letters, digits, _ and $."""

SqlName = Annotated[str, StringConstraints(pattern=SQL_NAME_PATTERN)]
EndpointName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")]


class Endpoint(pydantic.BaseModel):
    """One endpoint `call_endpoint` may POST to."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    url: AnyHttpUrl
    secret: SecretStr | None = None
    """Sent verbatim as the value of `secret_header` (include `Bearer ` where needed)."""
    secret_header: HeaderName = "Authorization"
    timeout_s: float = Field(default=30.0, gt=0, le=600)


class HandlerSettings(BaseSettings):
    """Configuration of the bundled handlers. Field names map to `HANDLERS_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="HANDLERS_", extra="ignore", frozen=True)

    # -- every external API ---------------------------------------------------------------
    http_timeout_s: float = Field(default=30.0, gt=0, le=600)
    """Read/write/pool timeout of one HTTP request."""
    http_connect_timeout_s: float = Field(default=10.0, gt=0, le=120)
    http_attempts: int = Field(default=3, ge=1, le=10)
    """Tries of one request on a network error or a 5xx, inside the job."""
    http_retry_wait_s: float = Field(default=1.0, ge=0, le=60)
    """First wait between those tries; doubles each time."""
    retry_after_default_s: float = Field(default=60.0, ge=0, le=86_400)
    """Delay after a 429 that carries no usable Retry-After."""
    retry_after_max_s: float = Field(default=3600.0, ge=0, le=86_400)
    """Longest Retry-After honoured; longer ones are capped."""

    # -- sync_wearables -------------------------------------------------------------------
    wearables_api_url: AnyHttpUrl | None = None
    """Base URL of the wearable provider API; unset: no API sync."""
    wearables_api_token: SecretStr | None = None
    """Sent as `Authorization: Bearer <token>`."""
    wearables_provider: str = Field(default="default", min_length=1, max_length=64)
    """Only connections whose `provider` is this are synced through the API."""
    wearables_sync_function: SqlName | None = "sync_wearables"
    """A SQL function that does the sync in the database; called instead when it exists.
    Empty: never."""
    wearables_page_size: int = Field(default=200, ge=1, le=10_000)
    wearables_max_pages: int = Field(default=50, ge=1, le=10_000)
    """Pages per connection per run; the rest follows on the next run."""

    # -- game_platform_sync, game_platform_totals_sweep --------------------------------
    game_platform_api_url: AnyHttpUrl | None = None
    game_platform_api_token: SecretStr | None = None
    """Sent as `Authorization: Bearer <token>`."""
    game_platform_page_size: int = Field(default=100, ge=1, le=10_000)
    game_platform_max_pages: int = Field(default=20, ge=1, le=10_000)
    """Pages per competitor per run; the rest follows on the next run."""
    game_platform_sweep_batch: int = Field(default=500, ge=1, le=100_000)
    """Most flagged competitors one totals sweep refreshes."""

    # -- process_orders -------------------------------------------------------------------
    orders_max_per_run: int = Field(default=10_000, ge=1, le=10_000_000)

    # -- refresh_metrics ------------------------------------------------------------------
    metrics_views: Annotated[list[SqlName], NoDecode] = []
    """Materialized views refresh_metrics may refresh, comma-separated."""
    metrics_functions: Annotated[list[SqlName], NoDecode] = []
    """Argument-less SQL functions refresh_metrics may call, comma-separated."""

    # -- auto_complete_challenges, send_streak_reminders --------------------------------
    challenge_success_pct: float = Field(default=80.0, ge=0, le=100)
    """A closed challenge is `completed` when its members' average completion reaches this."""
    streak_reminder_hour: int = Field(default=8, ge=0, le=23)
    """Local hour (in each user's own time zone) in which reminders go out."""

    # -- cleanup --------------------------------------------------------------------------
    cleanup_notification_age_days: int = Field(default=30, ge=1, le=36_500)
    cleanup_order_age_days: int = Field(default=90, ge=1, le=36_500)
    """Completed and failed orders older than this are deleted."""
    cleanup_batch_size: int = Field(default=1000, ge=1, le=100_000)
    cleanup_max_batches: int = Field(default=100, ge=1, le=100_000)
    """Per table and run; the rest goes on the next run."""

    # -- call_endpoint --------------------------------------------------------------------
    endpoints: dict[EndpointName, Endpoint] = {}
    """JSON: {"name": {"url": ..., "secret": ..., "secret_header": ..., "timeout_s": ...}}."""

    @field_validator("metrics_views", "metrics_functions", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("wearables_sync_function", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


_SECRETS = {"wearables_api_token", "game_platform_api_token", "endpoints"}


def load(**overrides: Any) -> HandlerSettings:
    """Read `HANDLERS_*` from the environment (overrides win); ConfigError on a bad value,
    naming the variable and never echoing a secret."""
    try:
        loaded = HandlerSettings(**overrides)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        message = first["msg"].removeprefix("Value error, ")
        shown = "" if field in _SECRETS else f" (got {first.get('input')!r})"
        raise errors.ConfigError(f"HANDLERS_{field.upper()}: {message}{shown}") from None
    # Before any handler can fail with one of them in its message: the worker's scrubber
    # then removes them from logs, Sentry events and the stored error text of failed jobs.
    registry.register_secrets_of(loaded)
    return loaded


_current: HandlerSettings | None = None


def get() -> HandlerSettings:
    """The settings handlers run with: loaded on first use, then kept. A bad value fails
    the job for good (PermanentJobError) with the variable's name."""
    global _current  # noqa: PLW0603 - the one process-wide configuration, loaded lazily
    if _current is None:
        try:
            _current = load()
        except errors.ConfigError as exc:
            raise errors.PermanentJobError(str(exc)) from None
    return _current


def use(settings: HandlerSettings | None) -> None:
    """Replace the settings (tests, the demo); None reloads from the environment on next use."""
    global _current  # noqa: PLW0603
    if settings is not None:
        registry.register_secrets_of(settings)
    _current = settings
