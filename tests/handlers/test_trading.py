"""process_orders (with its insert trigger) and snapshot_prices."""

from __future__ import annotations

import asyncio
import random
import uuid
from decimal import Decimal
from typing import Any

from tests.handlers.conftest import Call, RunJob, drain, registry_of
from worker import dispatcher, store

ANN = uuid.UUID("00000000-0000-4000-8000-000000000a00")
BEN = uuid.UUID("00000000-0000-4000-8000-000000000b00")


async def market(db: store.Store) -> None:
    await db.pool.execute(
        "INSERT INTO tickers (symbol, current_price) VALUES ('ACME', 10), ('GLOBEX', 4), "
        "('NOPRICE', NULL)"
    )
    await db.pool.execute(
        "INSERT INTO wallets (user_id, balance_usdp) VALUES ($1, 100), ($2, 0)", ANN, BEN
    )
    await db.pool.execute(
        "INSERT INTO holdings (user_id, ticker, quantity) VALUES ($1, 'GLOBEX', 5)", BEN
    )


async def order(db: store.Store, user: uuid.UUID, ticker: str, kind: str, amount: Any) -> int:
    return int(
        await db.pool.fetchval(
            "INSERT INTO queue (user_id, ticker, order_type, amount_usdp) "
            "VALUES ($1, $2, $3, $4) RETURNING id",
            user,
            ticker,
            kind,
            Decimal(str(amount)),
        )
    )


