"""The reference migration set and the handlers' named SQL, against a real PostgreSQL."""

from __future__ import annotations

import re

import pytest

from handlers import sqlnames
from worker import migrations, queries, store
from worker.registry import REGISTRY

QUERIES = queries.load("handlers", "queries.sql")


async def test_every_handler_query_prepares_against_the_reference_schema(db: store.Store) -> None:
    async with db.pool.acquire() as conn:
        for name, sql in QUERIES.items():
            try:
                await conn.prepare(sql)
            except Exception as exc:  # pragma: no cover - the message names the query
                pytest.fail(f"query {name!r} does not prepare: {exc}")


def test_handler_queries_are_not_templates() -> None:
    assert all("{" not in re.sub(r"'[^']*'", "", sql) for sql in QUERIES.values())


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
