"""A Supabase-shaped database for tests, and requests made the way PostgREST makes them.

The cluster comes from .ci/setup-supabase (PostgreSQL 15 on 127.0.0.1:5434, bootstrap
superuser supabase_admin, Supabase's roles, a template database with the auth schema, the
default privileges in public and a stand-in vault); SUPABASE_TEST_URL (an admin DSN)
points elsewhere. Each test gets a fresh copy of the template, owned by `postgres` as a
project's database is, and migrates it as `postgres`: on Supabase that role is not a
superuser, and every table, sequence and function it creates in public is granted to anon,
authenticated and service_role unless a migration revokes it.

Without the cluster, tests skip with a message saying how to get it; under CI=true they
fail instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.support import pg, roles
from worker import migrations, store

URL = os.environ.get("SUPABASE_TEST_URL", "postgresql://supabase_admin@127.0.0.1:5434/postgres")
TEMPLATE = "supabase_template"
"""The database .ci/setup-supabase prepares once; tests copy it and never connect to it."""

ApiRole = Literal["anon", "authenticated", "service_role"]
API_ROLES: tuple[ApiRole, ...] = ("anon", "authenticated", "service_role")

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")

# What PostgREST puts in search_path on Supabase: the exposed schema, then the extra ones.
POSTGREST_SEARCH_PATH = "public, extensions"


def _where() -> str:
    parts = urlsplit(URL)  # no user or password in messages
    return f"{parts.hostname}:{parts.port}{parts.path}"


def unavailable(reason: str) -> NoReturn:
    message = (
        f"no Supabase-shaped test cluster at SUPABASE_TEST_URL ({_where()}): {reason}. "
        "Run `sudo .ci/setup-supabase` (Debian) or point SUPABASE_TEST_URL at the admin "
        f"(superuser) DSN of a cluster it set up, with its template database {TEMPLATE}."
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


async def require_cluster() -> None:
    """Skip (or, under CI, fail) unless the cluster answers and looks as the script left it."""
    try:
        conn = await asyncpg.connect(URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(str(exc) or type(exc).__name__)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS admin,"
            " (SELECT NOT rolsuper FROM pg_roles WHERE rolname = 'postgres') AS demoted,"
            " EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS template",
            TEMPLATE,
        )
    finally:
        await conn.close()
    assert row is not None
    if not row["admin"]:
        unavailable("SUPABASE_TEST_URL must log in as a superuser (supabase_admin)")
    if not row["demoted"]:
        unavailable("its `postgres` role is missing or a superuser")
    if not row["template"]:
        unavailable(f"its template database {TEMPLATE} is missing")


@dataclass(frozen=True, slots=True)
class Database:
    """One test database in the Supabase-shaped cluster, and who may log in to it."""

    name: str
    admin_dsn: str
    """supabase_admin, the superuser: for what the platform does, never for the app."""
    postgres_dsn: str
    """postgres, the project owner's role: migrations and the SQL editor."""
    authenticator_dsn: str
    """authenticator, the role PostgREST logs in as before switching to the JWT's role."""


async def create_database(*, template: str | None = TEMPLATE) -> Database:
    """A fresh database owned by postgres: a copy of the Supabase template, or (template
    None) an empty one with the cluster's roles but none of Supabase's per-database setup."""
    name = pg.unique_name("sb")
    conn = await asyncpg.connect(URL)
    try:
        source = f" TEMPLATE {template}" if template else " TEMPLATE template0"
        await conn.execute(f"CREATE DATABASE {name}{source} OWNER postgres")
    finally:
        await conn.close()
    admin_dsn = pg.with_database(URL, name)
    return Database(
        name=name,
        admin_dsn=admin_dsn,
        postgres_dsn=roles.as_user(admin_dsn, "postgres"),
        authenticator_dsn=roles.as_user(admin_dsn, "authenticator"),
    )


async def drop_database(database: Database) -> None:
    await pg.drop_database(URL, database.name)


@contextlib.asynccontextmanager
async def fresh_database(*, template: str | None = TEMPLATE) -> AsyncIterator[Database]:
    await require_cluster()
    database = await create_database(template=template)
    try:
        yield database
    finally:
        await drop_database(database)


