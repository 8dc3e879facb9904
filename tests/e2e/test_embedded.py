"""The zero-config embedded PostgreSQL: shared by processes, never left running."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.proc import last_json, run_cli, worker_env


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    # tempfile, not tmp_path: pytest resets its own base dir to 0700 at each session, which
    # locks out the server's system user when tests run as root.
    path = Path(tempfile.mkdtemp(prefix="worker-embedded-"))
    yield path
    server = postmaster(path)
    if server is not None:
        server.kill()
    shutil.rmtree(path, ignore_errors=True)


def postmaster(base: Path) -> psutil.Process | None:
    try:
        pid = int((base / "pgdata" / "postmaster.pid").read_text().split()[0])
        process = psutil.Process(pid)
    except (FileNotFoundError, ValueError, IndexError, psutil.Error):
        return None
    return process if process.status() != psutil.STATUS_ZOMBIE else None


def wait_until(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def start_daemon(base: Path, log: Path) -> subprocess.Popen[bytes]:
    env = worker_env(None, WORKER_EMBEDDED_DIR=str(base), WORKER_POLL_INTERVAL_S="0.2")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=sink
        )
    wait_until(lambda: b"worker_started" in log.read_bytes(), 60, "the daemon to start")
    return process


def test_sigkilled_daemon_does_not_leave_the_server_running(embedded_dir: Path) -> None:
    daemon = start_daemon(embedded_dir, embedded_dir / "daemon.log")
    server = postmaster(embedded_dir)
    assert server is not None and server.is_running()
    # A second process (the CLI) attaches to the same server and leaves it running.
    enqueued = run_cli(
        "enqueue",
        "echo",
        "--payload",
        '{"message": "x"}',
        dsn=None,
        WORKER_EMBEDDED_DIR=str(embedded_dir),
    )
    assert enqueued.returncode == 0, enqueued.stderr
    assert server.is_running()
    wait_until(
        lambda: b'"job_succeeded"' in (embedded_dir / "daemon.log").read_bytes(),
        20,
        "the daemon to run the CLI's job",
    )
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(timeout=10)
    wait_until(
        lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE,
        30,
        "the watchdog to stop the orphaned server",
    )


def test_sigterm_exits_zero_and_stops_the_server(embedded_dir: Path) -> None:
    daemon = start_daemon(embedded_dir, embedded_dir / "daemon.log")
    server = postmaster(embedded_dir)
    assert server is not None
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    wait_until(lambda: postmaster(embedded_dir) is None, 30, "the server to stop")


def test_a_dead_process_left_in_the_handle_list_does_not_pin_the_server(embedded_dir: Path) -> None:
    first = run_cli("demo", "--jobs", "2", dsn=None, WORKER_EMBEDDED_DIR=str(embedded_dir))
    assert first.returncode == 0, first.stderr
    assert last_json(first.stdout)["failed"] == 0
    wait_until(lambda: postmaster(embedded_dir) is None, 30, "the server to stop")
    # A process killed before it could unregister: its pid stays in the handle list.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (embedded_dir / "pgdata" / ".handle_pids.json").write_text(f"[{dead.pid}]")
    second = run_cli("status", dsn=None, WORKER_EMBEDDED_DIR=str(embedded_dir))
    assert second.returncode == 0, second.stderr
    wait_until(lambda: postmaster(embedded_dir) is None, 30, "the server to stop")
    assert os.path.exists(embedded_dir / "pgdata" / "PG_VERSION")
