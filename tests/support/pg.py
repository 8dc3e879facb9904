"""Test databases: one server per session, a migrated template, a fresh copy per test."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from worker import embedded, migrations, store


def server_dsn() -> str:
    """TEST_DATABASE_URL (an admin DSN), else an embedded server in a fresh temp dir.

    The temp dir comes from tempfile.mkdtemp, not pytest's tmp_path: pytest resets its
    base dir to 0700 at each session, which locks the embedded server's user out when
    tests run as root.
    """
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    base = Path(tempfile.mkdtemp(prefix="worker-test-pg-"))
    return embedded.start(base, cleanup_mode="delete")


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database(admin_dsn: str, name: str, template: str | None = None) -> str:
    conn = await asyncpg.connect(admin_dsn)
    try:
        clause = f" TEMPLATE {template}" if template else ""
        await conn.execute(f"CREATE DATABASE {name}{clause}")
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def migrated_template(admin_dsn: str) -> str:
    name = f"worker_tmpl_{uuid.uuid4().hex[:10]}"
    dsn = await create_database(admin_dsn, name)
    db = await store.connect(dsn)
    try:
        await migrations.migrate(db)
    finally:
        await db.close()
    return name


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"
