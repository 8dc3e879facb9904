"""docs/sql_privileges.json, which the SQL reference's "executable by" column comes from,
is what the migrations grant today (refresh it with `python docs/gen_reference.py
--privileges DSN` when a migration changes a grant)."""

from __future__ import annotations

from tests.support import roles
from tests.unit.test_docs_reference import gen
from worker import migrations, store


async def test_the_privileges_file_is_what_the_migrations_grant(
    server_dsn: str, empty_dsn: str
) -> None:
    await roles.ensure_roles(server_dsn)
    db = await store.connect(empty_dsn)
    try:
        # A Supabase project's default privileges: every new function in public is granted
        # to the API roles unless a migration revokes it.
        for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
            await db.pool.execute(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON {kind}"
                " TO anon, authenticated, service_role"
            )
        await db.pool.execute("GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role")
        await migrations.migrate(db, "reference")
    finally:
        await db.close()
    privileges = await gen.read_privileges(empty_dsn)
    assert gen.privileges_text(privileges) == gen.PRIVILEGES_FILE.read_text(encoding="utf-8")
