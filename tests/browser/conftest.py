"""A real headless Chromium (Debian's, at /usr/bin/chromium) driven by Playwright against a
real worker daemon serving the dashboard on a fresh migrated database.

One browser per session (starting Chromium is the slow part); one daemon, one database and
one page per test, so each test sees exactly the rows it seeded. Playwright never downloads a
browser here: `.ci/setup-browser` installs Debian's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import BrowserContext, ConsoleMessage, Page, async_playwright, expect

from tests.support.proc import worker_env

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# Without the background-networking flags Chromium phones home at start (updates, sync,
# field trials), which a closed network refuses noisily and slowly.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
USER = "admin"
# Playwright's 5 s default is short for a 2-core machine shared with other test runs; the
# waits end as soon as the page is right, so a longer bound costs nothing when it passes.
expect.set_options(timeout=10_000)


@dataclasses.dataclass(frozen=True)
class Dashboard:
    """A running daemon: where to reach it, whom to log in as, and its log."""

    base_url: str
    user: str
    password: str
    log: Path

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


@dataclasses.dataclass
class Console:
    """Errors the page reported (CSP violations, failed loads, script errors, dialogs); the
    page fixture fails the test on any. A test that expects a 4xx page allows its status."""

    errors: list[str] = dataclasses.field(default_factory=list)
    allowed_statuses: set[int] = dataclasses.field(default_factory=set)

    def allow_status(self, status: int) -> None:
        self.allowed_statuses.add(status)

    def record(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = str(message.location.get("url", ""))
        # Chromium asks for /favicon.ico on its own; a 404 there says nothing about the pages.
        if url.endswith("/favicon.ico"):
            return
        if any(f"status of {status}" in message.text for status in self.allowed_statuses):
            return
        self.errors.append(f"{message.text} ({url})")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    # Lets the page fixture know whether the test failed, to keep a screenshot of the moment.
    report = yield
    setattr(item, f"report_{call.when}", report)
    return report


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # A failure picture from an earlier run would pass for one of this run.
    for stale in SCREENSHOTS.glob("failed-*.png"):
        stale.unlink()
    return SCREENSHOTS


@pytest.fixture(scope="session")
def profile_dir() -> Iterator[Path]:
    # tempfile, not pytest's tmp dirs: a fresh, empty profile nobody else resets.
    path = Path(tempfile.mkdtemp(prefix="worker-chromium-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
async def browser(profile_dir: Path) -> AsyncIterator[BrowserContext]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: run .ci/setup-browser (or set CHROMIUM_PATH)")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            profile_dir,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        context.set_default_timeout(10_000)
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
async def console() -> Console:
    return Console()


@pytest.fixture
async def page(
    browser: BrowserContext, console: Console, screenshots: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Page]:
    # Cookies ignore the port: a session from the previous test's daemon must not leak in.
    await browser.clear_cookies()
    tab = await browser.new_page()
    tab.on("console", console.record)
    tab.on("pageerror", lambda error: console.errors.append(f"page error: {error}"))
    # A payload or error rendered unescaped would run script; alert() would open a dialog.
    tab.on("dialog", lambda dialog: console.errors.append(f"dialog opened: {dialog.message}"))
    try:
        yield tab
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            await tab.screenshot(
                path=screenshots / f"failed-{request.node.name}.png", full_page=True
            )
    finally:
        await tab.close()
    assert console.errors == [], "the browser reported errors"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_daemon(dsn: str, port: int, password: str, log: Path) -> subprocess.Popen[bytes]:
    env = worker_env(
        dsn,
        WORKER_HANDLER_MODULES="handlers.bundled,tests.support.handlers",
        WORKER_POLL_INTERVAL_S="0.2",
        WORKER_HTTP_PORT=str(port),
        WORKER_DASHBOARD_USERS=f"{USER}:{password}",
    )
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=sink
        )


def stop_daemon(daemon: subprocess.Popen[bytes], log: Path) -> int:
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(timeout=30)
    # Shown by pytest only when the test failed.
    print(f"--- worker log (exit {code}) ---\n{log.read_text(errors='replace')}")
    return code


@pytest.fixture
async def dashboard(db_dsn: str, tmp_path: Path) -> AsyncIterator[Dashboard]:
    """`python -m worker` with the dashboard on, on this test's database; SIGTERM at the end."""
    port = free_port()
    password = secrets.token_urlsafe(18)
    log = tmp_path / "worker.log"
    daemon = start_daemon(db_dsn, port, password, log)
    running = Dashboard(f"http://127.0.0.1:{port}", USER, password, log)
    try:
        await wait_until_serving(running, daemon, timeout_s=30)
        yield running
    finally:
        code = stop_daemon(daemon, log)
    assert code == 0, f"the worker exited {code} after SIGTERM"


async def wait_until_serving(
    running: Dashboard, daemon: subprocess.Popen[bytes], timeout_s: float
) -> None:
    """Until /health answers and the login page is there (the dashboard is mounted)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=running.base_url, timeout=5) as client:
        while True:
            assert daemon.poll() is None, running.log.read_text(errors="replace")
            try:
                health = await client.get("/health")
                if health.status_code == 200:
                    login = await client.get("/dashboard/login")
                    assert login.status_code == 200, (
                        f"the dashboard is not mounted: GET /dashboard/login -> {login.status_code}"
                    )
                    return
            except httpx.TransportError:
                pass  # not listening yet
            assert time.monotonic() < deadline, f"no /health after {timeout_s}s"
            await asyncio.sleep(0.05)
