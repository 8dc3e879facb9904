"""Allow-listed relation and function names, resolved and quoted by PostgreSQL itself.

A name reaches SQL text only this way: it is in a settings allow-list (the caller checks),
it matches SQL_NAME_PATTERN (settings check it, and so does this module), and PostgreSQL
resolves it (`to_regclass`, `to_regprocedure`). What goes into the statement is PostgreSQL's
own output for the resolved object (`::regclass`, `::regprocedure`): quoted where needed
and schema-qualified when the schema is not on the search path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from handlers.settings import SQL_NAME_PATTERN
from worker import queries

Q = queries.load("handlers", "queries.sql")

_NAME = re.compile(SQL_NAME_PATTERN)
INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})
"""Result types whose value is a row count."""

Connection = asyncpg.Connection | PoolConnectionProxy
"""A connection, or one acquired from a pool."""
Executor = asyncpg.Pool | Connection


@dataclass(frozen=True, slots=True)
class MatView:
    name: str
    """As PostgreSQL prints the regclass: safe to put in SQL text."""
    populated: bool
    has_unique_index: bool
    """A unique index on plain columns, without a WHERE clause: CONCURRENTLY is allowed."""


@dataclass(frozen=True, slots=True)
class Function:
    oid: int
    call: str
    """As PostgreSQL prints the regprocedure, e.g. `refresh_metric_views()`: safe to put in
    SQL text, and the call itself (the function takes no arguments)."""
    returns: str
    returns_set: bool


def checked(name: str) -> str:
    """`name`, if it matches SQL_NAME_PATTERN (else ValueError)."""
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a plain (optionally schema-qualified) SQL name")
    return name


async def matview(db: Executor, name: str) -> MatView | None:
    """The materialized view `name`, or None when there is none."""
    row = await db.fetchrow(Q["resolve_matview"], checked(name))
    if row is None:
        return None
    return MatView(row["name"], row["populated"], row["has_unique_index"])


async def function(db: Executor, name: str) -> Function | None:
    """The argument-less function `name` (not a procedure), or None when there is none."""
    row = await db.fetchrow(Q["resolve_function"], checked(name))
    if row is None:
        return None
    return Function(row["oid"], row["call"], row["returns"], row["returns_set"])


async def call(db: Executor, func: Function) -> int:
    """Call the function; its row count: the rows of a set-returning function, the value of
    an integer-returning one, otherwise 0."""
    if func.returns_set:
        count = await db.fetchval(f"SELECT count(*) FROM {func.call}")
        return int(count or 0)
    value = await db.fetchval(f"SELECT {func.call}")
    if func.returns in INTEGER_TYPES and value is not None:
        return int(value)
    return 0


async def refresh(db: Executor, view: MatView) -> tuple[int, bool]:
    """Refresh the view, CONCURRENTLY when its state and unique index allow it;
    returns (rows, concurrently)."""
    concurrently = view.populated and view.has_unique_index
    mode = "CONCURRENTLY " if concurrently else ""
    await db.execute(f"REFRESH MATERIALIZED VIEW {mode}{view.name}")
    rows = await db.fetchval(f"SELECT count(*) FROM {view.name}")
    return int(rows or 0), concurrently
