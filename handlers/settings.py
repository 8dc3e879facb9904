"""Settings of the bundled handlers: API base URLs and secrets, allow-lists, ages.

Every field is an environment variable `HANDLERS_<FIELD>` (`HANDLERS_METRICS_VIEWS=a,b`;
`HANDLERS_ENDPOINTS` is JSON). They are read once, the first time a handler needs them
(`get()`); tests and the demo replace them with `use()`. Secrets are `SecretStr`: they are
never logged, echoed in errors or written to job rows.

Payloads never carry URLs, SQL or table names: a payload *names* an endpoint, a view or a
function, and the name must be in one of the allow-lists here. Table and column names come
from here only (HANDLERS_TABLES), and reach SQL text only as PostgreSQL resolved and quoted
them (handlers/tables.py).
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from pydantic import AnyHttpUrl, Field, SecretStr, StringConstraints, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker import errors, registry

SQL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$"
"""A relation or function name, optionally schema-qualified: letters, digits, _ and $."""

COLUMN_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$"
"""A column name as PostgreSQL stores it (matched exactly: lower case unless created quoted)."""

SqlName = Annotated[str, StringConstraints(pattern=SQL_NAME_PATTERN)]
ColumnName = Annotated[str, StringConstraints(pattern=COLUMN_NAME_PATTERN)]
EndpointName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")]


class Endpoint(pydantic.BaseModel):
    """One endpoint `call_endpoint` may POST to."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    url: AnyHttpUrl
    """Where the JSON body is POSTed."""
    secret: SecretStr | None = None
    """Sent verbatim as the value of `secret_header` (include `Bearer ` where needed)."""
    secret_header: HeaderName = "Authorization"
    """The header that carries `secret`."""
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    """Timeout of one request to this endpoint."""


REFERENCE_TABLES: dict[str, tuple[str, ...]] = {
    "queue": (
        "id",
        "user_id",
        "ticker",
        "order_type",
        "amount_usdp",
        "status",
        "date",
        "failure_reason",
        "executed_price",
        "executed_quantity",
        "processed_at",
    ),
    "challenges": ("id", "name", "status", "end_date", "average_completion_pct", "closed_at"),
    "challenge_members": ("challenge_id", "user_id"),
    "challenge_member_stats": ("challenge_id", "completion_rate"),
    "notifications": (
        "id",
        "user_id",
        "type",
        "title",
        "body",
        "data",
        "dedupe_key",
        "created_at",
    ),
    "usage_events": ("user_id", "event_type", "characters_processed", "timestamp"),
    "monthly_usage": ("user_id", "month_start_date", "total_characters_processed", "last_updated"),
}
"""The apps' tables a deployment may map to tables of its own (HANDLERS_TABLES), by their
reference names, with the columns the handlers read and write."""


class TableMap(pydantic.BaseModel):
    """Where one reference table is in this app's database."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    table: SqlName | None = None
    """The app's table, optionally schema-qualified (default: the reference name)."""
    columns: dict[str, ColumnName] = {}
    """Reference column -> the app's column; unnamed columns keep the reference name."""


