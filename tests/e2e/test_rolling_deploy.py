"""A rolling deploy across a migration: the previous version's worker (its code taken from
git, as the commit before the latest core migration left it) runs on the schema it knows,
the latest migration is applied while jobs flow, and the current worker starts beside it.
Both keep working: no crash, no job lost, every job run (a ledger row each)."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.test_faults import SETUP_SQL
from tests.support.ledger import LEDGER_TASK
from tests.support.proc import worker_env
from worker import migrations, store

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "WORKER_HANDLER_MODULES": "tests.support.ledger",
    "WORKER_LEASE_S": "5",
    "WORKER_RESCUE_INTERVAL_S": "0.5",
    "WORKER_POLL_INTERVAL_S": "0.2",
    "WORKER_CONCURRENCY": "8",
}
_ENQUEUE = (
    "INSERT INTO job_queue (task_type, payload, max_attempts)"
    " SELECT $1, jsonb_build_object('n', n, 'work_ms', 50), 50 FROM generate_series(1, $2) n"
)


def git(*args: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, check=True, timeout=60
    ).stdout


def previous_version(into: Path) -> str:
    """Check out (without touching the work tree) the code as it was just before the latest
    core migration was added; returns that migration's file name."""
    latest = sorted((ROOT / "schema").glob("[0-9][0-9][0-9][0-9]_*.sql"))[-1]
    try:
        # On the mainline (first parents): a migration that came in by a merge was added
        # by the merge, whose first parent is the release before it.
        added = git(
            "log", "--first-parent", "--diff-filter=A", "--format=%H", "--", str(latest)
        ).split()[-1]
    except (subprocess.CalledProcessError, FileNotFoundError, IndexError):
        pytest.skip("needs the repository's git history (a full clone)")
    archive = git("archive", "--format=tar", f"{added.decode()}~1", "worker", "schema")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    # The handlers under test are the current ones (they use only the registry's API).
    (into / "tests" / "support").mkdir(parents=True)
    for name in ("tests/__init__.py", "tests/support/__init__.py", "tests/support/ledger.py"):
        (into / name).write_bytes((ROOT / name).read_bytes())
    return latest.name


def start(dsn: str, code: Path, log: Path, worker_id: str) -> subprocess.Popen[bytes]:
    env = worker_env(dsn, **ENV, WORKER_WORKER_ID=worker_id)
    env["PYTHONPATH"] = str(code)
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"],
            env=env,
            cwd=code,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


@pytest.fixture
async def old_schema_db(empty_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    old = tmp_path / "old"
    old.mkdir()
    latest = previous_version(old)
    assert not (old / "schema" / latest).exists()  # the old code does not know it
    env = worker_env(empty_dsn)
    env["PYTHONPATH"] = str(old)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "worker", "migrate"],
        env=env,
        cwd=old,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    yield empty_dsn, old


async def wait_for(db: store.Store, sql: str, timeout_s: float = 60.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if await db.pool.fetchval(sql):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {sql!r}")


async def test_old_and_new_workers_side_by_side_across_the_latest_migration(
    old_schema_db: tuple[str, Path], tmp_path: Path
) -> None:
    dsn, old_code = old_schema_db
    db = await store.connect(dsn)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        await db.pool.execute(SETUP_SQL)
        pending = await migrations.pending(db)
        assert len(pending) == 1, pending  # the old code's schema: all but the latest
        old = start(dsn, old_code, tmp_path / "old.log", "old-version")
        workers.append(old)
        await db.pool.execute(_ENQUEUE, LEDGER_TASK, 200)
        await wait_for(db, "SELECT count(*) >= 20 FROM soak_ledger")
        applied = await migrations.migrate(db)  # what the new release's deploy step runs
        assert [m.version for m in applied] == [m.version for m in pending]
        await db.pool.execute(_ENQUEUE, LEDGER_TASK, 200)
        new = start(dsn, ROOT, tmp_path / "new.log", "new-version")
        workers.append(new)
        for _ in range(6):  # jobs keep coming while both run
            await db.pool.execute(_ENQUEUE, LEDGER_TASK, 50)
            await asyncio.sleep(0.5)
        await wait_for(db, "SELECT count(*) = 0 FROM job_queue WHERE status <> 'succeeded'")
        assert old.poll() is None, (tmp_path / "old.log").read_text()[-2000:]
        assert new.poll() is None, (tmp_path / "new.log").read_text()[-2000:]
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        assert [worker.wait(timeout=30) for worker in workers] == [0, 0]
        lost = await db.pool.fetchval(
            "SELECT count(*) FROM job_queue j WHERE j.status <> 'succeeded'"
            " OR NOT EXISTS (SELECT 1 FROM soak_ledger l WHERE l.job_id = j.id)"
        )
        assert lost == 0
        assert await db.pool.fetchval("SELECT count(*) FROM job_queue") == 700
        by_worker = dict(
            await db.pool.fetch("SELECT worker_id, count(*) FROM soak_ledger GROUP BY 1")
        )
        assert by_worker.get("old-version", 0) > 0 and by_worker.get("new-version", 0) > 0
        for name in ("old.log", "new.log"):
            text = (tmp_path / name).read_text()
            assert "Traceback" not in text and '"database_fault"' not in text, text[-2000:]
        print(f"\nrolling deploy: 700 jobs, none lost; executions by version {by_worker}")
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
        await db.close()
