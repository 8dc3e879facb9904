"""HANDLERS_TABLES: an app's own tables under its own names, resolved by PostgreSQL, and the
one function that puts the resolved names into statements."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from handlers import settings as handler_settings
from handlers import tables
from tests.handlers.conftest import Call, RunJob
from worker import errors, store

USER = uuid.UUID(int=7)


# -- fill: the only code that puts names into statements -------------------------------------

QUEUE = tables.Table("queue", "app.orders", {"id": "order_id", "date": '"createdAt"'})


def test_fill_puts_in_the_resolved_names_and_nothing_else() -> None:
    template = (
        "SELECT o.{queue.id}, '{}'::jsonb, '{\"a\": 1}'::jsonb FROM {queue} o "
        "ORDER BY o.{queue.date}"
    )
    assert tables.fill(template, {"queue": QUEUE}) == (
        "SELECT o.order_id, '{}'::jsonb, '{\"a\": 1}'::jsonb FROM app.orders o "
        'ORDER BY o."createdAt"'
    )
    assert tables.tables_in("{b.x} {a} {b}") == ["b", "a"]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("SELECT * FROM {notifications}", r"no resolved table for \{notifications\}"),
        ("SELECT {queue.status} FROM {queue}", r"table queue has no column placeholder"),
    ],
)
def test_fill_refuses_what_was_not_resolved(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tables.fill(template, {"queue": QUEUE})


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tables_value", "message"),
    [
        ({"orders": {"table": "x"}}, "unknown table 'orders' (tables that can be mapped: queue,"),
        (
            {"queue": {"columns": {"created_at": "x"}}},
            "queue.columns: unknown column(s) created_at",
        ),
        ({"queue": {"columns": {"date": "processed_at"}}}, "processed_at named for two columns"),
        ({"queue": {"table": "orders; DROP TABLE x"}}, "String should match pattern"),
        ({"queue": {"columns": {"date": 'a"b'}}}, "String should match pattern"),
        ({"queue": {"schema": "app"}}, "Extra inputs are not permitted"),
    ],
)
def test_a_mapping_is_checked_at_load(tables_value: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.ConfigError) as refused:
        handler_settings.load(tables=tables_value)
    assert str(refused.value).startswith("HANDLERS_TABLES: ")
    assert message in str(refused.value)


def test_the_mapping_is_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "HANDLERS_TABLES",
        '{"queue": {"table": "public.orders", "columns": {"date": "created_at"}}}',
    )
    conf = handler_settings.load()
    assert conf.tables["queue"].table == "public.orders"
    assert conf.tables["queue"].columns == {"date": "created_at"}


# -- an app's own orders table --------------------------------------------------------------

APP_ORDERS = """
CREATE SCHEMA app;
CREATE TABLE app.orders (
  order_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id           uuid NOT NULL,
  ticker            text NOT NULL,
  order_type        text NOT NULL,
  amount_usdp       numeric NOT NULL,
  status            text NOT NULL DEFAULT 'pending',
  "createdAt"       timestamptz NOT NULL DEFAULT now(),
  failure_reason    text,
  executed_price    numeric,
  executed_quantity numeric,
  processed_at      timestamptz
);
INSERT INTO tickers (symbol, current_price) VALUES ('ACME', 10);
INSERT INTO wallets (user_id, balance_usdp) VALUES ('00000000-0000-0000-0000-000000000007', 100);
"""

ORDERS_MAP = {
    "queue": {
        "table": "app.orders",
        "columns": {"id": "order_id", "date": "createdAt"},
    }
}


async def test_process_orders_works_on_the_apps_own_table(
    db: store.Store, call: Call, hsettings: Any
) -> None:
    await db.pool.execute(APP_ORDERS)
    hsettings(tables=ORDERS_MAP)
    await db.pool.executemany(
        'INSERT INTO app.orders (user_id, ticker, order_type, amount_usdp, "createdAt")'
        " VALUES ($1, $2, 'buy', $3, now() - $4 * interval '1 minute')",
        [(USER, "ACME", Decimal(30), 1), (USER, "NOPE", Decimal(5), 2), (USER, "ACME", 90, 0)],
    )
    await db.pool.execute(  # a reference-set order: not this app's, never touched
        "INSERT INTO queue (user_id, ticker, order_type, amount_usdp)"
        " VALUES ($1, 'ACME', 'buy', 1)",
        USER,
    )
    result = await call("process_orders")
    assert result.rows_affected == 3
    rows = await db.pool.fetch(
        'SELECT ticker, status, failure_reason FROM app.orders ORDER BY "createdAt"'
    )
    assert [tuple(r) for r in rows] == [
        ("NOPE", "failed", "unknown ticker"),  # the oldest first, by the mapped column
        ("ACME", "completed", None),
        ("ACME", "failed", "insufficient funds"),
    ]
    assert await db.pool.fetchval("SELECT status FROM queue") == "pending"
    # What ran: the names as PostgreSQL printed them (the schema is not on the search path).
    text = await tables.statement(db.pool, "next_pending_order")
    assert "FROM app.orders o" in text and 'ORDER BY o."createdAt", o.order_id' in text


async def test_the_usage_rollup_works_on_the_apps_own_tables(
    db: store.Store, call: Call, hsettings: Any
) -> None:
    await db.pool.execute(
        """
        CREATE TABLE tts_events (uid uuid, kind text, chars int, at timestamptz);
        CREATE TABLE tts_monthly (uid uuid, month date, chars bigint, touched timestamptz,
                                  UNIQUE (uid, month));
        INSERT INTO tts_events VALUES
          ('00000000-0000-0000-0000-000000000007', 'TTS_REQUEST', 500, '2026-01-31T10:00:00Z'),
          ('00000000-0000-0000-0000-000000000007', 'login', 1, '2026-01-31T11:00:00Z');
        """
    )
    hsettings(
        tables={
            "usage_events": {
                "table": "tts_events",
                "columns": {
                    "user_id": "uid",
                    "event_type": "kind",
                    "characters_processed": "chars",
                    "timestamp": "at",
                },
            },
            "monthly_usage": {
                "table": "tts_monthly",
                "columns": {
                    "user_id": "uid",
                    "month_start_date": "month",
                    "total_characters_processed": "chars",
                    "last_updated": "touched",
                },
            },
        }
    )
    for _ in range(2):
        await call("rollup_usage", {"day": "2026-01-31"})
    assert await db.pool.fetchval("SELECT chars FROM tts_monthly") == 500
    assert await db.pool.fetchval("SELECT count(*) FROM monthly_usage") == 0


async def test_a_missing_table_or_column_fails_the_job_for_good(
    db: store.Store, run_job: RunJob, hsettings: Any
) -> None:
    await db.pool.execute(APP_ORDERS)
    hsettings(tables={"queue": {"table": "app.nothing"}})
    ran = await run_job("process_orders", max_attempts=3)
    assert (ran.status, len(ran.runs)) == ("failed", 1)
    assert ran.error == (
        "PermanentJobError: HANDLERS_TABLES: queue: table 'app.nothing' does not exist in this "
        "database"
    )
    hsettings(tables={"queue": {"table": "app.orders"}})  # its id and date are named otherwise
    ran = await run_job("process_orders")
    assert ran.error == (
        "PermanentJobError: HANDLERS_TABLES: queue: table app.orders has no column(s) id, date; "
        "add them, or map them to the app's columns in HANDLERS_TABLES (queue.columns)"
    )
    hsettings(tables={"queue": {"table": "app.orders_order_id_seq"}})
    ran = await run_job("process_orders")
    assert ran.error is not None and ran.error.endswith("app.orders_order_id_seq is not a table")


async def test_without_the_reference_table_the_error_says_how_to_get_one(
    db: store.Store, call: Call
) -> None:
    await db.pool.execute("DROP TABLE notifications")
    with pytest.raises(errors.PermanentJobError) as missing:
        await call("cleanup", {"targets": ["notifications"]})
    assert str(missing.value) == (
        "table 'notifications' does not exist in this database; apply the reference set "
        "(python -m worker migrate --reference), or name the app's own table in HANDLERS_TABLES"
    )
    # A target whose table is there still runs.
    assert (await call("cleanup", {"targets": ["orders"]})).rows_affected == 0


async def test_names_are_resolved_once_per_settings(
    db: store.Store, call: Call, hsettings: Any
) -> None:
    await call("cleanup", {"targets": ["orders"]})
    await db.pool.execute("ALTER TABLE queue RENAME COLUMN processed_at TO done_at")
    with pytest.raises(asyncpg.UndefinedColumnError, match=r"column o\.processed_at does not"):
        await call("cleanup", {"targets": ["orders"]})  # the cached statement
    hsettings(tables={"queue": {"columns": {"processed_at": "done_at"}}})  # new settings
    assert (await call("cleanup", {"targets": ["orders"]})).rows_affected == 0
