"""A canary secret in every secret setting never comes out of the worker.

DATABASE_URL's password (of a real login role), SENTRY_DSN's key, the HANDLERS_* tokens and
endpoint secret, and a dashboard password each hold a different secret that starts with the
same canary marker: one shared value would let the DATABASE_URL registration hide a missing
HANDLERS_* one. Worker subprocesses (JSON logs, debug level, Sentry pointed at a local fake
endpoint) then run jobs that fail with those secrets in their messages: bundled handlers
whose API echoes the credentials back, a handler whose HTTP error quotes a URL carrying a
token, one that quotes every secret bare, one that fails to connect to the worker's DSN;
and runs whose settings are wrong. The marker must appear nowhere: not in the log output,
the --once summary, any column of job_runs or job_queue, or any Sentry event.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.support import roles
from tests.support.fakeapi import FakeApi, Request, Response
from tests.support.proc import run_cli, worker_env
from worker import migrations, store

MARKER = f"cNrY{uuid.uuid4().hex[:6]}"


def _secret(tag: str) -> str:
    return f"{MARKER}{tag}{uuid.uuid4().hex[:8]}"


SECRETS = {
    "database": _secret("db"),
    "sentry": _secret("sentry"),
    "wearables": _secret("wear"),
    "game": _secret("game"),
    "endpoint": _secret("endpoint"),
    "dashboard": _secret("dashboard"),
}


def sentry_events(api: FakeApi) -> list[str]:
    """Every item Sentry received, as text. The envelope header's `dsn` is left out: it is
    how the SDK authenticates to Sentry (as the X-Sentry-Auth header is)."""
    texts = []
    for request in api.requests_to("/api/"):
        body = request.body
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        header, _, items = body.decode().partition("\n")
        envelope = json.loads(header)
        envelope.pop("dsn", None)
        texts.append(json.dumps(envelope) + "\n" + items)
    return texts


def _routes(api: FakeApi) -> None:
    def echo(status: int) -> Any:
        def route(request: Request) -> Response:
            said = request.headers.get("authorization", "")
            if status == 200:
                return Response(200, {"you_sent": said})
            return Response(status, text=f"credentials {said} refused")

        return route

    for status in (200, 401, 500):
        api.route("POST", f"/echo{status}")(echo(status))
    api.route("GET", "/v1/{token}/samples")(lambda request: Response(401, {"error": "no"}))
    api.route("POST", "/api/{project}/envelope/")(lambda request: Response(200, {}))


def _environment(api: FakeApi, dsn: str) -> dict[str, str]:
    endpoints = {
        f"echo{status}": {
            "url": f"{api.url}/echo{status}",
            "secret": f"Bearer {SECRETS['endpoint']}",
        }
        for status in (200, 401, 500)
    }
    port = api.url.rsplit(":", 1)[1]
    return {
        "WORKER_HANDLER_MODULES": "handlers.bundled,tests.support.canary_handlers",
        "WORKER_LOG_LEVEL": "debug",
        "WORKER_SENTRY_REPEAT_FAILURES": "1",
        "WORKER_DASHBOARD_USERS": f"alice:{SECRETS['dashboard']}",
        "SENTRY_DSN": f"http://{SECRETS['sentry']}@127.0.0.1:{port}/1",
        "HANDLERS_WEARABLES_API_URL": f"{api.url}/",
        "HANDLERS_WEARABLES_API_TOKEN": SECRETS["wearables"],
        "HANDLERS_GAME_PLATFORM_API_TOKEN": SECRETS["game"],
        "HANDLERS_ENDPOINTS": json.dumps(endpoints),
        "HANDLERS_HTTP_ATTEMPTS": "1",
        "HANDLERS_HTTP_RETRY_WAIT_S": "0",
    }


async def _enqueue(dsn: str) -> None:
    db = await store.connect(dsn)
    try:
        for task, payload, max_attempts in (
            ("call_endpoint", {"endpoint": "echo401"}, 1),
            ("call_endpoint", {"endpoint": "echo500"}, 2),
            ("call_endpoint", {"endpoint": "echo200"}, 1),
            ("canary_http_url", {}, None),
            ("canary_message", {}, None),
            ("canary_dsn", {}, None),
        ):
            await db.enqueue(task, payload, max_attempts=max_attempts)
    finally:
        await db.close()


async def _stored_rows(dsn: str) -> tuple[str, dict[str, str]]:
    """Every column of every job_runs and job_queue row, as text; and each job's status."""
    conn = await asyncpg.connect(dsn)
    try:
        runs = await conn.fetch("SELECT r::text AS row FROM job_runs r")
        jobs = await conn.fetch(
            "SELECT q::text AS row, task_type, payload, status FROM job_queue q"
        )
    finally:
        await conn.close()
    text = "\n".join(r["row"] for r in [*runs, *jobs])
    statuses = {f"{j['task_type']} {j['payload']}": j["status"] for j in jobs}
    return text, statuses


def _closed_port(dsn: str) -> str:
    """`dsn` pointed at port 1, where nothing listens."""
    parts = urlsplit(dsn)
    if parts.port is None:  # a Unix socket URI (the embedded server)
        return urlunsplit(parts._replace(query=f"{parts.query}&port=1".lstrip("&")))
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0] + ":1"))


