"""Worker presence (worker/presence.py) against a real database: a worker's row from start
to clean shutdown, what a beat records, and the rows of workers that vanished."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

import anyio
import pytest

from tests.support import factories
from worker import __version__, presence, store


class Counting:
    """An observer that counts jobs in flight, as Telemetry does."""

    def __init__(self, in_flight: int) -> None:
        self.in_flight = in_flight


async def rows(db: store.Store) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.pool.fetch("SELECT * FROM job_workers ORDER BY id")]


@pytest.mark.parametrize("name", sorted(presence.Q))
async def test_every_presence_query_prepares(db: store.Store, name: str) -> None:
    async with db.pool.acquire() as conn:
        await conn.prepare(presence.Q[name])


async def test_join_beat_and_leave(db: store.Store, make_settings: Any) -> None:
    settings = make_settings(worker_id="w-a", queues=["default", "mail"], concurrency=8)
    here = presence.Presence(db, settings, Counting(3))
    await here.join()
    [row] = await rows(db)
    assert (row["id"], row["host"], row["pid"], row["version"]) == (
        "w-a",
        socket.gethostname(),
        os.getpid(),
        __version__,
    )
    assert (row["queues"], row["concurrency"], row["in_flight"], row["running"]) == (
        ["default", "mail"],
        8,
        0,
        [],
    )
    mine = [
        await factories.make_job(db, status="running", task_type="sync", locked_by="w-a")
        for _ in range(7)
    ]
    await factories.make_job(db, status="running", task_type="mail", locked_by="w-a")
    await factories.make_job(db, status="running", task_type="sync", locked_by="elsewhere")
    await factories.make_job(db, status="pending", task_type="sync", locked_by="w-a")
    await here.beat()
    [row] = await rows(db)
    assert row["in_flight"] == 3  # the observer's count
    assert row["running"] == [
        {"task_type": "sync", "jobs": 7, "job_ids": mine[:5]},
        {"task_type": "mail", "jobs": 1, "job_ids": [mine[-1] + 1]},
    ]
    assert row["last_seen_at"] >= row["started_at"]
    # Without a counting observer, the beat counts the worker's running rows.
    await presence.Presence(db, settings).beat()
    assert (await rows(db))[0]["in_flight"] == 8
    await here.leave()
    assert await rows(db) == []


async def test_a_removed_row_is_announced_again_and_a_new_process_takes_over_its_id(
    db: store.Store, make_settings: Any
) -> None:
    settings = make_settings(worker_id="w-b")
    here = presence.Presence(db, settings)
    await here.join()
    await db.pool.execute("DELETE FROM job_workers")
    await here.beat()
    assert [r["id"] for r in await rows(db)] == ["w-b"]
    # A later process with the same WORKER_ID replaces the row; the old one's beats and
    # its leave no longer touch it.
    await db.pool.execute("UPDATE job_workers SET pid = pid + 1, in_flight = 42")
    assert await db.pool.fetchval(presence.Q["presence_beat"], "w-b", 1, os.getpid()) is None
    await here.leave()
    [row] = await rows(db)
    assert (row["pid"], row["in_flight"]) == (os.getpid() + 1, 42)


async def test_rows_silent_for_a_day_go_when_a_worker_starts(
    db: store.Store, make_settings: Any
) -> None:
    for worker_id, silent in [
        ("dead-long-ago", timedelta(hours=25)),
        ("stale-now", timedelta(minutes=1)),
    ]:
        await db.pool.execute(
            "INSERT INTO job_workers (id, host, pid, version, heartbeat_s, queues, concurrency,"
            " started_at, last_seen_at) VALUES ($1, 'h', 1, 'v', 5, '{default}', 4,"
            " now() - $2::interval, now() - $2::interval)",
            worker_id,
            silent,
        )
    await presence.Presence(db, make_settings(worker_id="fresh")).join()
    assert [r["id"] for r in await rows(db)] == ["fresh", "stale-now"]


async def test_run_announces_beats_and_leaves_when_cancelled(
    db: store.Store, make_settings: Any
) -> None:
    here = presence.Presence(db, make_settings(worker_id="w-run"), heartbeat_s=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(here.run)
        with anyio.fail_after(10):
            while True:  # two beats at least: last_seen_at moves past started_at
                row = await db.pool.fetchrow(
                    "SELECT last_seen_at > started_at AS beating FROM job_workers"
                )
                if row is not None and row["beating"]:
                    break
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert await rows(db) == []
