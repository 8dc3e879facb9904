"""The HTTP API under load: N concurrent clients enqueue (POST /api/v1/jobs) and read
(GET /api/v1/jobs/{id}) for a while against `python -m worker` with its HTTP port on, while
that worker drains; with --chaos, two more workers are SIGKILLed and restarted every few
seconds. Reports p50/p99 latency per route, answers by status, and the ledger: every
enqueued job succeeded, with exactly one succeeded run (tests.support.ledger handlers).

    python bench/api_load.py --dsn postgresql://postgres@127.0.0.1:5432/postgres \\
        --clients 200 --seconds 60 --chaos

It creates a database of its own on that server and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import summarize  # noqa: E402
from tests.support import pg  # noqa: E402
from worker import migrations, store  # noqa: E402

LEDGER = """
CREATE TABLE soak_ledger (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, job_id bigint NOT NULL,
  attempt integer NOT NULL, worker_id text NOT NULL, pid integer NOT NULL,
  at timestamptz NOT NULL DEFAULT clock_timestamp())
"""


def worker_env(dsn: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    env.update(
        DATABASE_URL=dsn,
        PYTHONPATH=str(ROOT),
        WORKER_LOG_FORMAT="json",
        WORKER_LOG_LEVEL="warning",
        WORKER_SCHEDULER="off",
        WORKER_HANDLER_MODULES="tests.support.ledger",
        WORKER_LEASE_S="5",
        WORKER_RESCUE_INTERVAL_S="1",
        WORKER_RETRY_BASE_S="0.2",
        **extra,
    )
    return env


def spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=sink
        )


async def wait_healthy(client: httpx.AsyncClient, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("the worker's HTTP server never answered /health")


class Tally:
    def __init__(self) -> None:
        self.latency_ms: dict[str, list[float]] = collections.defaultdict(list)
        self.statuses: collections.Counter[str] = collections.Counter()
        self.enqueued: list[int] = []

    def note(self, route: str, started: float, status: str) -> None:
        self.latency_ms[route].append((time.perf_counter() - started) * 1000)
        self.statuses[f"{route} {status}"] += 1


async def client_loop(http: httpx.AsyncClient, stop_at: float, tally: Tally, n0: int) -> None:
    n = n0
    while time.monotonic() < stop_at:
        n += 1
        started = time.perf_counter()
        try:
            answer = await http.post(
                "/api/v1/jobs",
                json={"task_type": "soak_ledger", "payload": {"n": n, "work_ms": 2}},
            )
        except httpx.HTTPError as exc:
            tally.note("POST /jobs", started, type(exc).__name__)
            continue
        tally.note("POST /jobs", started, str(answer.status_code))
        if answer.status_code != 201:
            continue
        job_id = int(answer.json()["job_id"])
        tally.enqueued.append(job_id)
        started = time.perf_counter()
        try:
            read = await http.get(f"/api/v1/jobs/{job_id}")
            tally.note("GET /jobs/{id}", started, str(read.status_code))
        except httpx.HTTPError as exc:
            tally.note("GET /jobs/{id}", started, type(exc).__name__)


async def chaos(env: dict[str, str], logs: Path, stop_at: float, kills: list[int]) -> None:
    """Two extra workers (no HTTP port), one of them SIGKILLed and restarted every 2-5 s."""
    rng = random.Random(7)
    extra = [spawn(env, logs / f"chaos{i}.log") for i in range(2)]
    try:
        while time.monotonic() < stop_at:
            await asyncio.sleep(rng.uniform(2, 5))
            i = rng.randrange(2)
            extra[i].send_signal(signal.SIGKILL)
            extra[i].wait()
            kills.append(i)
            extra[i] = spawn(env, logs / f"chaos{i}.log")
    finally:
        for process in extra:
            process.send_signal(signal.SIGTERM)
        for process in extra:
            process.wait(timeout=60)


async def ledger(dsn: str, ids: list[int], timeout_s: float) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            open_jobs = await conn.fetchval(
                "SELECT count(*) FROM job_queue WHERE status IN ('pending', 'running')"
            )
            if open_jobs == 0:
                break
            await asyncio.sleep(0.5)
        rows = await conn.fetch(
            """
            SELECT q.id, q.status,
                   (SELECT count(*) FROM job_runs r
                     WHERE r.job_id = q.id AND r.status = 'succeeded') AS succeeded_runs,
                   (SELECT count(*) FROM soak_ledger l WHERE l.job_id = q.id) AS executions
              FROM job_queue q WHERE q.id = ANY($1::bigint[])
            """,
            ids,
        )
    finally:
        await conn.close()
    found = {r["id"]: r for r in rows}
    return {
        "enqueued": len(ids),
        "missing_rows": len(set(ids) - set(found)),
        "not_succeeded": sum(1 for r in rows if r["status"] != "succeeded"),
        "succeeded_runs_not_1": sum(1 for r in rows if r["succeeded_runs"] != 1),
        "executed_more_than_once": sum(1 for r in rows if r["executions"] > 1),
        "never_executed": sum(1 for r in rows if r["executions"] == 0),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"), required=False)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--chaos", action="store_true")
    parser.add_argument("--logs", type=Path, default=ROOT / "bench" / "results" / "api_load")
    args = parser.parse_args()
    if not args.dsn:
        raise SystemExit("--dsn (or DATABASE_URL) of a server where a database may be created")
    args.logs.mkdir(parents=True, exist_ok=True)
    name = pg.unique_name("apiload")
    dsn = await pg.create_database(args.dsn, name)
    try:
        db = await store.connect(dsn)
        await migrations.migrate(db)
        await db.pool.execute(LEDGER)
        await db.close()
        token = secrets.token_urlsafe(32)
        tokens = {"load": {"token": token, "scopes": ["read", "enqueue"]}}
        env = worker_env(dsn)
        main_env = {
            **env,
            "WORKER_HTTP_PORT": str(args.port),
            "WORKER_API_TOKENS": json.dumps(tokens),
        }
        server = spawn(main_env, args.logs / "api_worker.log")
        limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{args.port}",
            headers={"Authorization": f"Bearer {token}"},
            limits=limits,
            timeout=30,
        ) as http:
            await wait_healthy(http)
            tally, kills = Tally(), []
            stop_at = time.monotonic() + args.seconds
            tasks = [client_loop(http, stop_at, tally, i * 1_000_000) for i in range(args.clients)]
            if args.chaos:
                tasks.append(chaos(env, args.logs, stop_at, kills))
            t0 = time.monotonic()
            await asyncio.gather(*tasks)
            elapsed_s = time.monotonic() - t0
        checked = await ledger(dsn, tally.enqueued, timeout_s=120)
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(timeout=60)
        report = {
            "clients": args.clients,
            "seconds": round(elapsed_s, 1),
            "chaos_kills": len(kills),
            "requests_per_s": round(sum(tally.statuses.values()) / elapsed_s, 1),
            "latency": {
                route: summarize(v) | {"p99_ms": round(sorted(v)[int(len(v) * 0.99)], 3)}
                for route, v in tally.latency_ms.items()
            },
            "answers": dict(sorted(tally.statuses.items())),
            "ledger": checked,
            "api_worker_exit_code": exit_code,
        }
        print(json.dumps(report, indent=2))
    finally:
        await pg.drop_database(args.dsn, name)


if __name__ == "__main__":
    asyncio.run(main())
