"""The trading app's jobs: process pending trade orders, and hourly OHLC price snapshots.

`process_orders` takes the oldest pending order of the app's `queue` table (or the table
HANDLERS_TABLES names for it) that no other worker holds (FOR UPDATE SKIP LOCKED), applies
it at the ticker's current price and marks it `completed`, or `failed` with a reason, all
in one transaction; then the next, until none is left. An order is applied at most once:
only a `pending` order is taken, and taking it locks it. Several workers may run it at
once; one user's orders apply one at a time (an advisory lock), so balances and holdings
never race. Inserting orders enqueues one coalesced job (a trigger of the reference
schema, in place of the app's database webhook), so orders are processed within
milliseconds.

`snapshot_prices` writes one price_history row per ticker and UTC hour from price_ticks
(upsert on (ticker, bucket_start), written only when something changed): a re-run for the
same hour changes nothing; late ticks correct the bucket when the hour is run again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from pydantic import AwareDatetime, Field, field_validator

from handlers import payloads, sqlnames, tables
from handlers import settings as handler_settings
from worker import errors, queries
from worker.registry import JobContext, JobResult, handler

Q = queries.load("handlers", "queries.sql")

INSUFFICIENT_FUNDS = "insufficient funds"
INSUFFICIENT_HOLDINGS = "insufficient holdings"
UNKNOWN_TICKER = "unknown ticker"
NO_PRICE = "ticker has no price"
TOO_SMALL = "amount buys less than the smallest quantity"


class ProcessOrdersPayload(payloads.Payload):
    max_orders: int | None = Field(default=None, ge=1, le=10_000_000)
    """Most orders this run (default HANDLERS_ORDERS_MAX_PER_RUN); the rest stay pending."""


@dataclass(frozen=True, slots=True)
class Applied:
    order_id: int
    status: str
    reason: str | None


@handler("process_orders", payload=ProcessOrdersPayload, max_attempts=5, timeout_s=300)
async def process_orders(ctx: JobContext, payload: ProcessOrdersPayload) -> JobResult:
    """Process pending trade orders, oldest first, until none is left."""
    limit = payload.max_orders or handler_settings.get().orders_max_per_run
    applied: list[Applied] = []
    while len(applied) < limit:
        outcome = await _process_next(ctx.pool)
        if outcome is None:
            break
        applied.append(outcome)
    completed = sum(1 for a in applied if a.status == "completed")
    reasons = Counter(a.reason for a in applied if a.reason)
    failed = len(applied) - completed
    note = f"processed {len(applied)} order(s): {completed} completed, {failed} failed"
    if reasons:
        note += " (" + ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items())) + ")"
    notes = [note]
    if len(applied) >= limit:
        notes.append(f"stopped at the limit of {limit} orders; the rest stay pending")
    return JobResult(
        rows_affected=len(applied),
        notes=notes,
        data={"completed": completed, "failed": dict(reasons)},
    )


async def _process_next(pool: asyncpg.Pool) -> Applied | None:
    """Apply the oldest pending order in one transaction; None when none is left."""
    take, complete, fail = [
        await tables.statement(pool, name)
        for name in ("next_pending_order", "complete_order", "fail_order")
    ]
    async with pool.acquire() as db, db.transaction():
        order = await db.fetchrow(take)
        if order is None:
            return None
        await db.execute(Q["lock_trader"], order["user_id"])
        reason, price, quantity = await _apply(db, order)
        if reason is None:
            await db.execute(complete, order["id"], price, quantity)
            return Applied(order["id"], "completed", None)
        await db.execute(fail, order["id"], reason)
        return Applied(order["id"], "failed", reason)


async def _apply(
    db: sqlnames.Connection, order: Any
) -> tuple[str | None, Decimal | None, Decimal | None]:
    """Move money and holdings for one order; (failure reason or None, price, quantity).
    Runs inside the order's transaction: a failure reason means nothing was moved."""
    user, ticker, amount = order["user_id"], order["ticker"], order["amount_usdp"]
    quote = await db.fetchrow(Q["quote_order"], ticker, amount)
    if quote is None:
        return UNKNOWN_TICKER, None, None
    price, quantity = quote["price"], quote["quantity"]
    if price is None:
        return NO_PRICE, None, None
    if quantity <= 0:
        return TOO_SMALL, price, None
    if order["order_type"] == "buy":
        if await db.fetchval(Q["debit_wallet"], user, amount) is None:
            return INSUFFICIENT_FUNDS, price, None
        await db.execute(Q["credit_holding"], user, ticker, quantity)
    else:
        if await db.fetchval(Q["debit_holding"], user, ticker, quantity) is None:
            return INSUFFICIENT_HOLDINGS, price, None
        await db.execute(Q["credit_wallet"], user, amount)
    return None, price, quantity


class SnapshotPricesPayload(payloads.Payload):
    hour: AwareDatetime | None = None
    """The first UTC hour to snapshot, on the hour (default: the previous full hour)."""
    hours: int = Field(default=1, ge=1, le=24 * 31)
    """How many consecutive hours from `hour` (a catch-up after downtime)."""

    @field_validator("hour")
    @classmethod
    def _on_the_hour(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        utc = value.astimezone(UTC)
        if (utc.minute, utc.second, utc.microsecond) != (0, 0, 0):
            raise ValueError("must be on a UTC hour, e.g. 2026-01-31T13:00:00Z")
        return utc


@handler("snapshot_prices", payload=SnapshotPricesPayload, max_attempts=5, timeout_s=300)
async def snapshot_prices(ctx: JobContext, payload: SnapshotPricesPayload) -> JobResult:
    """Record OHLC per ticker for the past hour (or the hours asked for)."""
    current_hour: datetime = await ctx.pool.fetchval(Q["current_utc_hour"])
    start: datetime = payload.hour or (current_hour - timedelta(hours=payload.hours))
    end = start + timedelta(hours=payload.hours)
    if end > current_hour:
        raise errors.PermanentJobError(
            f"snapshot_prices: hours up to {end.isoformat()} are not over yet "
            f"(the current hour started {current_hour.isoformat()})"
        )
    row = await ctx.pool.fetchrow(Q["snapshot_prices"], start, end)
    assert row is not None
    buckets, written = int(row["buckets"]), int(row["written"])
    span = f"{start.isoformat()} + {payload.hours}h"
    return JobResult(
        rows_affected=written,
        notes=[f"{span}: {buckets} ticker-hour(s) with ticks, {written} new or changed"],
        data={"start": start.isoformat(), "hours": payload.hours, "buckets": buckets},
    )
