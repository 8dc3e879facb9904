"""The daemon's exit codes after signals, as documented: 0 after a clean stop, whatever
its jobs did, even when more signals arrive while it closes down."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest

from tests.support import factories
from tests.support.proc import worker_env
from worker import store

ENV = {
    "WORKER_HANDLER_MODULES": "tests.support.handlers",
    "WORKER_POLL_INTERVAL_S": "0.2",
    "WORKER_SHUTDOWN_GRACE_S": "1",
}


def start(dsn: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker"],
        env=worker_env(dsn, **ENV),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(process: subprocess.Popen[str], event: str, seen: list[str]) -> None:
    """Read the worker's log lines until one names `event`."""
    assert process.stderr is not None
    for line in process.stderr:
        seen.append(line)
        if f'"event":"{event}"' in line:
            return
    raise AssertionError(f"the worker exited before logging {event}: {''.join(seen)[-2000:]}")


async def test_sigterm_exits_0_after_a_job_failed_for_good(db: store.Store, db_dsn: str) -> None:
    job_id = await factories.make_job(db, task_type="test_permanent")
    worker = start(db_dsn)
    seen: list[str] = []
    try:
        read_until(worker, "job_failed", seen)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, rest = worker.communicate(timeout=30)
    assert worker.returncode == 0, "".join(seen)[-2000:] + rest[-2000:]
    assert "Traceback" not in rest
    assert (await factories.job(db, job_id))["status"] == "failed"


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signals_during_the_end_of_an_idle_stop_still_exit_0(
    db: store.Store, db_dsn: str, second: signal.Signals
) -> None:
    """Once the dispatcher has stopped, the worker closes its pools and the interpreter
    exits; signals sent all along that stretch (every 5 ms until it is gone) change
    nothing."""
    await factories.make_job(db, task_type="test_permanent")
    worker = start(db_dsn)
    seen: list[str] = []
    read_until(worker, "job_failed", seen)
    worker.send_signal(signal.SIGTERM)
    read_until(worker, "worker_stopped", seen)
    sent = 0
    while worker.poll() is None and sent < 2000:
        try:
            worker.send_signal(second)
        except ProcessLookupError:
            break
        sent += 1
        await asyncio.sleep(0.005)
    _, rest = worker.communicate(timeout=30)
    assert sent >= 1
    assert worker.returncode == 0, (sent, "".join(seen)[-1500:] + rest[-1500:])
    assert "Traceback" not in rest
