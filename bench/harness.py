"""Driving both queues the way their users run them, for the scripts of issue 14.

The scripts (defaults.py, backlog.py, limits.py, processes.py) share this: the server
(`--dsn` or an embedded PostgreSQL, as run.py), a fresh database per run, schema setup,
plain-SQL enqueueing, the contenders as subprocesses (`python -m worker`, `pgq run`), CPU
read from /proc through psutil, interleaved rounds, median tables and the raw JSON under
bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import functools
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
RUN_TIMEOUT_S = 300.0
POLL_S = 0.005


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------- server


def add_common_arguments(parser: argparse.ArgumentParser, *, rounds: int = 3) -> None:
    parser.add_argument(
        "--dsn",
        default=os.environ.get("BENCH_DATABASE_URL"),
        help="URL of an admin database on the server, whose user may CREATE DATABASE "
        "(default: $BENCH_DATABASE_URL, else a throwaway embedded PostgreSQL)",
    )
    parser.add_argument(
        "--rounds", type=int, default=rounds, help="interleaved rounds; medians are reported"
    )


def server_dsn(args: argparse.Namespace) -> str:
    if args.dsn:
        if urlsplit(args.dsn).scheme not in ("postgres", "postgresql"):
            raise SystemExit("--dsn must be a URL: postgresql://user@host:port/db")
        return str(args.dsn)
    from worker import embedded  # noqa: PLC0415 - only needed without --dsn

    base = Path(tempfile.mkdtemp(prefix="worker-bench-pg-"))
    log(f"no --dsn: using an embedded PostgreSQL in {base}")
    return embedded.start(base, cleanup_mode="delete")


async def server_info(dsn: str) -> dict[str, Any]:
    """Version and durability settings; refuses a server that does not make commits durable."""
    connection = await asyncpg.connect(dsn)
    try:
        info: dict[str, Any] = {
            name: await connection.fetchval(f"SHOW {name}")
            for name in ("server_version", "fsync", "synchronous_commit", "full_page_writes")
        }
    finally:
        await connection.close()
    off = [name for name in ("fsync", "synchronous_commit") if info[name] == "off"]
    if off:
        raise SystemExit(f"refusing to benchmark: {', '.join(off)} = off on this server")
    info["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    info["cpu_count"] = os.cpu_count()
    return info


def database_dsn(dsn: str, database: str) -> str:
    """The same server (and options, such as a socket directory), another database."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def tcp_address(dsn: str) -> tuple[str, int]:
    parts = urlsplit(dsn)
    if not parts.hostname or "host=" in parts.query:
        raise SystemExit("the RTT proxy needs a TCP --dsn (postgresql://user@host:port/db)")
    return parts.hostname, parts.port or 5432


def via(dsn: str, port: int) -> str:
    """`dsn` pointed at a proxy listening on 127.0.0.1:`port`."""
    parts = urlsplit(dsn)
    user = f"{parts.username}@" if parts.username else ""
    if parts.password:
        user = f"{parts.username}:{parts.password}@"
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


@asynccontextmanager
async def fresh_database(admin_dsn: str) -> AsyncIterator[tuple[str, str]]:
    """A new database `bench_<random>` (after a CHECKPOINT), dropped afterwards."""
    name = f"bench_{secrets.token_hex(6)}"
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f"CREATE DATABASE {name}")
        with suppress(asyncpg.PostgresError):  # needs pg_checkpoint or superuser
            await connection.execute("CHECKPOINT")
    finally:
        await connection.close()
    try:
        yield name, database_dsn(admin_dsn, name)
    finally:
        connection = await asyncpg.connect(admin_dsn)
        try:
            await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await connection.close()


# ------------------------------------------------------------------- schemas and jobs


async def migrate_worker(dsn: str) -> None:
    from worker import migrations, store  # noqa: PLC0415 - the worker's own migrator

    db = await store.connect(dsn, max_size=2)
    try:
        await migrations.migrate(db)
    finally:
        await db.close()


async def install_pgqueuer(dsn: str) -> None:
    from pgqueuer.db import AsyncpgDriver  # noqa: PLC0415
    from pgqueuer.queries import Queries  # noqa: PLC0415

    connection = await asyncpg.connect(dsn)
    try:
        await Queries(AsyncpgDriver(connection)).install()
    finally:
        await connection.close()


