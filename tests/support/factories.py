"""Insert and read rows in any state, straight through SQL (tests only)."""

from __future__ import annotations

from typing import Any

import asyncpg

from worker import store
from worker.admin.store import Actor, AdminStore

ACTOR = Actor("test-admin")
"""Who the tests' admin changes are recorded as."""

_COLUMNS = {
    "queue",
    "task_type",
    "payload",
    "status",
    "priority",
    "run_at",
    "attempts",
    "max_attempts",
    "last_error",
    "dedupe_key",
    "locked_by",
    "lease_expires_at",
    "run_type",
    "schedule_name",
    "requested_by",
    "created_at",
    "started_at",
    "finished_at",
    "result",
    "concurrency_key",
    "limit_key",
    "trace_context",
    "on_parent_failure",
    "has_children",
}


async def make_job(db: store.Store, **fields: Any) -> int:
    """make_job(db, status="running", lease_expires_at=past) -> id."""
    fields.setdefault("task_type", "noop")
    unknown = set(fields) - _COLUMNS
    assert not unknown, f"unknown job_queue columns {unknown}"
    names = list(fields)
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    sql = f"INSERT INTO job_queue ({', '.join(names)}) VALUES ({placeholders}) RETURNING id"
    row = await db.pool.fetchrow(sql, *fields.values())
    assert row is not None
    return int(row["id"])


async def job(db: store.Store, job_id: int) -> asyncpg.Record:
    row = await db.pool.fetchrow("SELECT * FROM job_queue WHERE id = $1", job_id)
    assert row is not None, f"job {job_id} not found"
    return row


async def runs(db: store.Store, job_id: int) -> list[asyncpg.Record]:
    return await db.pool.fetch("SELECT * FROM job_runs WHERE job_id = $1 ORDER BY id", job_id)


async def schedules(db: store.Store) -> list[asyncpg.Record]:
    """job_schedules_list(), as the admin surfaces read it."""
    async with AdminStore(db.pool).reads() as reads:
        return await reads.schedules()


async def schedule_runs(db: store.Store, name: str, limit: int) -> list[asyncpg.Record]:
    async with AdminStore(db.pool).reads() as reads:
        return await reads.schedule_runs(name, limit)


async def paused_queues(db: store.Store) -> list[asyncpg.Record]:
    async with AdminStore(db.pool).reads() as reads:
        return await reads.paused_queues()
