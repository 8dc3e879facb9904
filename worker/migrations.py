"""Find the numbered migrations in schema/ and bring a database up to date."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from worker import errors, store

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


SETS = ("core", "reference")
"""core: the worker's own tables (schema/). reference: the business tables the bundled
handlers act on (schema/reference/), applied only on request, never forced on an app."""


def schema_dir(migration_set: str = "core") -> Path:
    """schema/ beside the package in a checkout; worker/schema inside an installed wheel."""
    if migration_set not in SETS:
        raise errors.MigrationError(f"unknown migration set {migration_set!r}; known: {SETS}")
    package = Path(__file__).resolve().parent
    for candidate in (package / "schema", package.parent / "schema"):
        if candidate.is_dir():
            return candidate if migration_set == "core" else candidate / migration_set
    raise errors.MigrationError(f"no schema directory found near {package}")


def discover(migration_set: str = "core", directory: Path | None = None) -> list[store.Migration]:
    """Every NNNN_name.sql file of a set, in version order; a duplicate version is an error."""
    directory = directory or schema_dir(migration_set)
    found: list[store.Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise errors.MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        sql = path.read_text(encoding="utf-8")
        checksum = hashlib.sha256(sql.encode()).hexdigest()
        found.append(
            store.Migration(migration_set, int(match.group(1)), match.group(2), sql, checksum)
        )
    versions = [m.version for m in found]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        raise errors.MigrationError(f"{directory}: duplicate migration versions {duplicates}")
    return found


async def migrate(db: store.Store, migration_set: str = "core") -> list[store.Migration]:
    """Apply a set's pending migrations; returns those applied (empty when up to date).
    The reference set needs the core set first."""
    if migration_set != "core":
        await db.apply_migrations(discover("core"))
    return await db.apply_migrations(discover(migration_set))


async def pending(db: store.Store, migration_set: str = "core") -> list[store.Migration]:
    applied = await db.applied_migrations(migration_set)
    return [m for m in discover(migration_set) if m.version not in applied]
