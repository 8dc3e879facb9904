"""Three worker replicas through a real transaction-mode PgBouncer, as on Supabase's pooler
port (Supavisor, 6543): jobs, retries and a schedule, with WORKER_POOLER_MODE=true.

The pooler comes from .ci/setup-pgbouncer (Debian's pgbouncer, pool_mode = transaction, on
127.0.0.1:6432 in front of the PostgreSQL on 127.0.0.1:5432). POOLER_TEST_URL is the
pooler's DSN and POOLER_TEST_SERVER_URL the admin DSN of the server behind it (the test
creates and drops its database there; everything else goes through the pooler, the
migrations included). Without them these tests skip, except under CI=true, where they
fail and say how to get them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import asyncpg
import pytest
import structlog.testing

from tests.support import pg
from tests.support.proc import worker_env
from worker import migrations, scheduler, store

pytestmark = pytest.mark.e2e

POOLER_URL = os.environ.get("POOLER_TEST_URL", "postgresql://postgres@127.0.0.1:6432/postgres")
SERVER_URL = os.environ.get(
    "POOLER_TEST_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

REPLICAS = 3
SLEEP_JOBS = 240  # test_sleep, 0.1 s each, so the replicas work side by side
FAIL_ONCE_JOBS = 60  # test_fail_once: fails its first attempt, succeeds on the retry
SCHEDULE = "pooler_every_minute"
BACKLOG_MIN = 5  # the schedule owes this many minute ticks when the replicas start
PROGRESS_TIMEOUT_S = 40.0


def _unavailable(reason: str) -> NoReturn:
    parts = [urlsplit(u) for u in (POOLER_URL, SERVER_URL)]
    where = " and ".join(f"{p.hostname}:{p.port}" for p in parts)  # no user or password
    message = (
        f"no transaction-mode pooler at POOLER_TEST_URL / POOLER_TEST_SERVER_URL ({where}):"
        f" {reason}. Run `sudo .ci/setup-pgbouncer` (Debian) or point POOLER_TEST_URL at a"
        " transaction-mode pooler and POOLER_TEST_SERVER_URL at the server behind it."
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True, slots=True)
class Pooled:
    direct_dsn: str
    """The test database on the server itself (for checks only)."""
    pooled_dsn: str
    """The same database through the pooler: what the workers use."""


async def _connect(dsn: str) -> asyncpg.Connection:
    # No prepared-statement cache through a transaction pooler (what WORKER_POOLER_MODE does).
    return await asyncpg.connect(dsn, timeout=5, statement_cache_size=0)


@pytest.fixture
async def pooled() -> AsyncIterator[Pooled]:
    try:
        await (await _connect(SERVER_URL)).close()
        await (await _connect(POOLER_URL)).close()
    except (OSError, asyncpg.PostgresError) as exc:
        _unavailable(str(exc) or type(exc).__name__)
    name = pg.unique_name("pool")
    direct = await pg.create_database(SERVER_URL, name)
    try:
        yield Pooled(direct, pg.with_database(POOLER_URL, name))
    finally:
        await pg.drop_database(SERVER_URL, name)


async def _assert_transaction_pooling(dsn: str) -> None:
    """Two clients, one server connection: the pooler hands a server connection to another
    client after each transaction (a session pooler or a direct connection never would)."""
    first, second = await _connect(dsn), await _connect(dsn)
    try:
        pids = {await conn.fetchval("SELECT pg_backend_pid()") for conn in (first, second)}
    finally:
        await first.close()
        await second.close()
    where = urlsplit(dsn).netloc.rsplit("@", maxsplit=1)[-1]
    assert len(pids) == 1, f"{where} is not a transaction-mode pooler: {pids}"


async def _prepare(dsn: str) -> datetime:
    """Migrate through the pooler and add the schedule, owing BACKLOG_MIN ticks; returns the
    last tick it does not owe."""
    db = await store.connect(dsn, statement_cache_size=0, pooled=True)
    try:
        await migrations.migrate(db)
        now = await db.database_now()
        since = now.replace(second=0, microsecond=0) - timedelta(minutes=BACKLOG_MIN)
        await db.pool.execute(
            "INSERT INTO job_schedules (name, cron, task_type, missed, last_tick_at)"
            " VALUES ($1, '* * * * *', 'test_ok', 'all', $2)",
            SCHEDULE,
            since,
        )
    finally:
        await db.close()
    return since


async def _enqueue(dsn: str) -> list[int]:
    """The jobs, as an app enqueues them (job_queue_enqueue, through the pooler)."""
    conn = await _connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT job_queue_enqueue(t, p) AS id FROM unnest($1::text[], $2::jsonb[]) AS j(t, p)",
            ["test_sleep"] * SLEEP_JOBS + ["test_fail_once"] * FAIL_ONCE_JOBS,
            ['{"seconds": 0.1}'] * SLEEP_JOBS + ["{}"] * FAIL_ONCE_JOBS,
        )
    finally:
        await conn.close()
    return [r["id"] for r in rows]


async def _wait_for_start(logs: list[Path], processes: list[subprocess.Popen[bytes]]) -> None:
    """Until every replica logged worker_started (so all of them see the jobs arrive)."""
    deadline = time.monotonic() + PROGRESS_TIMEOUT_S
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in processes), f"a replica exited early: {logs}"
        if all(_has_event(log, "worker_started") for log in logs):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the replicas did not start within {PROGRESS_TIMEOUT_S}s: {logs}")


def _has_event(log: Path, name: str) -> bool:
    if not log.exists():
        return False
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if json.loads(line).get("event") == name:
                return True
    return False


def _start(dsn: str, index: int, log: Path, *, pooler_mode: bool) -> subprocess.Popen[bytes]:
    env = worker_env(
        dsn,
        WORKER_HANDLER_MODULES="tests.support.handlers",
        WORKER_WORKER_ID=f"replica-{index}",
        WORKER_SCHEDULER="on",
        WORKER_SCHEDULES_FILE="",
        WORKER_SCHEDULER_INTERVAL_S="1",
        WORKER_POLL_INTERVAL_S="0.2",
        WORKER_CONCURRENCY="20",
    )
    if pooler_mode:
        env["WORKER_POOLER_MODE"] = "true"
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=sink
        )


async def _wait_until_done(conn: asyncpg.Connection, jobs: int) -> datetime:
    """Until every queued job and every owed tick's job has succeeded; returns the database's
    time then."""
    deadline = time.monotonic() + PROGRESS_TIMEOUT_S
    while time.monotonic() < deadline:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'succeeded') AS done,"
            " count(*) FILTER (WHERE status IN ('pending', 'running')) AS open, now() AS at"
            " FROM job_queue"
        )
        assert row is not None
        if row["open"] == 0 and row["done"] >= jobs + BACKLOG_MIN:
            at: datetime = row["at"]
            return at
        await asyncio.sleep(0.1)
    raise AssertionError(f"not done after {PROGRESS_TIMEOUT_S}s: {dict(row)}")


def _stop(processes: list[subprocess.Popen[bytes]]) -> list[int]:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    return [process.wait(timeout=30) for process in processes]


def _log_problems(log: Path) -> list[str]:
    """Lines in a worker's stderr that are not JSON, or are errors, or are warnings other
    than the expected retry of a test_fail_once job's first attempt."""
    problems = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"{log.name}: not a JSON line: {line}")
            continue
        level = event.get("level")
        expected_retry = (
            event.get("event") == "job_retry"
            and event.get("task_type") == "test_fail_once"
            and event.get("attempt") == 1
        )
        if level in ("error", "critical") or (level == "warning" and not expected_retry):
            problems.append(f"{log.name}: {line}")
    return problems


