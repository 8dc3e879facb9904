"""Run the worker CLI as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def worker_env(dsn: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    env.pop("DATABASE_URL", None)
    if dsn is not None:
        env["DATABASE_URL"] = dsn
    # The scheduler is off unless a test turns it on: the default schedule file would add
    # cron jobs to any test that happens to cross a 5-minute or hourly boundary. Every bundled
    # handler is loaded (importing `handlers` alone registers none).
    env.update(
        {
            "WORKER_LOG_FORMAT": "json",
            "WORKER_RETRY_BASE_S": "0",
            "WORKER_SCHEDULER": "off",
            "WORKER_HANDLER_MODULES": "handlers.bundled",
        }
    )
    env.update(extra)
    return env


def run_cli(
    *args: str, dsn: str | None, timeout: float = 60, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env=worker_env(dsn, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def last_json(stdout: str) -> Any:
    return json.loads(stdout.strip().splitlines()[-1])
