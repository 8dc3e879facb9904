"""The reference migration set and the handlers' named SQL, against a real PostgreSQL."""

from __future__ import annotations

import re
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from handlers import settings as handler_settings
from handlers import sqlnames, tables
from tests.support import pg
from worker import migrations, queries, store
from worker.registry import REGISTRY

QUERIES = queries.load("handlers", "queries.sql")


async def test_every_handler_query_prepares_against_the_reference_schema(db: store.Store) -> None:
    async with db.pool.acquire() as conn:
        for name in QUERIES:
            try:
                await conn.prepare(await tables.statement(db.pool, name))
            except Exception as exc:  # pragma: no cover - the message names the query
                pytest.fail(f"query {name!r} does not prepare: {exc}")


def _outside_literals(sql: str) -> str:
    return re.sub(r"'[^']*'", "", sql)


def test_placeholders_name_reference_tables_and_columns_only() -> None:
    used: set[tuple[str, str | None]] = set()
    for name, sql in QUERIES.items():
        found = [(m.group(1), m.group(2)) for m in tables.PLACEHOLDER.finditer(sql)]
        for table, column in found:
            assert table in handler_settings.REFERENCE_TABLES, (name, table)
            assert column is None or column in handler_settings.REFERENCE_TABLES[table], (
                name,
                table,
                column,
            )
        used.update(found)
        # Nothing else in braces (no format-string templates), and no placeholder in a literal.
        assert "{" not in tables.PLACEHOLDER.sub("", _outside_literals(sql)), name
        assert not any(tables.PLACEHOLDER.search(lit) for lit in re.findall(r"'[^']*'", sql))
    # Every column the settings let an app map is one the statements use.
    declared = {(t, c) for t, cols in handler_settings.REFERENCE_TABLES.items() for c in cols}
    assert declared == {(t, c) for t, c in used if c is not None}


def test_every_business_task_type_is_registered() -> None:
    expected = {
        "sync_wearables",
        "game_platform_sync",
        "game_platform_totals_sweep",
        "process_orders",
        "refresh_metrics",
        "auto_complete_challenges",
        "send_streak_reminders",
        "cleanup",
        "rollup_usage",
        "snapshot_prices",
        "call_endpoint",
        "call_function",
    }
    assert expected <= set(REGISTRY.names())


async def test_reference_set_is_idempotent_and_separate_from_core(db: store.Store) -> None:
    assert await migrations.migrate(db, "reference") == []
    applied = await db.applied_migrations("reference")
    assert sorted(applied) == [m.version for m in migrations.discover("reference")]
    rls = await db.pool.fetch(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        " AND NOT relrowsecurity AND relname <> 'worker_migrations'"
    )
    assert [r["relname"] for r in rls] == []


async def test_reference_set_applies_on_a_core_only_database(empty_dsn: str) -> None:
    db = await store.connect(empty_dsn)
    try:
        await migrations.migrate(db)
        applied = await migrations.migrate(db, "reference")
        assert [m.name for m in applied][:2] == ["common", "health"]
        assert await sqlnames.matview(db.pool, "challenge_stats") is not None
    finally:
        await db.close()


# -- an existing install moves to the apps' names --------------------------------------------

