"""Real database roles for the access-control tests.

Roles belong to the whole cluster, and other tests (and other pytest processes) may create
the same ones at the same moment: creation is idempotent, serialised by an advisory lock
taken in the server's maintenance database (advisory locks are per database), and still
tolerant of a concurrent CREATE ROLE from code that does not take that lock.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

# Supabase's API roles with their attributes there (NOINHERIT; service_role bypasses RLS).
SUPABASE_ROLES = {
    "anon": "NOLOGIN NOINHERIT",
    "authenticated": "NOLOGIN NOINHERIT",
    "service_role": "NOLOGIN NOINHERIT BYPASSRLS",
}
WORKER_ROLE = "job_worker"
"""The worker's group role (README.md, "Access control"); deployments log in as a member."""


async def ensure_roles(admin_dsn: str) -> None:
    """anon, authenticated, service_role and job_worker exist, with Supabase's attributes."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('tests.roles', 0))")
            for role, attributes in {**SUPABASE_ROLES, WORKER_ROLE: "NOLOGIN"}.items():
                await _ensure_role(conn, role, attributes)
    finally:
        await conn.close()


async def _ensure_role(conn: asyncpg.Connection, role: str, attributes: str) -> None:
    row = await conn.fetchrow("SELECT rolbypassrls FROM pg_roles WHERE rolname = $1", role)
    if row is None:
        try:
            async with conn.transaction():  # a savepoint: a concurrent creator may win
                await conn.execute(f'CREATE ROLE "{role}" {attributes}')
        except (asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
            pass
        row = await conn.fetchrow("SELECT rolbypassrls FROM pg_roles WHERE rolname = $1", role)
    # Another test may have created service_role as a plain role; Supabase's bypasses RLS.
    if row is not None and "BYPASSRLS" in attributes and not row["rolbypassrls"]:
        await conn.execute(f'ALTER ROLE "{role}" BYPASSRLS')


async def create_login(
    admin_dsn: str, prefix: str, *, member_of: str | None = None, password: str | None = None
) -> str:
    """A new login role with a unique name (optionally a member of a group role)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        clause = f' IN ROLE "{member_of}"' if member_of else ""
        await conn.execute(f'CREATE ROLE "{name}" LOGIN{clause}')
        if password is not None:
            await conn.execute(f"ALTER ROLE \"{name}\" PASSWORD '{password}'")
    finally:
        await conn.close()
    return name


async def create_group(admin_dsn: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE ROLE "{name}" NOLOGIN')
    finally:
        await conn.close()
    return name


async def drop_role(admin_dsn: str, database_dsn: str | None, name: str) -> None:
    """Drop a test role, first dropping what it owns or was granted in `database_dsn`."""
    if database_dsn is not None:
        conn = await asyncpg.connect(database_dsn)
        try:
            await conn.execute(f'DROP OWNED BY "{name}"')
        finally:
            await conn.close()
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await conn.close()


def as_user(dsn: str, user: str, password: str | None = None) -> str:
    """`dsn` with another user (and password) in it."""
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = user if password is None else f"{user}:{password}"
    netloc += f"@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