async def orders(db: store.Store) -> list[tuple[Any, ...]]:
    rows = await db.pool.fetch(
        "SELECT status, failure_reason, executed_quantity FROM queue ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def books(db: store.Store) -> tuple[dict[Any, Decimal], dict[tuple[Any, str], Decimal]]:
    wallets = await db.pool.fetch("SELECT user_id, balance_usdp FROM wallets")
    holdings = await db.pool.fetch("SELECT user_id, ticker, quantity FROM holdings")
    return (
        {r["user_id"]: r["balance_usdp"] for r in wallets},
        {(r["user_id"], r["ticker"]): r["quantity"] for r in holdings},
    )


async def process_order_jobs(db: store.Store) -> list[tuple[str, str]]:
    rows = await db.pool.fetch(
        "SELECT status, dedupe_key FROM job_queue WHERE task_type = 'process_orders' ORDER BY id"
    )
    return [(r["status"], r["dedupe_key"]) for r in rows]


# -- process_orders -------------------------------------------------------------------------


async def test_inserted_orders_enqueue_one_job_that_processes_them_oldest_first(
    db: store.Store, make_settings: Any
) -> None:
    await market(db)
    await order(db, ANN, "ACME", "buy", 80)  # completed: 8 ACME
    await order(db, ANN, "GLOBEX", "buy", 40)  # insufficient funds: 20 left
    await order(db, BEN, "GLOBEX", "sell", 12)  # completed: 3 GLOBEX sold
    await order(db, BEN, "GLOBEX", "sell", 12)  # insufficient holdings: 2 left
    await order(db, BEN, "NOPE", "buy", 1)
    await order(db, BEN, "NOPRICE", "buy", 1)
    assert await process_order_jobs(db) == [("pending", "process_orders:after:0")]

    summary = await drain(db, make_settings(), "process_orders")
    assert (summary.succeeded, summary.failed) == (1, 0)
    [result] = summary.results
    assert result["rows_affected"] == 6
    assert result["notes"] == [
        "processed 6 order(s): 2 completed, 4 failed (insufficient funds: 1, insufficient "
        "holdings: 1, ticker has no price: 1, unknown ticker: 1)"
    ]
    assert await orders(db) == [
        ("completed", None, Decimal("8.000000000000")),
        ("failed", "insufficient funds", None),
        ("completed", None, Decimal("3.000000000000")),
        ("failed", "insufficient holdings", None),
        ("failed", "unknown ticker", None),
        ("failed", "ticker has no price", None),
    ]
    wallets, holdings = await books(db)
    assert wallets == {ANN: Decimal("20.00000000"), BEN: Decimal("12.00000000")}
    assert holdings == {(ANN, "ACME"): Decimal("8"), (BEN, "GLOBEX"): Decimal("2")}


async def test_rerun_changes_nothing(db: store.Store, call: Call) -> None:
    await market(db)
    await order(db, ANN, "ACME", "buy", 50)
    await call("process_orders")
    before = (await orders(db), await books(db))
    again = await call("process_orders")
    assert (again.rows_affected, again.notes) == (
        0,
        ["processed 0 order(s): 0 completed, 0 failed"],
    )
    assert (await orders(db), await books(db)) == before


async def test_trigger_coalesces_and_queues_a_follow_up_behind_a_running_job(
    db: store.Store,
) -> None:
    await market(db)
    for _ in range(3):
        await order(db, ANN, "ACME", "buy", 1)
    await db.pool.execute(  # several rows in one statement: still the same job
        "INSERT INTO queue (user_id, ticker, order_type, amount_usdp) "
        "VALUES ($1, 'ACME', 'buy', 1), ($1, 'ACME', 'buy', 1)",
        ANN,
    )
    assert await process_order_jobs(db) == [("pending", "process_orders:after:0")]
    # A worker takes it; it may have made its last "anything left?" check already, so the
    # next order needs a follow-up job, and further orders share that follow-up.
    running = await db.pool.fetchval(
        "UPDATE job_queue SET status = 'running', attempts = 1 RETURNING id"
    )
    await order(db, ANN, "ACME", "buy", 1)
    await order(db, ANN, "ACME", "buy", 1)
    assert await process_order_jobs(db) == [
        ("running", "process_orders:after:0"),
        ("pending", f"process_orders:after:{running}"),
    ]
    # Orders inserted as already processed (imports) enqueue nothing.
    await db.pool.execute("UPDATE job_queue SET status = 'succeeded'")
    await db.pool.execute(
        "INSERT INTO queue (user_id, ticker, order_type, amount_usdp, status) "
        "VALUES ($1, 'ACME', 'buy', 1, 'completed')",
        ANN,
    )
    assert [s for s, _ in await process_order_jobs(db)] == ["succeeded", "succeeded"]


async def test_the_coalesced_job_cannot_be_claimed_before_the_order_commits(
    db: store.Store, db_dsn: str
) -> None:
    await market(db)
    await order(db, ANN, "ACME", "buy", 1)  # the job now exists, committed and pending
    other = await store.connect(db_dsn)
    try:
        async with db.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await conn.execute(
                "INSERT INTO queue (user_id, ticker, order_type, amount_usdp) "
                "VALUES ($1, 'ACME', 'buy', 2)",
                ANN,
            )
            spec = store.ClaimSpec(["default"], 10, ["process_orders"], [5], lease_s=30)
            assert await other.claim(spec, worker_id="w") == []  # held until the order is visible
            await tx.commit()
        assert len(await other.claim(spec, worker_id="w")) == 1
    finally:
        await other.close()


async def test_failure_midway_leaves_applied_orders_applied_and_the_rest_pending(
    db: store.Store, run_job: RunJob
) -> None:
    await market(db)
    await db.pool.execute("INSERT INTO tickers (symbol, current_price) VALUES ('POISON', 1)")
    await db.pool.execute(
        """
        CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.ticker = 'POISON' AND NEW.status = 'completed' THEN
            RAISE EXCEPTION 'disk on fire';
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER poison BEFORE UPDATE ON queue FOR EACH ROW EXECUTE FUNCTION poison();
        """
    )
    await order(db, ANN, "ACME", "buy", 10)
    await order(db, ANN, "POISON", "buy", 10)
    await order(db, ANN, "ACME", "buy", 10)
    await db.pool.execute("DELETE FROM job_queue")
    ran = await run_job("process_orders")
    assert ran.status == "failed"
    assert ran.error is not None and "disk on fire" in ran.error
    assert [o[0] for o in await orders(db)] == ["completed", "pending", "pending"]
    wallets, holdings = await books(db)
    assert wallets[ANN] == Decimal("90") and holdings == {
        (ANN, "ACME"): Decimal("1"),
        (BEN, "GLOBEX"): Decimal("5"),
    }
    await db.pool.execute("DROP TRIGGER poison ON queue")
    again = await run_job("process_orders")
    assert (again.status, again.last_run["rows_affected"]) == ("succeeded", 2)
    wallets, holdings = await books(db)
    assert wallets[ANN] == Decimal("70")
    assert holdings[(ANN, "ACME")] == Decimal("2") and holdings[(ANN, "POISON")] == Decimal("10")


async def test_max_orders_and_bad_input(db: store.Store, call: Call, run_job: RunJob) -> None:
    await market(db)
    for _ in range(3):
        await order(db, ANN, "ACME", "buy", 1)
    limited = await call("process_orders", {"max_orders": 2})
    assert limited.rows_affected == 2
    assert limited.notes[1] == "stopped at the limit of 2 orders; the rest stay pending"
    assert [o[0] for o in await orders(db)] == ["completed", "completed", "pending"]
    bad = await run_job("process_orders", {"max_orders": 0})
    assert bad.status == "failed"
    assert (
        bad.error is not None
        and "max_orders: Input should be greater than or equal to 1" in bad.error
    )


async def test_two_workers_racing_apply_each_order_exactly_once(
    db: store.Store, db_dsn: str, make_settings: Any
) -> None:
    users = [uuid.UUID(int=i + 1) for i in range(6)]
    await db.pool.execute("INSERT INTO tickers (symbol, current_price) VALUES ('ACME', 3)")
    await db.pool.executemany(
        "INSERT INTO wallets (user_id, balance_usdp) VALUES ($1, 500)", [(u,) for u in users]
    )
    await db.pool.executemany(
        "INSERT INTO holdings (user_id, ticker, quantity) VALUES ($1, 'ACME', 20)",
        [(u,) for u in users],
    )
    # Every status change is recorded once per order: a second application would violate
    # the primary key and fail its job.
    await db.pool.execute(
        """
        CREATE TABLE applied (order_id bigint PRIMARY KEY);
        CREATE FUNCTION record_applied() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO applied VALUES (NEW.id); RETURN NEW; END $$;
        CREATE TRIGGER record_applied AFTER UPDATE OF status ON queue
          FOR EACH ROW WHEN (OLD.status = 'pending') EXECUTE FUNCTION record_applied();
        """
    )
    rng = random.Random(7)
    rows = [
        (rng.choice(users), rng.choice(["buy", "sell"]), Decimal(rng.randint(1, 60)))
        for _ in range(300)
    ]
    await db.pool.executemany(
        "INSERT INTO queue (user_id, ticker, order_type, amount_usdp) VALUES ($1, 'ACME', $2, $3)",
        rows,
    )
    await db.enqueue("process_orders", {}, dedupe_key="second-worker")
    other = await store.connect(db_dsn, max_size=6)
    try:
        settings = make_settings(concurrency=1, claim_batch=1)
        workers = [
            dispatcher.Dispatcher(conn, registry_of("process_orders"), settings, once=True)
            for conn in (db, other)
        ]
        summaries = await asyncio.wait_for(asyncio.gather(*(w.run() for w in workers)), 60)
    finally:
        await other.close()
    assert sum(s.failed for s in summaries) == 0
    assert sum(r["rows_affected"] for s in summaries for r in s.results) == 300
    assert await db.pool.fetchval("SELECT count(*) FROM applied") == 300
    assert await db.pool.fetchval("SELECT count(*) FROM queue WHERE status = 'pending'") == 0
    # The books balance: every user's money and shares moved by exactly their completed orders.
    done = await db.pool.fetch(
        "SELECT user_id, order_type, amount_usdp, executed_quantity FROM queue "
        "WHERE status = 'completed'"
    )
    wallets, holdings = await books(db)
    for user in users:
        mine = [r for r in done if r["user_id"] == user]
        spent = sum((r["amount_usdp"] for r in mine if r["order_type"] == "buy"), Decimal(0))
        earned = sum((r["amount_usdp"] for r in mine if r["order_type"] == "sell"), Decimal(0))
        bought = sum((r["executed_quantity"] for r in mine if r["order_type"] == "buy"), Decimal(0))
        sold = sum((r["executed_quantity"] for r in mine if r["order_type"] == "sell"), Decimal(0))
        assert wallets[user] == 500 - spent + earned
        assert holdings[(user, "ACME")] == 20 + bought - sold


# -- snapshot_prices ------------------------------------------------------------------------

HOUR = "2026-01-01T10:00:00+00:00"


async def ticks(db: store.Store, rows: list[tuple[str, float, str]]) -> None:
    await db.pool.executemany(
        "INSERT INTO price_ticks (ticker, price, recorded_at) "
        "VALUES ($1, $2, $3::text::timestamptz)",
        [(t, Decimal(str(p)), at) for t, p, at in rows],
    )


async def history(db: store.Store) -> list[tuple[Any, ...]]:
    rows = await db.pool.fetch(
        "SELECT ticker, to_char(bucket_start AT TIME ZONE 'UTC', 'HH24:MI') AS hour, "
        "open::float, high::float, low::float, close::float, samples "
        "FROM price_history ORDER BY ticker, bucket_start"
    )
    return [tuple(r) for r in rows]


SOME_TICKS = [
    ("ACME", 10.0, "2026-01-01T10:05:00Z"),
    ("ACME", 12.0, "2026-01-01T10:20:00Z"),
    ("ACME", 9.0, "2026-01-01T10:40:00Z"),
    ("ACME", 11.0, "2026-01-01T10:59:59Z"),
    ("ACME", 99.0, "2026-01-01T11:00:00Z"),  # the next hour
    ("GLOBEX", 4.0, "2026-01-01T10:30:00Z"),
]


async def test_snapshot_writes_one_ohlc_row_per_ticker_hour(
    db: store.Store, run_job: RunJob
) -> None:
    await ticks(db, SOME_TICKS)
    ran = await run_job("snapshot_prices", {"hour": HOUR})
    assert ran.status == "succeeded", ran.error
    assert ran.last_run["rows_affected"] == 2
    assert ran.last_run["notes"] == (
        "2026-01-01T10:00:00+00:00 + 1h: 2 ticker-hour(s) with ticks, 2 new or changed"
    )
    assert await history(db) == [
        ("ACME", "10:00", 10.0, 12.0, 9.0, 11.0, 4),
        ("GLOBEX", "10:00", 4.0, 4.0, 4.0, 4.0, 1),
    ]


async def test_snapshot_rerun_changes_nothing_and_late_ticks_correct_the_hour(
    db: store.Store, call: Call
) -> None:
    await ticks(db, SOME_TICKS)
    await call("snapshot_prices", {"hour": HOUR, "hours": 2})
    before = await db.pool.fetch("SELECT * FROM price_history ORDER BY ticker, bucket_start")
    again = await call("snapshot_prices", {"hour": HOUR, "hours": 2})
    assert again.rows_affected == 0
    assert (
        await db.pool.fetch("SELECT * FROM price_history ORDER BY ticker, bucket_start") == before
    )
    await ticks(db, [("GLOBEX", 5.5, "2026-01-01T10:45:00Z")])
    late = await call("snapshot_prices", {"hour": HOUR})
    assert late.rows_affected == 1
    assert ("GLOBEX", "10:00", 4.0, 5.5, 4.0, 5.5, 2) in await history(db)


async def test_snapshot_defaults_to_the_previous_utc_hour(db: store.Store, call: Call) -> None:
    await db.pool.execute(
        "INSERT INTO price_ticks (ticker, price, recorded_at) VALUES "
        "('ACME', 1, date_trunc('hour', now(), 'UTC') - interval '30 minutes'), "
        "('ACME', 2, date_trunc('hour', now(), 'UTC') - interval '90 minutes')"
    )
    result = await call("snapshot_prices")
    assert result.rows_affected == 1
    bucket = await db.pool.fetchval(
        "SELECT bucket_start = date_trunc('hour', now(), 'UTC') - interval '1 hour' "
        "FROM price_history"
    )
    assert bucket is True


async def test_snapshot_failure_midway_writes_nothing(db: store.Store, run_job: RunJob) -> None:
    await ticks(db, [*SOME_TICKS, ("ZZZ", 1.0, "2026-01-01T10:10:00Z")])
    await db.pool.execute(
        """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.ticker = 'ZZZ' THEN RAISE EXCEPTION 'refused %', NEW.ticker; END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON price_history FOR EACH ROW EXECUTE FUNCTION refuse();
        """
    )
    ran = await run_job("snapshot_prices", {"hour": HOUR})
    assert ran.status == "failed"
    assert ran.error is not None and "refused ZZZ" in ran.error
    assert await history(db) == []
    await db.pool.execute("DROP TRIGGER refuse ON price_history")
    again = await run_job("snapshot_prices", {"hour": HOUR})
    assert again.last_run["rows_affected"] == 3


async def test_snapshot_bad_input(run_job: RunJob) -> None:
    off = await run_job("snapshot_prices", {"hour": "2026-01-01T10:30:00Z"})
    assert off.error is not None and "hour: Value error, must be on a UTC hour" in off.error
    naive = await run_job("snapshot_prices", {"hour": "2026-01-01T10:00:00"})
    assert naive.error is not None and "hour: Input should have timezone info" in naive.error
    future = await run_job("snapshot_prices", {"hour": "2999-01-01T10:00:00Z"})
    assert future.status == "failed"
    assert future.error is not None and "are not over yet" in future.error