@pytest.fixture
async def canary_dsn(server_dsn: str, empty_dsn: str) -> Any:
    """A migrated database, and a DSN of a login role (member of job_worker) whose password
    is the database secret."""
    await roles.ensure_roles(server_dsn)
    db = await store.connect(empty_dsn)
    try:
        await migrations.migrate(db)
    finally:
        await db.close()
    name = await roles.create_login(
        server_dsn, "canary", member_of=roles.WORKER_ROLE, password=SECRETS["database"]
    )
    try:
        yield roles.as_user(empty_dsn, name, SECRETS["database"])
    finally:
        await roles.drop_role(server_dsn, empty_dsn, name)


async def run_daemon(dsn: str, owner_dsn: str, env: dict[str, str], log: Path) -> str:
    """`python -m worker` until every job is settled, then SIGTERM; returns its log."""
    full = worker_env(dsn, WORKER_POLL_INTERVAL_S="0.2", **env)
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker", env=full, stdout=subprocess.DEVNULL, stderr=sink
        )
    try:
        conn = await asyncpg.connect(owner_dsn)
        try:
            for _ in range(600):  # up to a minute
                live = await conn.fetchval(
                    "SELECT count(*) FROM job_queue WHERE status IN ('pending', 'running')"
                )
                if live == 0 or process.returncode is not None:
                    break
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=30)
    return await asyncio.to_thread(log.read_text)


EXPECTED_STATUSES = {
    'call_endpoint {"endpoint": "echo401"}': "failed",
    'call_endpoint {"endpoint": "echo500"}': "failed",
    'call_endpoint {"endpoint": "echo200"}': "succeeded",
    "canary_http_url {}": "failed",
    "canary_message {}": "failed",
    "canary_dsn {}": "failed",
}


async def test_the_canary_never_leaves_the_worker(
    canary_dsn: str, empty_dsn: str, tmp_path: Path
) -> None:
    async with FakeApi() as api:
        _routes(api)
        env = _environment(api, canary_dsn)
        await _enqueue(empty_dsn)
        daemon_log = await run_daemon(canary_dsn, empty_dsn, env, tmp_path / "daemon.log")
        daemon_rows, statuses = await _stored_rows(empty_dsn)
        events = sentry_events(api)
        await _enqueue(empty_dsn)  # again, for a --once run and its summary
        once = await asyncio.to_thread(run_cli, "--once", dsn=canary_dsn, timeout=120, **env)
        stored, _ = await _stored_rows(empty_dsn)

    assert statuses == EXPECTED_STATUSES, daemon_log[-3000:]
    assert once.returncode == 1, once.stderr  # jobs failed for good, as they should
    # The secrets did reach the APIs, and were in the failures: scrubbed, not absent.
    said = {r.headers.get("authorization") for r in api.requests_to("/echo")}
    assert said == {f"Bearer {SECRETS['endpoint']}"}
    assert any(SECRETS["wearables"] in r.path for r in api.requests_to("/v1/"))
    assert daemon_rows.count("[Filtered]") >= 5
    assert len(events) >= 6, "every failure and retry is reported to Sentry"

    for where, text in (
        ("daemon's log", daemon_log),
        ("--once log", once.stderr),
        ("--once summary", once.stdout),
        ("job_runs / job_queue", stored),
        ("Sentry events", "\n".join(events)),
    ):
        assert MARKER not in text, f"a canary secret leaked into the {where}"


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("HANDLERS_ENDPOINTS", {"url": "http://127.0.0.1:1/", "timeout_s": -1}),
        ("HANDLERS_ENDPOINTS", "not json"),
        ("WORKER_CONCURRENCY", "0"),
        ("DATABASE_URL", "closed port"),
    ],
    ids=["endpoint-invalid", "endpoint-not-json", "worker-setting", "database-unreachable"],
)
async def test_the_canary_survives_bad_settings(
    canary_dsn: str, empty_dsn: str, setting: str, value: Any
) -> None:
    async with FakeApi() as api:
        _routes(api)
        env = _environment(api, canary_dsn)
        dsn = canary_dsn
        if setting == "HANDLERS_ENDPOINTS":
            broken = value if isinstance(value, str) else {**value, "secret": SECRETS["endpoint"]}
            text = f'{{"hook": {json.dumps(broken)}, "x": "{SECRETS["endpoint"]}"'
            env[setting] = text if isinstance(value, str) else json.dumps({"hook": broken})
        elif setting == "DATABASE_URL":
            dsn = _closed_port(canary_dsn)
            env["WORKER_CONNECT_TIMEOUT_S"] = "0.5"
        else:
            env[setting] = value
        await _enqueue(empty_dsn)
        done = await asyncio.to_thread(run_cli, "--once", dsn=dsn, timeout=120, **env)
        stored, _ = await _stored_rows(empty_dsn)
        events = sentry_events(api)

    assert done.returncode != 0
    for where, text in (
        ("log output", done.stderr),
        ("--once summary", done.stdout),
        ("job_runs / job_queue", stored),
        ("Sentry events", "\n".join(events)),
    ):
        assert MARKER not in text, f"a canary secret leaked into the {where}"
