"""/health and /metrics of the web application over real HTTP, against a real database."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support import factories, handlers, web
from tests.support.clock import FakeClock
from tests.support.telemetry import parse_metrics
from worker import dispatcher, errors, store
from worker.observability import Telemetry
from worker.web import app as web_app

TOKENS = '{"scraper": {"token": "scrape-token-0123456789abcdef", "scopes": ["read"]}}'


@contextlib.asynccontextmanager
async def endpoint(
    telemetry: Telemetry, db: store.Store, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The worker's web application on an ephemeral port (/metrics open, as for a scraper on
    a private network), and an HTTP client pointed at it."""
    settings = telemetry.settings.model_copy(update={"metrics_public": True})
    async with web.running(web.services(settings, db, telemetry=telemetry, **options)) as client:
        yield client


@contextlib.asynccontextmanager
async def unreachable_store(port: int) -> AsyncIterator[store.Store]:
    """A real pool whose server is not there (min_size=0: it connects on first use)."""
    db = await store.connect(f"postgresql://postgres@127.0.0.1:{port}/none", min_size=0)
    try:
        yield db
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never answers: a hung database."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.transport.abort()
        await server.wait_closed()


async def test_health_is_ok_when_the_database_answers_and_loops_report(
    db: store.Store, make_settings: Any
) -> None:
    telemetry = Telemetry(make_settings())
    telemetry.loop_alive("claimer")
    async with endpoint(telemetry, db) as client:
        response = await client.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["problems"], body["database"]["ok"]) == ("ok", [], True)
    assert body["database"]["server_version"]
    assert set(body["loops"]) == {"claimer"}


async def test_health_fails_before_any_loop_reports(db: store.Store, make_settings: Any) -> None:
    async with endpoint(Telemetry(make_settings()), db) as client:
        response = await client.get("/health")
    assert response.status_code == 503
    assert response.json()["problems"] == ["no loop has reported progress yet"]


async def test_health_fails_when_a_loop_goes_stale(db: store.Store, make_settings: Any) -> None:
    clock = FakeClock()
    telemetry = Telemetry(make_settings(), clock=clock)
    telemetry.loop_alive("claimer")
    telemetry.loop_alive("heartbeat")
    async with endpoint(telemetry, db) as client:
        assert (await client.get("/health")).status_code == 200
        clock.advance(31.0)
        telemetry.loop_alive("heartbeat")
        response = await client.get("/health")
    assert response.status_code == 503
    assert response.json()["problems"] == ["loop 'claimer' last reported 31.0s ago (limit 30s)"]


async def test_health_fails_when_the_database_refuses(make_settings: Any) -> None:
    telemetry = Telemetry(make_settings())
    telemetry.loop_alive("claimer")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with unreachable_store(port) as db, endpoint(telemetry, db) as client:
        response = await client.get("/health")
        metrics = await client.get("/metrics")
    assert response.status_code == 503
    [problem] = response.json()["problems"]
    assert problem.startswith("database: ConnectionRefusedError")
    assert metrics.status_code == 200  # in-memory metrics still serve
    assert parse_metrics(metrics.text)["worker_database_up"] == {(): 0}


async def test_health_fails_fast_when_the_database_hangs(make_settings: Any) -> None:
    telemetry = Telemetry(make_settings())
    telemetry.loop_alive("claimer")
    async with (
        silent_server() as port,
        unreachable_store(port) as db,
        endpoint(telemetry, db, health_timeout_s=0.2, metrics_timeout_s=0.2) as client,
    ):
        response = await asyncio.wait_for(client.get("/health"), timeout=5)
        metrics = await asyncio.wait_for(client.get("/metrics"), timeout=5)
    assert response.status_code == 503
    assert response.json()["problems"] == ["database: no answer within 0.2s"]
    assert parse_metrics(metrics.text)["worker_database_up"] == {(): 0}


async def test_metrics_after_a_drained_batch(db: store.Store, make_settings: Any) -> None:
    settings = make_settings(queues=["default", "mail"])
    for _ in range(3):
        await factories.make_job(db, task_type="ok")
    await factories.make_job(db, task_type="fail_once")
    await factories.make_job(db, task_type="permanent")
    await factories.make_job(db, task_type="boom", queue="mail", max_attempts=2)
    # Left behind: one due an hour ago for a task type another service handles, one future.
    now = datetime.now(UTC)
    await factories.make_job(db, task_type="elsewhere", run_at=now - timedelta(hours=1))
    await factories.make_job(db, task_type="ok", run_at=now + timedelta(hours=1))

    telemetry = Telemetry(settings)
    worker = dispatcher.Dispatcher(db, handlers.registry(), settings, once=True, observer=telemetry)
    summary = await asyncio.wait_for(worker.run(), timeout=30)
    assert (summary.succeeded, summary.retried, summary.failed) == (4, 2, 2)

    async with endpoint(telemetry, db) as client:
        response = await client.get("/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    m = parse_metrics(response.text)

    def jobs(task_type: str, outcome: str, queue: str = "default") -> float:
        key = (("outcome", outcome), ("queue", queue), ("task_type", task_type))
        return m["worker_jobs_total"].get(key, 0)

    assert jobs("ok", "succeeded") == 3
    assert (jobs("fail_once", "retry"), jobs("fail_once", "succeeded")) == (1, 1)
    assert jobs("permanent", "failed") == 1
    assert (jobs("boom", "retry", "mail"), jobs("boom", "failed", "mail")) == (1, 1)
    assert m["worker_job_duration_seconds_count"][(("task_type", "ok"),)] == 3
    assert m["worker_claimed_jobs_total"][()] == 8  # 6 jobs, 2 of them twice
    assert m["worker_claim_duration_seconds_count"][()] >= 2
    assert m["worker_jobs_in_flight"][()] == 0
    assert m["worker_database_up"] == {(): 1}
    assert m["worker_queue_jobs"] == {
        (("queue", "default"), ("status", "pending")): 2,
        (("queue", "default"), ("status", "running")): 0,
        (("queue", "mail"), ("status", "pending")): 0,
        (("queue", "mail"), ("status", "running")): 0,
    }
    lag = m["worker_queue_oldest_pending_age_seconds"]
    assert 3590 < lag[(("queue", "default"),)] < 3700
    assert lag[(("queue", "mail"),)] == 0
    assert m["worker_loop_seconds_since_alive"][(("loop", "claimer"),)] >= 0


async def test_metrics_need_a_read_token_unless_public(db: store.Store, make_settings: Any) -> None:
    settings = make_settings(api_tokens=TOKENS)
    async with web.running(web.services(settings, db, telemetry=Telemetry(settings))) as client:
        refused = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        allowed = await client.get(
            "/metrics", headers={"Authorization": "Bearer scrape-token-0123456789abcdef"}
        )
        health = await client.get("/health")
    assert (refused.status_code, wrong.status_code, allowed.status_code) == (401, 401, 200)
    assert refused.headers["content-type"] == "application/problem+json"
    assert "worker_jobs_in_flight" in allowed.text
    assert health.status_code == 503  # no loop reported: but it answered without a token


async def test_a_port_in_use_is_a_clear_config_error(db: store.Store, make_settings: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = web_app.create_app(web.services(make_settings(), db))
        with pytest.raises(
            errors.ConfigError, match=f"WORKER_HTTP_PORT: cannot listen on 127.0.0.1:{port}"
        ):
            async with web_app.serving(app, host="127.0.0.1", port=port):
                pass