# Everything a migration could leave different, read from the catalog (public schema).
_CATALOG = {
    "relations": """
        SELECT c.relname, c.relkind::text, c.relrowsecurity, c.reloptions::text,
               c.relacl::text
          FROM pg_class c
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind <> 'i'
         ORDER BY 1""",
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, a.attidentity::text, pg_get_expr(d.adbin, d.adrelid)
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')
           AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
          FROM pg_constraint
         WHERE connamespace = 'public'::regnamespace
         ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
         WHERE schemaname = 'public' ORDER BY 1, 2""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
          FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT p.oid::regprocedure::text, md5(p.prosrc), p.prosecdef, p.proconfig::text,
               p.proacl::text, pg_get_function_result(p.oid)
          FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1""",
    "policies": """
        SELECT tablename, policyname, roles::text, cmd, qual, with_check
          FROM pg_policies WHERE schemaname = 'public' ORDER BY 1, 2""",
}


async def catalog(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {key: [tuple(r) for r in await conn.fetch(sql)] for key, sql in _CATALOG.items()}


A, B = uuid.UUID(int=0xA), uuid.UUID(int=0xB)

# Rows in the reference set as it was before it took the apps' names.
_OLD_ROWS = [
    (
        "INSERT INTO trade_orders (user_id, ticker, order_type, amount_usdp, status, created_at)"
        " VALUES ($1, 'ACME', 'buy', 10, 'completed', '2026-01-02T03:04:05Z')",
        A,
    ),
    (
        "INSERT INTO notifications (user_id, kind, title, dedupe_key)"
        " VALUES ($1, 'streak_reminder', 'Keep going', 'streak_reminder:2026-01-02')",
        A,
    ),
    (
        "INSERT INTO challenges (title, starts_at, ends_at) VALUES"
        " ('walk', '2026-01-01T09:00:00Z', '2026-01-08T00:00:00Z'),"
        " ('swim', '2026-01-01T00:00:00Z', '2026-01-08T17:30:00Z')",
    ),
    (
        "INSERT INTO challenge_members (challenge_id, user_id, completion_pct)"
        " SELECT id, $1, 87.5 FROM challenges WHERE title = 'walk'",
        A,
    ),
    (
        "INSERT INTO usage_events (user_id, quantity, occurred_at)"
        " VALUES ($1, 500, '2026-01-31T10:00:00Z')",
        A,
    ),
    (
        "INSERT INTO usage_events (user_id, event_type, quantity, occurred_at)"
        " VALUES ($1, 'login', 1, '2026-01-31T10:00:00Z')",
        B,
    ),
    (
        "INSERT INTO monthly_usage (user_id, month, event_count, quantity)"
        " VALUES ($1, '2026-01-01', 1, 500)",
        A,
    ),
    (
        "INSERT INTO daily_usage (user_id, day, event_count, quantity)"
        " VALUES ($1, '2026-01-31', 1, 500)",
        A,
    ),
]


async def test_an_upgraded_install_ends_like_a_fresh_one_and_keeps_its_rows(
    server_dsn: str, template_name: str
) -> None:
    names = [pg.unique_name("up"), pg.unique_name("fresh")]
    upgraded_dsn, fresh_dsn = [
        await pg.create_database(server_dsn, name, template=template_name) for name in names
    ]
    try:
        upgraded = await store.connect(upgraded_dsn)
        fresh = await store.connect(fresh_dsn)
        try:
            before = [m for m in migrations.discover("reference") if m.version < 9]
            await upgraded.apply_migrations(before)
            for statement, *args in _OLD_ROWS:
                await upgraded.pool.execute(statement, *args)
            await migrations.migrate(upgraded, "reference")
            await migrations.migrate(fresh, "reference")
            async with upgraded.pool.acquire() as a, fresh.pool.acquire() as b:
                assert await catalog(a) == await catalog(b)
            await _rows_survived(upgraded.pool)
        finally:
            await upgraded.close()
            await fresh.close()
    finally:
        for name in names:
            await pg.drop_database(server_dsn, name)


async def _rows_survived(pool: asyncpg.Pool) -> None:
    order = await pool.fetchrow("SELECT user_id, status, date FROM queue")
    assert (order["user_id"], order["status"], order["date"].isoformat()) == (
        A,
        "completed",
        "2026-01-02T03:04:05+00:00",
    )
    note = await pool.fetchrow("SELECT type, title, dedupe_key FROM notifications")
    assert tuple(note) == ("streak_reminder", "Keep going", "streak_reminder:2026-01-02")
    # A challenge's last day: the day of its last moment (an end at midnight: the day before).
    assert [tuple(r) for r in await pool.fetch(
        "SELECT name, start_date, end_date FROM challenges ORDER BY id"
    )] == [
        ("walk", date(2026, 1, 1), date(2026, 1, 7)),
        ("swim", date(2026, 1, 1), date(2026, 1, 8)),
    ]  # fmt: skip
    stats = await pool.fetch(
        "SELECT c.name, s.user_id, s.completion_rate FROM challenge_member_stats s"
        " JOIN challenge_members m USING (challenge_id, user_id)"
        " JOIN challenges c ON c.id = s.challenge_id"
    )
    assert [tuple(r) for r in stats] == [("walk", A, Decimal("87.50"))]
    events = await pool.fetch(
        'SELECT user_id, event_type, characters_processed, "timestamp" FROM usage_events'
        " ORDER BY user_id"
    )
    assert [tuple(r)[:3] for r in events] == [(A, "TTS_REQUEST", 500), (B, "login", 1)]
    monthly = await pool.fetchrow(
        "SELECT user_id, month_start_date, total_characters_processed FROM monthly_usage"
    )
    assert tuple(monthly) == (A, date(2026, 1, 1), 500)
    daily = await pool.fetchrow("SELECT event_count, characters_processed FROM daily_usage")
    assert tuple(daily) == (1, 500)