async def enqueue_worker(
    connection: asyncpg.Connection,
    n: int,
    *,
    task_type: str = "noop",
    queue: str = "default",
    run_at: str = "now()",
    first: int = 0,
) -> None:
    """n jobs with one plain INSERT, as an app's SQL would (no ANALYZE afterwards)."""
    if run_at not in ("now()", "now() + interval '1 day'"):
        raise ValueError(f"run_at {run_at!r}")
    await connection.execute(
        "INSERT INTO job_queue (queue, task_type, payload, run_at) "
        "SELECT $1, $2, jsonb_build_object('i', g), " + run_at + " "
        "FROM generate_series($3::int, $4::int) g",
        queue,
        task_type,
        first,
        first + n - 1,
    )


async def enqueue_pgqueuer(
    connection: asyncpg.Connection, n: int, *, entrypoint: str = "noop", first: int = 0
) -> None:
    await connection.execute(
        "INSERT INTO pgqueuer (priority, entrypoint, payload, status) "
        "SELECT 0, $1, convert_to(g::text, 'UTF8'), 'queued' "
        "FROM generate_series($2::int, $3::int) g",
        entrypoint,
        first,
        first + n - 1,
    )


class ContenderExited(RuntimeError):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"contender exited with {code} before the end")


WORKER_LEFT = (
    "SELECT EXISTS (SELECT 1 FROM job_queue WHERE status IN ('pending', 'running') "
    "AND task_type = $1 AND run_at <= now())"
)
PGQUEUER_LEFT = "SELECT EXISTS (SELECT 1 FROM pgqueuer WHERE entrypoint = $1)"


async def wait_drained(
    connection: asyncpg.Connection,
    query: str,
    *args: Any,
    processes: Sequence[subprocess.Popen[bytes]] = (),
    timeout_s: float = RUN_TIMEOUT_S,
) -> float:
    """Poll until `query` says nothing is left (every outcome committed); perf_counter then."""
    deadline = time.perf_counter() + timeout_s
    while await connection.fetchval(query, *args):
        for proc in processes:
            if proc.poll() is not None:
                raise ContenderExited(proc.returncode)
        if time.perf_counter() > deadline:
            raise TimeoutError(f"not drained after {timeout_s:g} s")
        await asyncio.sleep(POLL_S)
    return time.perf_counter()


# ------------------------------------------------------------------- contenders


@functools.cache
def _compile_sources() -> None:
    """Byte-compile the checkout's packages once, as pip does for an installed one. From an
    editable install under PYTHONDONTWRITEBYTECODE (set on some machines and images) every
    start compiled the worker's modules from source: ~0.12 s of each start-up, which the
    installed pgqueuer never pays."""
    for package in (REPO_DIR / "worker", REPO_DIR / "handlers", BENCH_DIR):
        compileall.compile_dir(package, quiet=1)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell would give: ours without any WORKER_/BENCH_ setting,
    with bench/ importable (the handler modules live there)."""
    _compile_sources()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "BENCH_", "PG"))}
    env.pop("DATABASE_URL", None)
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), str(REPO_DIR)])
    env.update(extra)
    return env


def worker_argv(*extra: str) -> list[str]:
    return [sys.executable, "-m", "worker", *extra]


def worker_env(dsn: str, settings: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=dsn, WORKER_HANDLER_MODULES="user_jobs", **(settings or {}), **extra
    )


def pgqueuer_argv(batch: int | None = None) -> list[str]:
    """`pgq run pgq_jobs:create_pgqueuer`, through pgq_run.py (see there why)."""
    argv = [sys.executable, str(BENCH_DIR / "pgq_run.py"), "pgq_jobs:create_pgqueuer"]
    return argv if batch is None else [*argv, "--batch-size", str(batch)]


def pgqueuer_env(dsn: str, **extra: str) -> dict[str, str]:
    return clean_env(PGDSN=dsn, **extra)


class Running:
    """A contender subprocess: its output goes to a file, as a container's would."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.output = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="bench-out-", suffix=".log", delete=False
        )
        self.started_wall = time.time()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, env=env, cwd=REPO_DIR, stdout=self.output, stderr=subprocess.STDOUT
        )
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        """CPU (user + system) of the process and its children so far."""
        total = 0.0
        with suppress(psutil.Error):
            for proc in [self.ps, *self.ps.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def stop(self, timeout_s: float = 40.0) -> tuple[int | None, str]:
        """SIGTERM, wait, SIGKILL if it must; the exit code and the output's last lines."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.output.close()
        path = Path(self.output.name)
        tail = "\n".join(path.read_text(errors="replace").splitlines()[-8:])
        path.unlink(missing_ok=True)
        return self.proc.returncode, tail


async def backend_cpu_s(connection: asyncpg.Connection, database: str) -> float | None:
    """CPU of the server processes serving `database`, but this connection's (None if the
    server is not on this machine)."""
    pids = await connection.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )
    total = 0.0
    for row in pids:
        try:
            times = psutil.Process(row["pid"]).cpu_times()
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:
            return None
        total += times.user + times.system
    return total


def machine_cpu() -> psutil._common.scputimes:  # type: ignore[name-defined]
    return psutil.cpu_times()


def busy_share(before: Any, after: Any) -> dict[str, float]:
    """Shares of all CPUs' time between two psutil.cpu_times() readings."""
    fields = before._fields
    delta = {f: getattr(after, f) - getattr(before, f) for f in fields}
    total = sum(delta.values()) or 1.0
    idle = delta.get("idle", 0.0) + delta.get("iowait", 0.0)
    return {"idle": round(idle / total, 3), "busy": round(1 - idle / total, 3)}


