"""Fault injection against a real server: each database fault class, injected into a
running `python -m worker` while jobs flow and a schedule comes due.

The worker logs in as a role of its own, with the least-privilege grants
(job_queue_grant_worker), so every fault is aimed at its sessions only: role settings
(statement_timeout, lock_timeout, default_transaction_read_only), statement triggers that
raise a chosen SQLSTATE for that role (serialization failure, deadlock, out of memory, disk
full, a pooler's prepared-statement errors), a table lock held by the test, its backends
terminated, its connections refused, a column type changed under its prepared statements,
a grant revoked. After each: the process is alive, it recovered, every job succeeded (the
ledger shows each ran), and the schedule's ticks were each enqueued once, none skipped.
A fatal fault (permission revoked, table missing) stops it with one line and exit code 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from tests.support import roles
from tests.support.ledger import LEDGER_TASK, TICK_TASK
from tests.support.proc import worker_env
from worker import store

LEASE_S = 2.0
ENV = {
    "WORKER_HANDLER_MODULES": "tests.support.ledger",
    "WORKER_LEASE_S": str(LEASE_S),
    "WORKER_RESCUE_INTERVAL_S": "0.3",
    "WORKER_POLL_INTERVAL_S": "0.2",
    "WORKER_CONCURRENCY": "8",
    "WORKER_SCHEDULER": "true",
    "WORKER_SCHEDULER_INTERVAL_S": "0.3",
    "WORKER_SHUTDOWN_GRACE_S": "5",
}
# Loops whose episode may still be open when the test stops the worker: they only act when
# there is something to do (a beat needs running jobs) or every few seconds.
SLOW_LOOPS = {"heartbeat", "presence", "pruner"}

SETUP_SQL = """
CREATE TABLE soak_ledger (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job_id     bigint      NOT NULL,
  attempt    integer     NOT NULL,
  worker_id  text        NOT NULL,
  pid        integer     NOT NULL,
  at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE fault_switch (code text NOT NULL, message text NOT NULL);
CREATE FUNCTION fault_inject() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  f record;
BEGIN
  IF session_user::text LIKE 'fw\\_%' THEN
    SELECT code, message INTO f FROM fault_switch LIMIT 1;
    IF FOUND THEN
      RAISE EXCEPTION USING ERRCODE = f.code, MESSAGE = f.message;
    END IF;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER fault_inject BEFORE INSERT OR UPDATE ON job_queue
  FOR EACH STATEMENT EXECUTE FUNCTION fault_inject();
CREATE TRIGGER fault_inject BEFORE INSERT ON job_runs
  FOR EACH STATEMENT EXECUTE FUNCTION fault_inject();
CREATE TRIGGER fault_inject BEFORE UPDATE ON job_schedules
  FOR EACH STATEMENT EXECUTE FUNCTION fault_inject();
CREATE TRIGGER fault_inject BEFORE INSERT OR UPDATE ON job_workers
  FOR EACH STATEMENT EXECUTE FUNCTION fault_inject();
"""


def with_user(dsn: str, user: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Rig:
    """The test database, the worker's role, the worker process and the job producer."""

    db: store.Store
    db_dsn: str
    role: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    schedules: dict[str, datetime] = field(default_factory=dict)
    """Schedule name -> the last tick it owed nothing for, when created."""
    _producing: asyncio.Task[None] | None = None

    @property
    def worker_dsn(self) -> str:
        return with_user(self.db_dsn, self.role)

    async def sql(self, statement: str, *args: Any) -> Any:
        return await self.db.pool.fetchval(statement, *args)

    def start(self, **extra: str) -> None:
        env = worker_env(self.worker_dsn, **{**ENV, **extra})
        with self.log_path.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=sink
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    def faults(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == "database_fault"]

    async def produce(self, every_s: float = 0.25, batch: int = 6) -> None:
        """Jobs flow: a batch every `every_s` until the test stops it."""

        async def loop() -> None:
            n = 0
            while True:
                payloads = [{"n": n + i, "work_ms": 150} for i in range(batch)]
                n += batch
                await self.db.enqueue_many(LEDGER_TASK, payloads)
                await asyncio.sleep(every_s)

        self._producing = asyncio.create_task(loop())

    async def stop_producing(self) -> None:
        if self._producing is not None:
            self._producing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producing

    async def add_overdue_schedule(self) -> None:
        """A schedule created 3.5 minutes ago that every minute enqueues a tick job, with
        every missed tick backfilled: it comes due while the fault holds."""
        name = f"fault_tick_{len(self.schedules)}"
        self.schedules[name] = await self.sql(
            "INSERT INTO job_schedules (name, cron, task_type, payload, missed, last_tick_at)"
            " VALUES ($1, '* * * * *', $2, '{\"work_ms\": 1}', 'all',"
            " now() - interval '210 seconds') RETURNING last_tick_at",
            name,
            TICK_TASK,
        )

    async def wait_until(self, sql: str, timeout_s: float = 45.0) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            assert self.alive(), self.tail()
            with contextlib.suppress(*store.CONNECTION_ERRORS):
                if await self.sql(sql):
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {sql!r}\n{self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text()[-3000:]

    async def flowing(self) -> None:
        """Wait for jobs to be succeeding and the worker to be listening."""
        await self.wait_until("SELECT count(*) >= 6 FROM job_queue WHERE status = 'succeeded'")

    async def drained(self) -> None:
        """The fault is gone: every job and every due tick has succeeded."""
        await self.stop_producing()
        await self.wait_until("SELECT count(*) = 0 FROM job_queue WHERE status <> 'succeeded'")
        for name in self.schedules:
            await self.wait_until(
                f"SELECT count(*) >= 3 FROM job_queue WHERE schedule_name = '{name}'"
                " AND status = 'succeeded'"
            )
        # No tick may come due between the last check and the stop (a pass that read the
        # schedule before this loses its compare-and-set on the revision).
        await self.db.pool.execute("UPDATE job_schedules SET active = false")
        await self.wait_until("SELECT count(*) = 0 FROM job_queue WHERE status <> 'succeeded'")

    async def check_ledger(self) -> None:
        """No job lost: each succeeded and its handler ran (a ledger row per execution).
        No tick doubled or skipped: one job per minute since each schedule was created."""
        lost = await self.db.pool.fetch(
            "SELECT j.id, j.status, j.attempts, j.task_type,"
            " (SELECT array_agg(r.status || '/' || r.reason) FROM job_runs r"
            "   WHERE r.job_id = j.id) AS runs"
            " FROM job_queue j WHERE j.status <> 'succeeded'"
            " OR NOT EXISTS (SELECT 1 FROM soak_ledger l WHERE l.job_id = j.id)"
        )
        assert not lost, [dict(row) for row in lost]
        for name, since in self.schedules.items():
            # The tick is in the dedupe key (run_at moves when a job is retried).
            keys = await self.db.pool.fetch(
                "SELECT dedupe_key FROM job_queue WHERE schedule_name = $1", name
            )
            prefix = f"schedule:{name}:"
            ticks = sorted(
                datetime.strptime(
                    row["dedupe_key"].removeprefix(prefix), "%Y-%m-%dT%H:%M:%SZ"
                ).replace(tzinfo=UTC)
                for row in keys
            )
            assert len(ticks) == len(set(ticks)), f"a tick of {name} was enqueued twice"
            first = since.replace(second=0, microsecond=0) + timedelta(minutes=1)
            assert ticks == [first + timedelta(minutes=i) for i in range(len(ticks))], ticks

    def check_recovered(self, sqlstates: set[str], loops: set[str]) -> list[dict[str, Any]]:
        """Each fault was logged once per episode, naming the loop and SQLSTATE, never as
        unexpected; `loops` each met one of `sqlstates` (`a|b`: a or b); every episode of
        a loop that acts often ended with a database_recovered line."""
        lines = self.lines()
        seen = [line for line in lines if line.get("event") == "database_fault"]
        recovered = [line for line in lines if line.get("event") == "database_recovered"]
        assert not [line for line in seen if line["kind"] != "transient"], seen
        hit = {
            line["loop"]
            for line in seen + recovered
            if line.get("sqlstate") in sqlstates or line.get("last_sqlstate") in sqlstates
        }
        missed = [loop for loop in loops if not set(loop.split("|")) & hit]
        assert not missed, (missed, seen)
        for loop in {line["loop"] for line in seen} - SLOW_LOOPS:
            opened = sum(line["loop"] == loop for line in seen)
            closed = sum(line["loop"] == loop for line in recovered)
            assert opened == closed, (loop, opened, closed)
        assert "Traceback" not in self.log_path.read_text()
        print("\nfault episodes:", sorted({(x["loop"], x["sqlstate"]) for x in seen}))
        print("recovered:", [(x["loop"], x["last_sqlstate"], x["down_s"]) for x in recovered])
        return seen

    async def finish(self, sqlstates: set[str], loops: set[str]) -> list[dict[str, Any]]:
        await self.drained()
        assert self.alive(), self.tail()
        assert self.stop() == 0
        await self.check_ledger()
        return self.check_recovered(sqlstates, loops)

    async def terminate_backends(self) -> int:
        return int(
            await self.sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE usename = $1 AND datname = current_database()",
                self.role,
            )
        )


@pytest.fixture
async def rig(db: store.Store, db_dsn: str, server_dsn: str, tmp_path: Path) -> AsyncIterator[Rig]:
    role = await roles.create_login(server_dsn, "fw")
    await db.pool.execute(SETUP_SQL)
    await db.pool.execute("SELECT job_queue_grant_worker($1)", role)
    await db.pool.execute(f'GRANT SELECT, INSERT ON soak_ledger, fault_switch TO "{role}"')
    test = Rig(db, db_dsn, role, tmp_path / "worker.log")
    try:
        yield test
    finally:
        await test.stop_producing()
        if test.alive():
            assert test.process is not None
            test.process.kill()
            test.process.wait(timeout=10)
        await db.pool.execute(f"ALTER DATABASE {urlsplit(db_dsn).path[1:]} CONNECTION LIMIT -1")
        await test.terminate_backends()
        await roles.drop_role(server_dsn, db_dsn, role)


@contextlib.asynccontextmanager
async def table_locked(rig: Rig, table: str = "job_queue") -> AsyncIterator[asyncpg.Connection]:
    """The test holds ACCESS EXCLUSIVE on `table` (a migration, an admin's transaction)."""
    conn = await asyncpg.connect(rig.db_dsn)
    try:
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            yield conn
    finally:
        await conn.close()


async def during(
    rig: Rig, seconds: float, poke: Callable[[], Awaitable[object]] | None = None
) -> None:
    """Let the fault hold for `seconds` while jobs keep coming (and `poke` runs each 0.5s)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        assert rig.alive(), rig.tail()
        if poke is not None:
            await poke()
        await asyncio.sleep(0.5)


# -- timeouts: a lock the test holds on job_queue ------------------------------------------


@pytest.mark.parametrize(
    ("setting", "sqlstate"),
    [("statement_timeout", "57014"), ("lock_timeout", "55P03")],
)
async def test_timeouts_behind_a_held_lock(rig: Rig, setting: str, sqlstate: str) -> None:
    await rig.sql(f"ALTER ROLE \"{rig.role}\" SET {setting} = '300ms'")
    port = free_port()
    rig.start(WORKER_HTTP_PORT=str(port), WORKER_METRICS_PUBLIC="true")
    await rig.produce()
    await rig.flowing()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        async with table_locked(rig):
            await rig.add_overdue_schedule()
            # The scheduler's insert waits behind the lock too; a scrape still answers.
            await during(rig, 2.5)
            scrape = await http.get("/metrics")
            assert scrape.status_code == 200
        await asyncio.sleep(0.5)
        assert (await http.get("/metrics")).status_code == 200
    # While jobs flow the flusher claims with each write; the claimer claims when idle.
    seen = await rig.finish({sqlstate}, {"claimer|flusher", "rescuer", "scheduler", "metrics"})
    # One line per episode, not one per retry (each loop retried several times a second).
    per_loop = {loop: sum(line["loop"] == loop for line in seen) for loop in rig_loops(seen)}
    assert max(per_loop.values()) <= 2, per_loop


def rig_loops(seen: list[dict[str, Any]]) -> set[str]:
    return {line["loop"] for line in seen}


# -- read-only mode (a hosted database whose disk is nearly full) ---------------------------


async def test_read_only_mode_then_back(rig: Rig) -> None:
    rig.start()
    await rig.produce()
    await rig.flowing()
    await rig.sql(f'ALTER ROLE "{rig.role}" SET default_transaction_read_only = on')
    await rig.terminate_backends()  # sessions take role settings when they open
    await rig.add_overdue_schedule()
    await during(rig, 2.5)
    # Switched back without touching the worker's sessions: sessions opened meanwhile are
    # still read-only, and the worker must replace them itself.
    await rig.sql(f'ALTER ROLE "{rig.role}" RESET default_transaction_read_only')
    await rig.finish({"25006"}, {"claimer|flusher", "scheduler", "rescuer"})


# -- SQLSTATEs raised by a trigger on the worker's tables ----------------------------------

RAISED = [
    ("40001", "could not serialize access due to concurrent update"),
    ("40P01", "deadlock detected"),
    ("53200", "out of memory"),
    ("53100", "could not extend file: No space left on device"),
    ("42P05", 'prepared statement "__asyncpg_stmt_1__" already exists'),
    ("26000", 'prepared statement "__asyncpg_stmt_1__" does not exist'),
    ("0A000", "cached plan must not change result type"),
]


async def test_raised_sqlstates_one_after_another(rig: Rig) -> None:
    rig.start()
    await rig.produce()
    await rig.flowing()
    for code, message in RAISED:
        await rig.db.pool.execute("INSERT INTO fault_switch VALUES ($1, $2)", code, message)
        await rig.add_overdue_schedule()
        await during(rig, 1.5)
        await rig.db.pool.execute("DELETE FROM fault_switch")
        # Cleared: the schedule's ticks come through and the queue moves again.
        name = list(rig.schedules)[-1]
        await rig.wait_until(f"SELECT count(*) >= 3 FROM job_queue WHERE schedule_name = '{name}'")
    await rig.finish({code for code, _ in RAISED}, {"claimer|flusher", "rescuer", "scheduler"})
    seen = rig.faults()
    for code, _ in RAISED:
        assert any(line["sqlstate"] == code for line in seen), code


# -- a migration by another replica changes a result type under prepared statements ----------


async def test_column_type_changed_under_prepared_statements(rig: Rig) -> None:
    rig.start()
    await rig.produce()
    await rig.flowing()
    await rig.add_overdue_schedule()  # fired: the schedules trigger's plan is cached
    name = list(rig.schedules)[-1]
    await rig.wait_until(f"SELECT count(*) >= 3 FROM job_queue WHERE schedule_name = '{name}'")
    # The claim returns priority; the schedules trigger reads missed: both change type.
    # asyncpg re-prepares a statement the server calls stale outside a transaction, so the
    # claim sees nothing; the trigger's cached PL/pgSQL plan fails (42804) in every session
    # that ran it, until the session is replaced.
    await rig.sql("ALTER TABLE job_queue ALTER COLUMN priority TYPE integer")
    await rig.sql("ALTER TABLE job_schedules ALTER COLUMN missed TYPE varchar(16)")
    await rig.db.expire_sessions()  # the test's own sessions ran that trigger too
    await rig.add_overdue_schedule()
    await during(rig, 1.5)
    # Whether a session of the worker that cached the trigger's plan runs the next fire is
    # up to its pool: if one does, its fault must be transient and recover (check_recovered).
    await rig.finish({"42804", "0A000"}, set())


# -- connection loss mid-statement -------------------------------------------------------------


async def test_backends_terminated_mid_statement(rig: Rig) -> None:
    rig.start()
    await rig.produce()
    await rig.flowing()
    await rig.add_overdue_schedule()
    for _ in range(3):
        async with table_locked(rig):
            await asyncio.sleep(0.4)  # the worker's statements queue up behind the lock
            assert await rig.terminate_backends() > 0
        await asyncio.sleep(0.5)
    await rig.finish({"connection", "57P01", "08003", "08006"}, {"claimer|flusher", "listener"})


# -- the database away for longer than the lease ---------------------------------------------


async def test_connections_refused_for_longer_than_the_lease(rig: Rig) -> None:
    rig.start()
    await rig.produce()
    await rig.flowing()
    database = urlsplit(rig.db_dsn).path[1:]
    await rig.sql(f"ALTER DATABASE {database} CONNECTION LIMIT 0")
    await rig.terminate_backends()
    await rig.add_overdue_schedule()
    await during(rig, 2 * LEASE_S + 1, rig.terminate_backends)
    await rig.sql(f"ALTER DATABASE {database} CONNECTION LIMIT -1")
    await rig.finish(
        {"53300", "57P01", "connection", "08003", "08006"},
        {"claimer|flusher", "listener", "rescuer", "scheduler"},
    )


# -- faults only the operator can mend ---------------------------------------------------------


async def wait_exit(rig: Rig, timeout_s: float = 30.0) -> int:
    assert rig.process is not None
    try:
        return await asyncio.to_thread(rig.process.wait, timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker should have stopped\n{rig.tail()}") from None


@pytest.mark.parametrize(
    ("fault_sql", "sqlstate", "loop"),
    [
        (
            'REVOKE UPDATE ON job_queue FROM "{role}"',
            "42501",
            ("claimer", "flusher", "rescuer", "heartbeat"),
        ),
        ("ALTER TABLE job_schedules RENAME TO job_schedules_gone", "42P01", ("scheduler",)),
    ],
)
async def test_a_fatal_fault_stops_with_one_line_and_exit_3(
    rig: Rig, fault_sql: str, sqlstate: str, loop: tuple[str, ...]
) -> None:
    rig.start()
    await rig.produce()
    await rig.flowing()
    await rig.sql(fault_sql.format(role=rig.role))
    assert await wait_exit(rig) == 3
    text = rig.log_path.read_text()
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text[-2000:]
    assert sqlstate in errors[0], errors
    assert errors[0].split(":")[1].strip() in loop, errors
    assert "Traceback" not in text


# -- a cron-style `--once` run -------------------------------------------------------------


def run_once(rig: Rig) -> subprocess.CompletedProcess[str]:
    env = worker_env(rig.worker_dsn, **ENV)
    return subprocess.run(
        [sys.executable, "-m", "worker", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_once_logs_a_fault_in_its_first_steps_and_still_drains(rig: Rig) -> None:
    await rig.db.enqueue_many(LEDGER_TASK, [{"n": i, "work_ms": 1} for i in range(5)])
    await rig.add_overdue_schedule()
    await rig.db.pool.execute("INSERT INTO fault_switch VALUES ('40001', 'serialization')")
    for table in ("job_queue", "job_runs"):  # the fault hits the scheduler's write only
        await rig.db.pool.execute(f"ALTER TABLE {table} DISABLE TRIGGER fault_inject")
    done = await asyncio.to_thread(run_once, rig)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    faults = [json.loads(line) for line in done.stderr.splitlines() if "database_fault" in line]
    assert [(f["loop"], f["sqlstate"]) for f in faults] == [("scheduler", "40001")]
    assert json.loads(done.stdout)["succeeded"] == 5  # the drain ran all the same
    # Cleared: the next run enqueues every tick the first one could not.
    await rig.db.pool.execute("DELETE FROM fault_switch")
    again = await asyncio.to_thread(run_once, rig)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(json.loads(again.stdout)["ticks"]) >= 3
    await rig.check_ledger()


async def test_once_stops_with_one_line_and_exit_3_on_a_fatal_fault(rig: Rig) -> None:
    await rig.sql(f'REVOKE UPDATE ON job_schedules FROM "{rig.role}"')
    await rig.add_overdue_schedule()
    done = await asyncio.to_thread(run_once, rig)
    assert done.returncode == 3, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "42501" in errors[0] and "scheduler" in errors[0], errors
    assert "Traceback" not in done.stderr