class HandlerSettings(BaseSettings):
    """Configuration of the bundled handlers. Field names map to `HANDLERS_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="HANDLERS_",
        extra="ignore",
        frozen=True,
        # The docstring under each field is its description in the generated reference
        # (docs/gen_reference.py reads it from this file: see worker/config.py).
    )

    # -- every external API ---------------------------------------------------------------
    http_timeout_s: float = Field(default=30.0, gt=0, le=600)
    """Read/write/pool timeout of one HTTP request."""
    http_connect_timeout_s: float = Field(default=10.0, gt=0, le=120)
    """Connect timeout of one HTTP request."""
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
    """Samples asked for per page of the wearable provider API."""
    wearables_max_pages: int = Field(default=50, ge=1, le=10_000)
    """Pages per connection per run; the rest follows on the next run."""

    # -- game_platform_sync, game_platform_totals_sweep --------------------------------
    game_platform_api_url: AnyHttpUrl | None = None
    """Base URL of the game platform API; unset: the game-platform jobs succeed with a note
    saying so."""
    game_platform_api_token: SecretStr | None = None
    """Sent as `Authorization: Bearer <token>`."""
    game_platform_page_size: int = Field(default=100, ge=1, le=10_000)
    """Games asked for per page of the game platform API."""
    game_platform_max_pages: int = Field(default=20, ge=1, le=10_000)
    """Pages per competitor per run; the rest follows on the next run."""
    game_platform_sweep_batch: int = Field(default=500, ge=1, le=100_000)
    """Most flagged competitors one totals sweep refreshes."""

    # -- the apps' own tables -------------------------------------------------------------
    tables: dict[str, TableMap] = {}
    """JSON: {"queue": {"table": "public.orders", "columns": {"date": "created_at"}}}: the
    app's names for reference tables (REFERENCE_TABLES) and their columns."""

    # -- process_orders -------------------------------------------------------------------
    orders_max_per_run: int = Field(default=10_000, ge=1, le=10_000_000)
    """Most orders one process_orders run takes (the rest goes to the next run)."""

    # -- refresh_metrics ------------------------------------------------------------------
    metrics_views: Annotated[list[SqlName], NoDecode] = []
    """Materialized views refresh_metrics may refresh, comma-separated."""
    metrics_functions: Annotated[list[SqlName], NoDecode] = []
    """Argument-less SQL functions refresh_metrics may call, comma-separated."""

    # -- call_function --------------------------------------------------------------------
    call_functions: Annotated[list[SqlName], NoDecode] = []
    """Argument-less SQL functions call_function may run, comma-separated."""
    call_function_timeout_s: float = Field(default=600.0, gt=0, le=3300)
    """Statement timeout of one call: PostgreSQL cancels it well before the handler's own
    timeout (3600 s) would abandon the connection mid-statement."""

    # -- rollup_usage ---------------------------------------------------------------------
    usage_event_types: Annotated[list[str], NoDecode] = ["TTS_REQUEST"]
    """Event types the rollup counts, comma-separated; empty: every type."""
    usage_positive_only: bool = True
    """Count only events with characters_processed > 0 (as the app's own rollup)."""

    # -- auto_complete_challenges, send_streak_reminders --------------------------------
    challenge_success_pct: float = Field(default=80.0, ge=0, le=100)
    """A closed challenge is `completed` when its members' average completion reaches this."""
    streak_reminder_hour: int = Field(default=8, ge=0, le=23)
    """Local hour (in each user's own time zone) in which reminders go out."""

    # -- cleanup --------------------------------------------------------------------------
    cleanup_notification_age_days: int = Field(default=30, ge=1, le=36_500)
    """Notifications older than this are deleted (target `notifications`)."""
    cleanup_order_age_days: int = Field(default=90, ge=1, le=36_500)
    """Completed and failed orders older than this are deleted."""
    cleanup_job_age_days: int = Field(default=14, ge=1, le=36_500)
    """Succeeded job_queue rows older than this are deleted (target `jobs`)."""
    cleanup_batch_size: int = Field(default=1000, ge=1, le=100_000)
    """Rows one delete statement removes (each batch is its own transaction)."""
    cleanup_max_batches: int = Field(default=100, ge=1, le=100_000)
    """Most batches per table and run; the rest goes on the next run."""

    # -- call_endpoint --------------------------------------------------------------------
    endpoints: dict[EndpointName, Endpoint] = {}
    """JSON: {"name": {"url": ..., "secret": ..., "secret_header": ..., "timeout_s": ...}}."""

    @field_validator(
        "metrics_views", "metrics_functions", "call_functions", "usage_event_types", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("usage_event_types")
    @classmethod
    def _bounded_event_types(cls, value: list[str]) -> list[str]:
        if any(len(item) > 200 for item in value):
            raise ValueError("event types are at most 200 characters")
        return value

    @field_validator("tables")
    @classmethod
    def _known_tables_and_columns(cls, value: dict[str, TableMap]) -> dict[str, TableMap]:
        for key, mapped in value.items():
            known = REFERENCE_TABLES.get(key)
            if known is None:
                raise ValueError(
                    f"unknown table {key!r} (tables that can be mapped: "
                    f"{', '.join(REFERENCE_TABLES)})"
                )
            unknown = sorted(set(mapped.columns) - set(known))
            if unknown:
                raise ValueError(
                    f"{key}.columns: unknown column(s) {', '.join(unknown)} (the handlers use "
                    f"{', '.join(known)})"
                )
            physical = [mapped.columns.get(column, column) for column in known]
            twice = sorted({name for name in physical if physical.count(name) > 1})
            if twice:
                raise ValueError(f"{key}.columns: {', '.join(twice)} named for two columns")
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
