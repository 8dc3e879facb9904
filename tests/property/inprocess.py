"""The CLI run in this process (`worker.cli.main`), for hundreds of examples per test: a
subprocess costs about a second, an in-process run a few tens of milliseconds.

`cli.main` runs its own event loop and installs a SIGTERM handler, so it is called from
synchronous tests in the main thread; what it changes for the process (environment,
signal handler, structlog configuration) is put back after each call. Those tests read the
database through a ThreadDb.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import threading
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import structlog

from worker import cli, store

T = TypeVar("T")

BASE_ENV = {
    "WORKER_SCHEDULER": "off",
    "WORKER_LOG_FORMAT": "json",
    "WORKER_LOG_LEVEL": "error",
    "WORKER_HANDLER_MODULES": "handlers.bundled",
    "WORKER_CONNECT_TIMEOUT_S": "5",
}


@dataclass(frozen=True, slots=True)
class CliRun:
    code: int
    stdout: str
    stderr: str

    def assert_one_line_refusal(self) -> str:
        """Exit code 2, no traceback, and exactly one line that says what is wrong (argparse
        adds its usage lines above it). Returns that line."""
        assert self.code == 2, (self.code, self.stdout, self.stderr)
        assert "Traceback" not in self.stderr, self.stderr
        errors = [line for line in self.stderr.splitlines() if _is_error_line(line)]
        assert len(errors) == 1, self.stderr
        if not self.stderr.startswith("usage:"):  # the worker's own refusals: one line only
            assert self.stderr.count("\n") == 1 and self.stderr.endswith("\n"), self.stderr
        return errors[0]


def _is_error_line(line: str) -> bool:
    return line.startswith("error: ") or (
        line.startswith("python -m worker") and ": error: " in line
    )


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Only `values` among WORKER_* and SENTRY_DSN while the block runs."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("WORKER_")]:
        del os.environ[key]
    os.environ.pop("SENTRY_DSN", None)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_cli(argv: Sequence[str], dsn: str | None, **env: str) -> CliRun:
    """`python -m worker ARGV` in this process, with DATABASE_URL=dsn and BASE_ENV + env.
    Any exception but SystemExit propagates: a traceback is a failed property."""
    values = {**BASE_ENV, **env}
    if dsn is not None:
        values["DATABASE_URL"] = dsn
    sigterm = signal.getsignal(signal.SIGTERM)
    logging_config = structlog.get_config()
    out, err = io.StringIO(), io.StringIO()
    try:
        with environment(values), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(argv))
            except SystemExit as exc:  # argparse refusals and --help
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        signal.signal(signal.SIGTERM, sigterm)
        structlog.configure(**logging_config)
    return CliRun(code, out.getvalue(), err.getvalue())


class ThreadDb:
    """One connection on an event loop in a thread of its own, for synchronous tests (the
    main thread's loop belongs to pytest-asyncio, and `cli.main` runs loops of its own)."""

    def __init__(self, dsn: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.conn: asyncpg.Connection = self.run(self._connect(dsn))

    @staticmethod
    async def _connect(dsn: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(dsn)
        await store.init_connection(conn)
        return conn

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=120)

    def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return self.run(self.conn.fetch(query, *args))

    def fetchval(self, query: str, *args: Any) -> Any:
        return self.run(self.conn.fetchval(query, *args))

    def close(self) -> None:
        self.run(self.conn.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
