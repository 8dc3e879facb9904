"""The worker's one ASGI application, and serving it with uvicorn inside the worker's loop.

    /health          liveness for platform checks (the only path without credentials)
    /metrics         Prometheus text (prometheus-client), a token with the read scope
    /api/v1/...      the JSON API (FastAPI; its OpenAPI document at /api/v1/openapi.json)
    /dashboard/...   the admin pages (Starlette, server-rendered), when users are configured

`create_app` builds it from `Services`; `serving` runs it on a socket of our own until the
block ends. The daemon (service.run) serves it beside the dispatcher; `python -m worker
serve` serves it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import structlog
import uvicorn
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp

from worker import __version__, errors
from worker.web import health, metrics
from worker.web.api import router as api_router
from worker.web.api import security
from worker.web.dashboard import app as dashboard
from worker.web.services import Services

log = structlog.get_logger("worker.web")

API_PREFIX = "/api/v1"


def create_app(services: Services) -> FastAPI:
    """The application: the API router, /health, /metrics and (with users) the dashboard."""
    app = FastAPI(
        title="pg-job-worker",
        version=__version__,
        summary="Enqueue, run, inspect and steer the jobs of a PostgreSQL job queue.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        # Bodies are bounded, declared or streamed (413 beyond): no route reads more.
        max_body_size=services.settings.api_max_body_bytes,
    )
    api_router.install(app, services)
    app.add_api_route(
        "/health",
        _health_route(services),
        methods=["GET"],
        include_in_schema=False,
    )
    app.add_api_route(
        "/metrics", _metrics_route(services), methods=["GET"], include_in_schema=False
    )
    if services.settings.dashboard_users is not None:
        app.add_route(dashboard.PREFIX, _to_dashboard, include_in_schema=False)
        app.mount(dashboard.PREFIX, dashboard.create(services))
    return app


async def _to_dashboard(request: Request) -> Response:
    return RedirectResponse("/dashboard/", status_code=303)


def _health_route(services: Services) -> Callable[[], Awaitable[Response]]:
    checker = health.Health(
        services.db,
        services.telemetry,
        services.settings,
        ping_timeout_s=services.health_timeout_s,
    )

    async def get_health() -> Response:
        status, body = await checker.check()
        return JSONResponse(body, status_code=status)

    return get_health


def _metrics_route(services: Services) -> Callable[[Request], Awaitable[Response]]:
    async def get_metrics(request: Request) -> Response:
        if not services.settings.metrics_public:
            refusal = await security.refusal(services.auth, request, "read")
            if refusal is not None:
                return refusal
        body = await metrics.exposition(
            services.db,
            services.telemetry,
            services.settings,
            timeout_s=services.metrics_timeout_s,
        )
        return Response(body, media_type=metrics.CONTENT_TYPE)

    return get_metrics


# -- serving -----------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The worker handles SIGTERM and SIGINT itself (service.py): uvicorn must not take
        # them over, or a shutdown would stop the web server before the jobs.
        yield


def _bind(host: str, port: int) -> socket.socket:
    """A bound socket of our own: uvicorn exits the process when it cannot bind; we say
    which setting to change instead."""
    sock: socket.socket | None = None
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are
        # TCP. Without it every response after the first on a connection waited ~40 ms
        # (Nagle holding the body until the client's delayed ACK of the headers).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise errors.ConfigError(
            f"WORKER_HTTP_PORT: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    return sock


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, *, host: str, port: int, **options: Any) -> AsyncIterator[int]:
    """Serve `app` on host:port (0: any free port) in this event loop for the duration of the
    block; yields the bound port. Requests in flight get a few seconds at the end."""
    sock = _bind(host, port)
    config = uvicorn.Config(
        app,
        log_config=None,  # our logging (observability.configure_logging) routes its warnings
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        limit_concurrency=200,
        h11_max_incomplete_event_size=16 * 1024,
        **options,
    )
    server = _Server(config)
    # A task of its own rather than a task group: the block may be entered and left in
    # different tasks (a test fixture's setup and teardown).
    task = asyncio.create_task(server.serve([sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise errors.ConfigError(f"WORKER_HTTP_PORT: cannot serve on {host}:{port}")
            await asyncio.sleep(0.01)
        bound = int(sock.getsockname()[1])
        log.info("http_listening", host=host, port=bound)
        yield bound
    finally:
        server.should_exit = True
        with anyio.CancelScope(shield=True):  # also when the block was cancelled
            await task
