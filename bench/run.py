"""Interleaving benchmark runner.

Usage::

    python bench/run.py --dsn postgresql://postgres@127.0.0.1:5432/postgres \
        [--rounds 3] [--n 20000] [--contenders worker,pgqueuer] [--quick]

For every round, scenario and contender configuration (the configuration order
is rotated each round so no contender always runs first), the runner creates a
fresh database ``bench_<random>`` on the server named by ``--dsn``, runs the
contender script against it as a subprocess, parses the last stdout line as
JSON and drops the database again. It prints per-configuration MEDIANS over the
rounds as Markdown tables and writes every raw result to
``bench/results/latest.json``. It refuses to run when the server has ``fsync``
or ``synchronous_commit`` turned off. See bench/README.md for the contract.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_PATH = BENCH_DIR / "results" / "latest.json"
SCENARIOS = ("drain", "pickup", "enqueue")
METRICS = {
    "drain": ("jobs_per_s",),
    "pickup": ("p50_ms", "p95_ms"),
    "enqueue": ("single_jobs_per_s", "batch_jobs_per_s"),
}
CONTENDER_SCRIPTS = {
    "worker": BENCH_DIR / "worker_contender.py",
    "pgqueuer": BENCH_DIR / "pgqueuer_contender.py",
}
# Configurations per contender, as extra command-line flags for its script.
CONTENDER_CONFIGS: dict[str, list[list[str]]] = {
    "worker": [["--batch", "10"], ["--batch", "100"], ["--batch", "1000"]],
    "pgqueuer": [["--batch", "10"], ["--batch", "100"], ["--batch", "1000"]],
}
SERVER_SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes")
CONTENDER_TIMEOUT_S = 300
SUBPROCESS_GRACE_S = 60


@dataclass(frozen=True)
class Contender:
    name: str
    script: Path
    flags: tuple[str, ...]

    @property
    def label(self) -> str:
        return " ".join(self.flags) or "default"


@dataclass
class RunRecord:
    round: int
    scenario: str
    contender: str
    flags: str
    returncode: int | None
    wall_s: float
    result: dict[str, Any] | None = None
    error: str | None = None
    stderr_tail: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    dsn: str
    rounds: int
    n: int
    jobs: int
    spacing_ms: float
    scenarios: tuple[str, ...]


# ------------------------------------------------------------------- server


def log(message: str) -> None:
    print(f"[run] {message}", file=sys.stderr, flush=True)


async def server_info(dsn: str) -> dict[str, str]:
    connection = await asyncpg.connect(dsn)
    try:
        info = {name: await connection.fetchval(f"SHOW {name}") for name in SERVER_SETTINGS}
        info["version"] = await connection.fetchval("SELECT version()")
    finally:
        await connection.close()
    return info


def check_durability(info: dict[str, str]) -> str | None:
    """Return a refusal message if the server does not make commits durable."""
    off = [name for name in ("fsync", "synchronous_commit") if info[name] == "off"]
    if off:
        return f"refusing to benchmark: {', '.join(off)} = off on this server"
    return None


def database_dsn(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit("--dsn must be a URL: postgresql://user@host:port/db")
    return urlunsplit(parts._replace(path=f"/{database}"))


async def admin(dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def create_database(dsn: str) -> str:
    name = f"bench_{secrets.token_hex(6)}"
    await admin(dsn, f"CREATE DATABASE {name}")
    try:  # start every run from a clean checkpoint; skip if not permitted
        await admin(dsn, "CHECKPOINT")
    except asyncpg.PostgresError as exc:
        log(f"CHECKPOINT skipped: {exc}")
    return name


async def drop_database(dsn: str, name: str) -> None:
    await admin(dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# ---------------------------------------------------------------- contenders


def available_contenders(names: list[str]) -> list[Contender]:
    contenders: list[Contender] = []
    for name in names:
        script = CONTENDER_SCRIPTS.get(name)
        if script is None:
            raise SystemExit(f"unknown contender {name!r}; known: {sorted(CONTENDER_SCRIPTS)}")
        if not script.exists():
            print(f"> note: skipping contender `{name}`: {script.name} does not exist yet\n")
            continue
        contenders.extend(Contender(name, script, tuple(f)) for f in CONTENDER_CONFIGS[name])
    return contenders


def contender_argv(contender: Contender, scenario: str, dsn: str, s: Settings) -> list[str]:
    return [
        sys.executable,
        str(contender.script),
        f"--dsn={dsn}",
        f"--scenario={scenario}",
        f"--n={s.n}",
        f"--jobs={s.jobs}",
        f"--spacing-ms={s.spacing_ms:g}",
        *contender.flags,
    ]


def parse_last_json(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    if not lines:
        raise ValueError("no output on stdout")
    result = json.loads(lines[-1])
    if not isinstance(result, dict):
        raise TypeError("last stdout line is not a JSON object")
    return result


def run_contender(argv: list[str]) -> tuple[int | None, str, str]:
    try:
        proc = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            text=True,
            timeout=CONTENDER_TIMEOUT_S + SUBPROCESS_GRACE_S,
            cwd=BENCH_DIR.parent,
        )
    except subprocess.TimeoutExpired as exc:
        return None, str(exc.stdout or ""), str(exc.stderr or "")
    return proc.returncode, proc.stdout, proc.stderr


async def run_one(contender: Contender, scenario: str, round_no: int, s: Settings) -> RunRecord:
    database = await create_database(s.dsn)
    started = time.perf_counter()
    try:
        argv = contender_argv(contender, scenario, database_dsn(s.dsn, database), s)
        code, stdout, stderr = await asyncio.to_thread(run_contender, argv)
    finally:
        wall = time.perf_counter() - started
        await drop_database(s.dsn, database)
    record = RunRecord(round_no, scenario, contender.name, contender.label, code, round(wall, 3))
    record.stderr_tail = stderr.strip().splitlines()[-15:]
    if code != 0:
        record.error = "timed out" if code is None else f"exit code {code}"
        return record
    try:
        record.result = parse_last_json(stdout)
        missing = [m for m in METRICS[scenario] if m not in record.result]
        if missing:
            record.error = f"missing metrics {missing}"
    except (ValueError, TypeError) as exc:
        record.error = f"bad output: {exc}"
    return record


def rotated(items: list[Contender], by: int) -> list[Contender]:
    k = by % len(items)
    return items[k:] + items[:k]


async def run_all(contenders: list[Contender], s: Settings) -> list[RunRecord]:
    records: list[RunRecord] = []
    for round_no in range(1, s.rounds + 1):
        for scenario in s.scenarios:
            for contender in rotated(contenders, round_no - 1):
                log(f"round {round_no} {scenario} {contender.name} {contender.label}")
                record = await run_one(contender, scenario, round_no, s)
                log(f"  -> {record.error or summary_line(record)} ({record.wall_s:.1f}s)")
                records.append(record)
    return records


def summary_line(record: RunRecord) -> str:
    result = record.result or {}
    return ", ".join(f"{m}={result.get(m)}" for m in METRICS[record.scenario])


# ------------------------------------------------------------------- report


def medians(records: list[RunRecord]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for record in records:
        groups.setdefault((record.scenario, record.contender, record.flags), []).append(record)
    rows: list[dict[str, Any]] = []
    for (scenario, contender, flags), group in groups.items():
        ok = [r.result for r in group if r.result is not None and r.error is None]
        row: dict[str, Any] = {
            "scenario": scenario,
            "contender": contender,
            "flags": flags,
            "config": ok[0].get("config", flags) if ok else flags,
            "ok_runs": len(ok),
            "runs": len(group),
        }
        for metric in METRICS[scenario]:
            values = [float(r[metric]) for r in ok]
            row[metric] = statistics.median(values) if values else None
            row[f"{metric}_all"] = values
        rows.append(row)
    return rows


def fmt(value: float | None) -> str:
    if value is None:
        return "FAILED"
    return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"


def markdown(rows: list[dict[str, Any]], s: Settings) -> str:
    titles = {
        "drain": f"drain (n={s.n}), jobs/s, higher is better",
        "pickup": f"pickup ({s.jobs} jobs, {s.spacing_ms:g} ms apart), ms, lower is better",
        "enqueue": f"enqueue (single: n/10, batch: n={s.n}), jobs/s, higher is better",
    }
    out: list[str] = []
    for scenario in s.scenarios:
        metrics = METRICS[scenario]
        out += [f"### {titles[scenario]}", ""]
        out.append("| contender | config | " + " | ".join(metrics) + " | ok/runs | all rounds |")
        out.append("|---" * (len(metrics) + 4) + "|")
        for row in (r for r in rows if r["scenario"] == scenario):
            cells = [fmt(row[m]) for m in metrics]
            spread = "; ".join(
                f"{m}: " + ", ".join(fmt(v) for v in row[f"{m}_all"]) for m in metrics
            )
            out.append(
                f"| {row['contender']} | {row['config']} | "
                + " | ".join(cells)
                + f" | {row['ok_runs']}/{row['runs']} | {spread} |"
            )
        out.append("")
    return "\n".join(out)


def write_results(
    info: dict[str, str],
    s: Settings,
    records: list[RunRecord],
    rows: list[dict[str, Any]],
) -> None:
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "server": info,
        "settings": {k: v for k, v in asdict(s).items() if k != "dsn"},
        "medians": rows,
        "runs": [asdict(r) for r in records],
    }
    RESULTS_PATH.write_text(json.dumps(payload, indent=2) + "\n")


# --------------------------------------------------------------------- main


def embedded_server() -> str:
    """A throwaway server, so the benchmark also runs on a machine with no PostgreSQL."""
    from worker import embedded  # noqa: PLC0415 - only needed without --dsn

    base = Path(tempfile.mkdtemp(prefix="worker-bench-pg-"))
    print(f"> no --dsn: using an embedded PostgreSQL in {base}\n")
    return embedded.start(base, cleanup_mode="delete")


def parse_args() -> tuple[Settings, list[str]]:
    parser = argparse.ArgumentParser(description="Interleaving job-queue benchmark runner.")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("BENCH_DATABASE_URL"),
        help="URL of an admin database on the server (default: $BENCH_DATABASE_URL, else a "
        "throwaway embedded PostgreSQL, fsync and synchronous_commit on)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=200, help="pickup jobs per run")
    parser.add_argument("--spacing-ms", type=float, default=20.0)
    parser.add_argument("--contenders", default="worker,pgqueuer")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="1 round, n=2000, 50 pickup jobs")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.n, args.jobs = 1, 2000, 50
    scenarios = tuple(x for x in args.scenarios.split(",") if x)
    if not set(scenarios) <= set(SCENARIOS) or args.rounds < 1 or args.n < 1:
        parser.error(f"bad --scenarios/--rounds/--n; scenarios are {','.join(SCENARIOS)}")
    dsn = args.dsn or embedded_server()
    settings = Settings(dsn, args.rounds, args.n, args.jobs, args.spacing_ms, scenarios)
    return settings, [x for x in args.contenders.split(",") if x]


async def amain() -> int:
    settings, names = parse_args()
    info = await server_info(settings.dsn)
    print(f"Server: {info['version']}")
    print(
        f"fsync={info['fsync']}, synchronous_commit={info['synchronous_commit']}, "
        f"full_page_writes={info['full_page_writes']}; client CPUs: {os.cpu_count()}\n"
    )
    if refusal := check_durability(info):
        print(refusal)
        return 2
    contenders = available_contenders(names)
    if not contenders:
        print("no contender scripts available")
        return 2
    records = await run_all(contenders, settings)
    rows = medians(records)
    write_results(info, settings, records, rows)
    print(f"Medians over {settings.rounds} round(s):\n")
    print(markdown(rows, settings))
    print(f"Raw results: {RESULTS_PATH.relative_to(BENCH_DIR.parent)}")
    return 1 if any(r.error for r in records) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(amain()))
