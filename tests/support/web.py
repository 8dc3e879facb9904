"""The worker's web application on an ephemeral port, for tests that speak HTTP to it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from worker import observability, service, store
from worker.config import Settings
from worker.registry import Registry
from worker.web import app as web
from worker.web.services import Services


def services(
    settings: Settings,
    db: store.Store,
    registry: Registry | None = None,
    telemetry: observability.Telemetry | None = None,
    **options: Any,
) -> Services:
    """The runtime's own Services (with a real in-process drain), options overridden."""
    built = service.web_services(settings, db, registry or Registry(), telemetry)
    for name, value in options.items():
        setattr(built, name, value)
    return built


@contextlib.asynccontextmanager
async def running(svc: Services) -> AsyncIterator[httpx.AsyncClient]:
    """The application served by uvicorn in this loop, and a client pointed at it."""
    async with (
        web.serving(web.create_app(svc), host="127.0.0.1", port=0) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client,
    ):
        yield client