# ------------------------------------------------------------------- proxy


class Proxy:
    """rtt_proxy.py in its own process, adding `rtt_ms` of round trip towards `dsn`'s server."""

    def __init__(self, dsn: str, rtt_ms: float) -> None:
        host, port = tcp_address(dsn)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(BENCH_DIR / "rtt_proxy.py"),
                f"--target={host}:{port}",
                f"--rtt-ms={rtt_ms:g}",
                "--port=0",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening "):
            self.proc.kill()
            raise RuntimeError(f"rtt_proxy did not start: {line!r}")
        self.port = int(line.split()[1])
        self.dsn = via(dsn, self.port)
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def select1_rtt_ms(dsn: str, samples: int = 300) -> dict[str, float]:
    connection = await asyncpg.connect(dsn)
    try:
        statement = await connection.prepare("SELECT 1")
        for _ in range(20):
            await statement.fetchval()
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            await statement.fetchval()
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await connection.close()
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49], 3), "p95_ms": round(cuts[94], 3)}


async def proxy_cost(admin_dsn: str, rtt_ms: float) -> list[dict[str, Any]]:
    """`SELECT 1` round trips: direct, through the proxy adding nothing, and adding rtt_ms."""
    rows: list[dict[str, Any]] = [{"path": "direct", **await select1_rtt_ms(admin_dsn)}]
    for added in sorted({0.0, rtt_ms}):
        proxy = Proxy(admin_dsn, added)
        try:
            rows.append({"path": f"proxy +{added:g} ms", **await select1_rtt_ms(proxy.dsn)})
        finally:
            proxy.close()
    return rows


# ------------------------------------------------------------------- rounds and reports


def rotated(items: Sequence[Any], by: int) -> list[Any]:
    k = by % len(items) if items else 0
    return [*items[k:], *items[:k]]


def medians(records: Iterable[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per distinct `keys`: the median of every numeric metric over the rounds,
    and each round's value under `<metric>_all`."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(tuple(record.get(k) for k in keys), []).append(record)
    rows = []
    for key, group in groups.items():
        ok = [r for r in group if not r.get("error")]
        row: dict[str, Any] = dict(zip(keys, key, strict=True))
        row["ok"] = f"{len(ok)}/{len(group)}"
        metrics = sorted(
            {
                m
                for r in ok
                for m, v in r.items()
                if m not in keys and isinstance(v, int | float) and m != "round"
            }
        )
        for metric in metrics:
            values = [float(r[metric]) for r in ok if r.get(metric) is not None]
            row[metric] = statistics.median(values) if values else None
            row[f"{metric}_all"] = values
        rows.append(row)
    return rows


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], spread: str = "") -> str:
    """A Markdown table of `columns`; `spread`: a metric whose every round is shown too."""
    headers = [*columns, *(["rounds"] if spread else [])]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [fmt(row.get(c)) for c in columns]
        if spread:
            cells.append(", ".join(fmt(v) for v in row.get(f"{spread}_all", [])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{name}-{stamp}.json"  # runs with the same name do not overwrite
    payload = {
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def parser_for(doc: str) -> argparse.ArgumentParser:
    """A script's argument parser: its docstring's first line as the description, the rest
    after the usage paragraph as the epilog, plus the options every script takes."""
    parser = argparse.ArgumentParser(
        description=doc.split("\n", maxsplit=1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split("\n\n", 2)[2],
    )
    add_common_arguments(parser)
    return parser


def finish(name: str, payload: dict[str, Any], records: Sequence[dict[str, Any]]) -> int:
    """Write the raw results, say where, and the exit code: 1 when any run failed."""
    path = write_results(name, payload)
    print(f"raw results: {path.relative_to(REPO_DIR)}")
    return 1 if any(r.get("error") for r in records) else 0