async def test_three_replicas_in_pooler_mode_run_everything_once(
    pooled: Pooled, tmp_path: Path
) -> None:
    await _assert_transaction_pooling(pooled.pooled_dsn)
    since = await _prepare(pooled.pooled_dsn)
    logs = [tmp_path / f"replica-{i}.log" for i in range(REPLICAS)]
    replicas = [_start(pooled.pooled_dsn, i, log, pooler_mode=True) for i, log in enumerate(logs)]
    try:
        await _wait_for_start(logs, replicas)
        ids = await _enqueue(pooled.pooled_dsn)
    except BaseException:
        _stop(replicas)
        raise
    conn = await asyncpg.connect(pooled.direct_dsn)
    try:
        try:
            done_at = await _wait_until_done(conn, len(ids))
        finally:
            codes = _stop(replicas)
        jobs = await conn.fetch(
            "SELECT id, task_type, status, attempts, run_type, schedule_name, run_at, dedupe_key,"
            " created_at"
            " FROM job_queue ORDER BY id"
        )
        runs = await conn.fetch(
            "SELECT job_id, attempt, status, worker_id FROM job_runs ORDER BY job_id, attempt"
        )
        last_tick_at = await conn.fetchval(
            "SELECT last_tick_at FROM job_schedules WHERE name = $1", SCHEDULE
        )
    finally:
        await conn.close()

    assert codes == [0] * REPLICAS
    assert [p for log in logs for p in _log_problems(log)] == []
    queued = [j for j in jobs if j["id"] in set(ids)]
    ticks = [j for j in jobs if j["schedule_name"] == SCHEDULE]
    assert len(queued) + len(ticks) == len(jobs)
    attempts = {"test_sleep": 1, "test_fail_once": 2}
    assert sorted({(j["task_type"], j["status"], j["attempts"]) for j in queued}) == sorted(
        (task, "succeeded", n) for task, n in attempts.items()
    )
    assert len(queued) == SLEEP_JOBS + FAIL_ONCE_JOBS
    # One audit row per attempt: a retry then a success for each test_fail_once job.
    statuses: dict[int, list[str]] = {}
    for run in runs:
        statuses.setdefault(run["job_id"], []).append(run["status"])
    audit = {"test_sleep": ["succeeded"], "test_fail_once": ["retry", "succeeded"]}
    assert [j["id"] for j in queued if statuses[j["id"]] != audit[j["task_type"]]] == []
    # Which replica ran how many attempts is up to the pooler and the machine (a replica's
    # first statements can wait seconds on asyncpg's type introspection): shown, not asserted.
    per_replica = {f"replica-{i}": 0 for i in range(REPLICAS)}
    for run in runs:
        per_replica[run["worker_id"]] += 1
    print(f"\nattempts per replica: {per_replica}")
    assert all(_has_event(log, "worker_stopped") for log in logs)

    # Each owed tick, and each that came due during the run, enqueued once, and only those;
    # all that existed when the queue had drained ran once (one enqueued after that, at a
    # minute boundary, may still be pending when the replicas stop).
    expected = _minute_ticks(since, last_tick_at)
    assert len(expected) >= BACKLOG_MIN
    assert sorted(j["run_at"] for j in ticks) == expected
    assert sorted(j["dedupe_key"] for j in ticks) == [
        scheduler.dedupe_key(SCHEDULE, tick) for tick in expected
    ]
    assert {j["run_type"] for j in ticks} == {"cron"}
    ran = [j for j in ticks if j["created_at"] <= done_at]
    assert len(ran) >= BACKLOG_MIN
    assert {(j["status"], j["attempts"]) for j in ran} == {("succeeded", 1)}
    assert [j["id"] for j in ran if statuses[j["id"]] != ["succeeded"]] == []


def _minute_ticks(since: datetime, until: datetime) -> list[datetime]:
    """Every `* * * * *` tick in (since, until]."""
    ticks, tick = [], since + timedelta(minutes=1)
    while tick <= until:
        ticks.append(tick.astimezone(UTC))
        tick += timedelta(minutes=1)
    return ticks


async def test_connecting_through_a_pooler_without_pooler_mode_works_and_says_so(
    pooled: Pooled,
) -> None:
    """PgBouncer refuses the engine's session settings (jit, plan_cache_mode) as startup
    parameters. Forgetting WORKER_POOLER_MODE must not stop the worker with a protocol
    error: it connects with the server's settings and logs a hint."""
    with structlog.testing.capture_logs() as logs:
        db = await store.connect(pooled.pooled_dsn, statement_cache_size=0)
    try:
        assert await db.pool.fetchval("SELECT current_setting('plan_cache_mode')") == "auto"
    finally:
        await db.close()
    [warning] = [line for line in logs if line["event"] == "pooler_suspected"]
    assert "WORKER_POOLER_MODE=true" in warning["hint"]
    assert "jit" in warning["error"]
