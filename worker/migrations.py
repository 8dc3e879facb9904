"""Find the numbered migrations in schema/ and bring a database up to date."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from worker import errors, store

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def schema_dir() -> Path:
    """schema/ beside the package in a checkout; worker/schema inside an installed wheel."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "schema", package.parent / "schema"):
        if candidate.is_dir():
            return candidate
    raise errors.MigrationError(f"no schema directory found near {package}")


def discover(directory: Path | None = None) -> list[store.Migration]:
    """Every NNNN_name.sql file, in version order; a gap or duplicate version is an error."""
    directory = directory or schema_dir()
    found: list[store.Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise errors.MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        sql = path.read_text(encoding="utf-8")
        checksum = hashlib.sha256(sql.encode()).hexdigest()
        found.append(store.Migration(int(match.group(1)), match.group(2), sql, checksum))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise errors.MigrationError(f"migration versions must run 1..N without gaps: {versions}")
    return found


async def migrate(db: store.Store, directory: Path | None = None) -> list[store.Migration]:
    """Apply pending migrations; returns those applied (empty when already up to date)."""
    return await db.apply_migrations(discover(directory))


async def pending(db: store.Store, directory: Path | None = None) -> list[store.Migration]:
    applied = await db.applied_migrations()
    return [m for m in discover(directory) if m.version not in applied]
