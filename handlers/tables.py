"""The apps' own tables: where each reference table is in this database (HANDLERS_TABLES),
resolved by PostgreSQL, and the one function that puts those names into statements.

A statement in handlers/queries.sql names a table an app may map as `{queue}` and its
columns as `{queue.date}`. Before the statement first runs, each table it names is resolved:
`to_regclass` finds the table (the app's name from settings, or the reference name), and
pg_attribute each column (matched exactly, as PostgreSQL stores it). What goes into the text
is PostgreSQL's own output: the regclass as it prints it (schema-qualified when the schema
is not on the search path, quoted where needed) and `quote_ident` of each column. `fill()`
is the only code that puts them in, and it refuses a placeholder it cannot fill. Resolved
names are kept for the process (and the settings in use): after renaming a mapped table or
column, restart the worker. The handlers work on the app's table itself, never a view.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from handlers import settings as handler_settings
from handlers import sqlnames
from worker import errors, queries

Q = queries.load("handlers", "queries.sql")

PLACEHOLDER = re.compile(r"\{([a-z_]+)(?:\.([a-z_]+))?\}")
"""`{table}` or `{table.column}`, by reference names."""

_TABLE_KINDS = {"r": "table", "p": "table", "f": "table", "v": "view", "m": "view"}


@dataclass(frozen=True, slots=True)
class Table:
    """A reference table as it is in this database."""

    key: str
    """The reference name, e.g. `queue`."""
    name: str
    """The regclass as PostgreSQL prints it: safe to put in SQL text."""
    columns: Mapping[str, str]
    """Reference column -> the column as `quote_ident` printed it: safe to put in SQL text."""


def fill(template: str, tables: Mapping[str, Table]) -> str:
    """`template` with each `{table}` and `{table.column}` replaced by the resolved name in
    `tables`; ValueError for a placeholder that `tables` cannot fill."""

    def replace(match: re.Match[str]) -> str:
        key, column = match.group(1), match.group(2)
        table = tables.get(key)
        if table is None:
            raise ValueError(f"no resolved table for {match.group(0)}")
        if column is None:
            return table.name
        quoted = table.columns.get(column)
        if quoted is None:
            raise ValueError(f"table {key} has no column placeholder {match.group(0)}")
        return quoted

    return PLACEHOLDER.sub(replace, template)


def tables_in(template: str) -> list[str]:
    """The reference tables a statement names, in order of first use."""
    return list(dict.fromkeys(match.group(1) for match in PLACEHOLDER.finditer(template)))


_cached_for: handler_settings.HandlerSettings | None = None
_tables: dict[str, Table] = {}
_statements: dict[str, str] = {}


def _settings() -> handler_settings.HandlerSettings:
    """The settings in use; the caches belong to them and start over when they change."""
    global _cached_for  # noqa: PLW0603 - one resolution cache per process
    conf = handler_settings.get()
    if conf is not _cached_for:
        forget()
        _cached_for = conf
    return conf


def forget() -> None:
    """Drop every resolved name (tests; a worker re-resolves on its next statement)."""
    _tables.clear()
    _statements.clear()


async def statement(db: sqlnames.Executor, name: str) -> str:
    """The named statement of handlers/queries.sql, ready to run on this database."""
    _settings()
    text = _statements.get(name)
    if text is None:
        template = Q[name]
        resolved = {key: await table(db, key) for key in tables_in(template)}
        text = _statements[name] = fill(template, resolved)
    return text


async def table(db: sqlnames.Executor, key: str) -> Table:
    """Reference table `key` (a key of REFERENCE_TABLES) as it is in this database;
    PermanentJobError when it or one of its columns is missing."""
    conf = _settings()
    cached = _tables.get(key)
    if cached is not None:
        return cached
    columns = handler_settings.REFERENCE_TABLES[key]
    mapped = conf.tables.get(key)
    name = mapped.table if mapped and mapped.table else key
    wanted = [mapped.columns.get(c, c) if mapped else c for c in columns]
    row = await db.fetchrow(Q["resolve_table"], sqlnames.checked(name), wanted)
    where = f"HANDLERS_TABLES: {key}: table" if mapped else "table"
    if row is None:
        hint = "" if mapped else _ADD_OR_MAP
        raise errors.PermanentJobError(f"{where} {name!r} does not exist in this database{hint}")
    if row["kind"] not in _TABLE_KINDS:
        raise errors.PermanentJobError(f"{where} {row['name']} is not a table")
    missing = [w for w, quoted in zip(wanted, row["columns"], strict=True) if quoted is None]
    if missing:
        raise errors.PermanentJobError(
            f"{where} {row['name']} has no column(s) {', '.join(missing)}; add them, or map "
            f"them to the app's columns in HANDLERS_TABLES ({key}.columns)"
        )
    found = Table(key, row["name"], dict(zip(columns, row["columns"], strict=True)))
    _tables[key] = found
    return found


_ADD_OR_MAP = (
    "; apply the reference set (python -m worker migrate --reference), or name the app's own "
    "table in HANDLERS_TABLES"
)
