"""What an injection could change: the schema, privileges and roles, and the rows."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

import asyncpg

from worker import store

# The worker's own tables, emptied between examples.
JOB_TABLES = ("job_queue", "job_runs", "job_schedules", "job_queue_pauses")

_SCHEMA: dict[str, str] = {
    "relations": """
        SELECT c.relname, c.relkind::text, c.relrowsecurity, coalesce(c.relacl::text, '')
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
           AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
         ORDER BY 1, 2""",
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               coalesce(pg_get_expr(d.adbin, d.adrelid), '')
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY 1, 2""",
    "functions": """
        SELECT p.oid::regprocedure::text, md5(p.prosrc), p.prosecdef,
               coalesce(p.proconfig::text, ''), coalesce(p.proacl::text, '')
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
         ORDER BY 1""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
          FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, tgenabled::text, tgfoid::regproc::text
          FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "policies": """
        SELECT tablename, policyname, cmd, roles::text, coalesce(qual, ''),
               coalesce(with_check, '')
          FROM pg_policies ORDER BY 1, 2""",
    "schemas": "SELECT nspname, coalesce(nspacl::text, '') FROM pg_namespace ORDER BY 1",
    "extensions": "SELECT extname, extversion FROM pg_extension ORDER BY 1",
    # Roles are shared by every database of the server, and other tests create some: only
    # the attributes of the role we connect as, and the roles an injection would create.
    "session_role": """
        SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolbypassrls
          FROM pg_roles WHERE rolname = current_user""",
    "injected_roles": "SELECT rolname FROM pg_roles WHERE rolname ~* 'pwn|evil|hacker'",
    "settings": """
        SELECT name, setting FROM pg_settings
         WHERE name IN ('search_path', 'timezone', 'default_transaction_read_only')""",
}


class Connection(Protocol):
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def execute(self, query: str, *args: Any) -> str: ...


async def schema(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Everything but the rows: tables, columns, functions (source, SECURITY DEFINER,
    search_path, grants), constraints, triggers, policies, schemas, extensions, roles."""
    return {
        name: [tuple(row) for row in await conn.fetch(query)] for name, query in _SCHEMA.items()
    }


async def row_counts(conn: Connection) -> dict[str, int]:
    """Rows of every table in schema public (exact counts: these tables are small)."""
    tables = await conn.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind IN ('r', 'p') ORDER BY 1"
    )
    counts: dict[str, int] = {}
    for (table,) in tables:
        rows = await conn.fetch(f'SELECT count(*) FROM public."{table}"')
        counts[table] = int(rows[0][0])
    return counts


async def clean(conn: Connection) -> None:
    for table in JOB_TABLES:  # DELETE, not TRUNCATE: a few rows, and no file to fsync
        await conn.execute(f"DELETE FROM {table}")


@contextlib.asynccontextmanager
async def rolled_back(db: store.Store) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction that is rolled back at the end: an example's writes
    vanish without a commit (and its fsync) to wait for. Wrap a call expected to fail in
    `async with conn.transaction():` (a savepoint) to keep using the connection after it."""
    async with db.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield conn
        finally:
            await transaction.rollback()