async def migrate(database: Database, migration_set: str = "reference") -> list[store.Migration]:
    """Apply a migration set (the reference set: core first) while connected as postgres."""
    db = await store.connect(database.postgres_dsn)
    try:
        return await migrations.migrate(db, migration_set)
    finally:
        await db.close()


def claims(role: ApiRole, *, sub: uuid.UUID | None = None, **extra: Any) -> dict[str, Any]:
    """The claims of a JWT Supabase would issue: the project's anon or service_role key
    (no subject), or a signed-in user's access token (role authenticated, a subject)."""
    body: dict[str, Any] = {"iss": "supabase", "role": role, "exp": 4102444800}
    if role == "authenticated":
        user = sub or uuid.uuid4()
        body.update(sub=str(user), aud="authenticated", email=f"{user.hex[:8]}@example.test")
    elif sub is not None:
        body["sub"] = str(sub)
    body.update(extra)
    return body


class _RolledBack(Exception):
    pass


class PostgREST:
    """Requests the way PostgREST makes them: logged in as authenticator, each request is one
    transaction that first switches to the JWT's role and publishes the JWT's claims, both
    transaction-local (`set_config(..., true)` is SET LOCAL; PostgREST sends these very
    calls), so auth.uid() and auth.jwt() see them and nothing outlives the request."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, database: Database) -> AsyncIterator[PostgREST]:
        conn = await asyncpg.connect(database.authenticator_dsn)
        await store.init_connection(conn)
        try:
            yield cls(conn)
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def request(
        self, role: ApiRole, jwt: Mapping[str, Any] | None = None, *, commit: bool = False
    ) -> AsyncIterator[asyncpg.Connection]:
        """A transaction as `role` with `jwt`'s claims (default: `claims(role)`); rolled
        back unless `commit`. Errors (42501 for a refusal) propagate."""
        if role not in API_ROLES:
            raise ValueError(f"not an API role: {role!r}")
        body = dict(jwt) if jwt is not None else claims(role)
        try:
            async with self.conn.transaction():
                await self.conn.execute(
                    "SELECT set_config('search_path', $1, true), set_config('role', $2, true),"
                    " set_config('request.jwt.claims', $3, true)",
                    POSTGREST_SEARCH_PATH,
                    role,
                    json.dumps(body),
                )
                yield self.conn
                if not commit:
                    raise _RolledBack
        except _RolledBack:
            pass

    async def fetch(
        self,
        role: ApiRole,
        sql: str,
        *args: Any,
        jwt: Mapping[str, Any] | None = None,
        commit: bool = False,
    ) -> list[asyncpg.Record]:
        """One statement as one request."""
        async with self.request(role, jwt, commit=commit) as conn:
            return list(await conn.fetch(sql, *args))

    async def rpc(
        self,
        role: ApiRole,
        function: str,
        /,
        *,
        jwt: Mapping[str, Any] | None = None,
        commit: bool = False,
        **args: Any,
    ) -> list[asyncpg.Record]:
        """`supabase.rpc(function, args)`: the function in public called with named
        arguments, as PostgREST calls it (`SELECT * FROM public.f(a => $1, ...)`)."""
        for name in (function, *args):
            if not _IDENTIFIER.fullmatch(name):
                raise ValueError(f"not a plain identifier: {name!r}")
        named = ", ".join(f"{name} => ${i}" for i, name in enumerate(args, start=1))
        return await self.fetch(
            role,
            f"SELECT * FROM public.{function}({named})",
            *args.values(),
            jwt=jwt,
            commit=commit,
        )

    async def execute(self, role: ApiRole, sql: str, *, commit: bool = False) -> str:
        """One statement as one request, through the simple query protocol (no result types
        to resolve: `SELECT f()` works even when f returns a pseudo-type such as trigger)."""
        async with self.request(role, commit=commit) as conn:
            return str(await conn.execute(sql))

    async def refused(self, role: ApiRole, sql: str) -> bool:
        """Whether `role` is refused `sql` for lack of a privilege (42501; for an INSERT, a
        row level security refusal is 42501 too). Any other outcome, success or another
        error, means the privilege check passed. Rolled back."""
        try:
            await self.execute(role, sql)
        except asyncpg.InsufficientPrivilegeError:
            return True
        except asyncpg.PostgresError:
            return False
        return False
