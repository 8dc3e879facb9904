"""After a database restart (here: every backend of the pool terminated), the handlers'
pool hands out only live connections: a handler's first statement does not fail on a
connection the server has already closed."""

from __future__ import annotations

import asyncio

import psycopg

from worker import store

POOL_SIZE = 4


async def _fill(pool: store.HandlerPool) -> set[int]:
    """Open every connection of the pool at once; their backend pids."""

    async def pid() -> int:
        async with pool.acquire() as conn:
            await asyncio.sleep(0.05)  # hold it, so that each call opens its own
            return int(await conn.fetchval("SELECT pg_backend_pid()"))

    return set(await asyncio.gather(*(pid() for _ in range(POOL_SIZE))))


def _terminate_blocking(dsn: str, pids: set[int]) -> None:
    """Terminate the backends and wait until they are gone, without letting the event loop
    run: the pool's connections cannot read the server's goodbye before they are used."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))


async def test_a_terminated_connection_is_replaced_before_a_handler_gets_it(db_dsn: str) -> None:
    db = await store.connect(db_dsn, max_size=POOL_SIZE)
    try:
        pool = db.handler_pool
        assert isinstance(pool, store.HandlerPool)
        for _ in range(3):
            before = await _fill(pool)
            assert len(before) == POOL_SIZE
            _terminate_blocking(db_dsn, before)
            # Every way a handler uses the pool, right away.
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT 1") == 1
            conn = await pool.acquire()
            try:
                assert await conn.fetchval("SELECT 2") == 2
            finally:
                await pool.release(conn)
            assert await pool.fetchval("SELECT 3") == 3
            assert await pool.execute("SELECT 4") == "SELECT 1"
            after = await _fill(pool)
            assert not after & before
    finally:
        await db.close()
