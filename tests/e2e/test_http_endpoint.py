"""The daemon as deployed: WORKER_HTTP_PORT set, /health and /metrics answer, SIGTERM ends it."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import factories
from tests.support.proc import worker_env
from tests.support.telemetry import parse_metrics
from worker import store

TOKENS = '{"scraper": {"token": "scrape-token-0123456789abcdef", "scopes": ["read"]}}'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_daemon(dsn: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = worker_env(
        dsn,
        WORKER_HANDLER_MODULES="tests.support.handlers",
        WORKER_POLL_INTERVAL_S="0.2",
        WORKER_HTTP_PORT=str(port),
        WORKER_API_TOKENS=TOKENS,
    )
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=sink
        )


async def poll(client: httpx.AsyncClient, path: str, done: str, timeout_s: float) -> httpx.Response:
    """GET `path` until a 200 whose body contains `done`, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = await client.get(path)
            if response.status_code == 200 and done in response.text:
                return response
        except httpx.TransportError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"timed out waiting for {done!r} from {path}"
        await asyncio.sleep(0.05)


async def test_daemon_serves_health_and_metrics(
    db: store.Store, db_dsn: str, tmp_path: Path
) -> None:
    await factories.make_job(db, task_type="test_ok")
    port = free_port()
    log = tmp_path / "worker.log"
    daemon = start_daemon(db_dsn, port, log)
    try:
        auth = {"Authorization": "Bearer scrape-token-0123456789abcdef"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=5, headers=auth
        ) as client:
            health = await poll(client, "/health", '"status":"ok"', 30)
            metrics = await poll(client, "/metrics", 'task_type="test_ok"', 30)
        assert "claimer" in health.json()["loops"]
        samples = parse_metrics(metrics.text)
        key = (("outcome", "succeeded"), ("queue", "default"), ("task_type", "test_ok"))
        assert samples["worker_jobs_total"][key] == 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, log.read_text()
    assert '"http_listening"' in log.read_text()
