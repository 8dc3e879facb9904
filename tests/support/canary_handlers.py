"""Handlers that fail with secrets in their messages, the way careless handler code does
(tests/integration/test_canary.py runs them in a worker subprocess through
WORKER_HANDLER_MODULES=tests.support.canary_handlers)."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg
import httpx
import pydantic

from handlers import settings as handler_settings
from worker import config, errors
from worker.registry import JobContext, JobResult, handler


class Empty(pydantic.BaseModel):
    pass


@handler("canary_http_url", payload=Empty, max_attempts=1, timeout_s=30)
async def http_url(ctx: JobContext, payload: Empty) -> JobResult:
    """A token in the URL's path and query: httpx puts the whole URL in its error."""
    conf = handler_settings.get()
    assert conf.wearables_api_url is not None and conf.wearables_api_token is not None
    token = conf.wearables_api_token.get_secret_value()
    url = f"{conf.wearables_api_url}v1/{token}/samples?access_token={token}"
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
        response.raise_for_status()
    return JobResult()


@handler("canary_message", payload=Empty, max_attempts=2, timeout_s=30)
async def message(ctx: JobContext, payload: Empty) -> JobResult:
    """Every other secret, bare, in an exception message (retried once, then failed)."""
    conf = handler_settings.get()
    assert conf.game_platform_api_token is not None
    endpoint_secrets = [e.secret.get_secret_value() for e in conf.endpoints.values() if e.secret]
    settings = config.load()  # the worker's own settings, read from the environment
    sentry = settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else ""
    passwords = list(config.dashboard_users(settings.dashboard_users).values())
    raise RuntimeError(
        f"upstream refused {conf.game_platform_api_token.get_secret_value()} and "
        f"{' '.join(endpoint_secrets)}; sentry key {urlsplit(sentry).username}; "
        f"dashboard {' '.join(passwords)}"
    )


@handler("canary_dsn", payload=Empty, max_attempts=1, timeout_s=30)
async def dsn(ctx: JobContext, payload: Empty) -> JobResult:
    """A connection error to the worker's own DSN (on a closed port), quoted in full."""
    settings = config.load()  # the worker's own settings, read from the environment
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    parts = urlsplit(url)
    closed = url.replace(f":{parts.port}/", ":1/") if parts.port else url + "&port=1"
    try:
        await asyncpg.connect(closed, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise errors.JobError(
            f"cannot connect to {closed} (password {parts.password}): {exc}"
        ) from None
    return JobResult()
